"""The dial plan: flows parsed from YAML with positions, checked as a graph, and the entry
points that pick a flow for a called number.

A flow is a list of steps, each `- KIND`, `- KIND: OPTIONS` (or the node's shorthand value),
optionally with an `id:` beside the kind so other steps can jump to it. Every error names
file:line:column; `check` also rejects jumps to unknown steps, steps nothing can reach, and
loops that never stop for the caller's input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ringmaster.flows.language import Languages
from ringmaster.flows.nodes import NODE_TYPES, Node, NodeContext, TargetSpec
from ringmaster.flows.nodes.base import HANGUP_TARGET
from ringmaster.schedules import Schedule
from ringmaster.yamlsource import ConfigError, Source, did_you_mean

if TYPE_CHECKING:
    from ringmaster.config import Config

PathT = tuple[Any, ...]
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass
class Flow:
    name: str
    nodes: list[Node] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    paths: list[PathT] = field(default_factory=list)  # YAML path of each step
    kinds_at: list[str] = field(default_factory=list)


@dataclass
class _Checker:
    src: Source | None
    errors: list[ConfigError] = field(default_factory=list)

    def err(self, path: PathT, msg: str, key: bool = False) -> None:
        if self.src is not None:
            self.errors.append(self.src.error(path, msg, key=key))
        else:
            self.errors.append(ConfigError("<plan>", 0, 0, msg))


def _parse_step(raw: Any, index: int, path: PathT, ctx: NodeContext, chk: _Checker) -> tuple[Node | None, str]:
    from ringmaster.config import pydantic_errors

    node_id = ""
    opts: Any
    if isinstance(raw, str):
        kind, opts, opts_path = raw, {}, path
    elif isinstance(raw, dict):
        rest = {k: v for k, v in raw.items() if k != "id"}
        if "id" in raw:
            node_id = str(raw["id"])
            if not _ID.match(node_id):
                chk.err(path + ("id",), f"step id {node_id!r}: letters, digits, _ . - (not starting with a digit)")
        if len(rest) != 1:
            chk.err(path, "a step is `- KIND` or `- KIND: OPTIONS` (one kind, plus an optional id), "
                          "e.g. `- play: welcome`")
            return None, node_id
        kind, opts = next(iter(rest.items()))
        opts_path = path + (kind,)
    else:
        chk.err(path, "a step is `- KIND` or `- KIND: OPTIONS`, e.g. `- play: welcome`")
        return None, node_id
    cls = NODE_TYPES.get(kind)
    if cls is None:
        chk.err(path + ((kind,) if isinstance(raw, dict) else ()),
                f"unknown step type {kind!r}{did_you_mean(kind, set(NODE_TYPES))}; "
                f"expected one of {', '.join(sorted(NODE_TYPES))}", key=isinstance(raw, dict))
        return None, node_id
    if opts is None:
        opts = {}
    shorthand = not isinstance(opts, dict)
    if shorthand:
        if cls.shorthand is None:
            chk.err(opts_path, f"{kind}: expected a mapping of options")
            return None, node_id
        opts = {cls.shorthand: opts}
    model: type[BaseModel] = cls.Options
    try:
        options = model.model_validate(opts)
    except ValidationError as exc:
        if chk.src is None:
            chk.err(path, str(exc))
        else:
            for e in pydantic_errors(chk.src, exc, model, opts_path if not shorthand else ()):
                chk.errors.append(e if not shorthand else chk.src.error(opts_path, f"{kind}: {e.message}"))
        return None, node_id
    ok = True
    try:
        refs = cls.file_refs(options, ctx)
    except ValueError as exc:  # '' is no file name (pathlib: "has an empty name"), ${account}/x
        chk.err(opts_path, f"{kind}: not a prompt file name: {exc}")
        return None, node_id
    for opt_path, prompt in refs:
        where = opts_path if shorthand else opts_path + opt_path
        for lang, file in prompt.files:
            try:
                found = file.is_file()
            except OSError as exc:  # a name longer than NAME_MAX, say
                chk.err(where, f"{kind}: not a prompt file: {exc.strerror}")
                ok = False
                break
            if not found:
                in_lang = f" for language {lang!r}" if lang else ""
                chk.err(where, f"{kind}: prompt {prompt.name!r}{in_lang}: file not found: {file}"
                        if lang else f"{kind}: prompt file not found: {file}")
                ok = False
    try:
        cls.check_options(options, ctx)
    except ValueError as exc:
        chk.err(opts_path, f"{kind}: {exc}")
        return None, node_id
    for opt_path, what, name in cls.name_refs(options):
        known = {"schedule": ctx.schedules, "queue": ctx.queues, "endpoint": ctx.endpoints, "box": ctx.boxes}[what]
        if name not in known:
            plural = "boxes are defined in voicemail.boxes" if what == "box" else f"{what}s are defined"
            chk.err(opts_path if shorthand else opts_path + opt_path,
                    f"{kind}: unknown {what} {name!r}{did_you_mean(name, set(known))}"
                    f"{'' if known else f' (no {plural})'}")
            ok = False
    if not ok:
        return None, node_id
    return cls(options, ctx, node_id or str(index)), node_id


def parse_flows(raw_flows: dict[str, Any], ctx: NodeContext, src: Source | None,
                chk: _Checker | None = None) -> tuple[dict[str, Flow], list[ConfigError]]:
    chk = chk or _Checker(src)
    flows: dict[str, Flow] = {}
    for name, steps in raw_flows.items():
        base: PathT = ("flows", name)
        if not isinstance(steps, list) or not steps:
            chk.err(base, f"flow {name!r}: expected a non-empty list of steps")
            continue
        flow = Flow(name)
        broken = False
        for i, raw in enumerate(steps):
            node, explicit = _parse_step(raw, i, base + (i,), ctx, chk)
            if explicit:
                if explicit in flow.ids:
                    chk.err(base + (i, "id"), f"duplicate step id {explicit!r} in flow {name!r}")
                flow.ids.setdefault(explicit, i)
            if node is None:
                broken = True
                continue
            flow.nodes.append(node)
            flow.paths.append(base + (i,))
        if not broken:
            flows[name] = flow
    if not chk.errors:
        _check_graph(flows, chk)
    return flows, chk.errors


def _resolve(flows: dict[str, Flow], here: Flow, target: TargetSpec) -> tuple[Flow, int] | None | str:
    """(flow, index), None for `hangup`, or an error message."""
    flow = here
    if target.flow is not None:
        if target.flow not in flows:
            return f"unknown flow {target.flow!r}{did_you_mean(target.flow, set(flows))}"
        flow = flows[target.flow]
        if target.goto is None:
            return flow, 0
    assert target.goto is not None
    if target.goto == HANGUP_TARGET and target.flow is None:
        return None
    if target.goto not in flow.ids:
        return (f"unknown step {target.goto!r} in flow {flow.name!r}"
                f"{did_you_mean(target.goto, set(flow.ids) | {HANGUP_TARGET})}")
    return flow, flow.ids[target.goto]


def _check_graph(flows: dict[str, Flow], chk: _Checker) -> None:
    edges: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for flow in flows.values():
        for i, node in enumerate(flow.nodes):
            out: list[tuple[str, int]] = []
            if node.falls_through() and i + 1 < len(flow.nodes):
                out.append((flow.name, i + 1))
            for opt_path, target in node.targets():
                r = _resolve(flows, flow, target)
                if isinstance(r, str):
                    chk.err(flow.paths[i] + (node.kind,) + opt_path, f"{node.kind}: {r}")
                elif r is not None:
                    out.append((r[0].name, r[1]))
            edges[(flow.name, i)] = out
    if chk.errors:
        return
    # unreachable steps: nothing falls into them or jumps to them from the flow's start
    for flow in flows.values():
        seen: set[tuple[str, int]] = set()
        todo = [(flow.name, 0)]
        while todo:
            n = todo.pop()
            if n in seen or n[0] != flow.name:
                continue
            seen.add(n)
            todo += edges.get(n, [])
        reached_elsewhere = {t for outs in edges.values() for t in outs if t[0] == flow.name}
        for i, node in enumerate(flow.nodes):
            if (flow.name, i) not in seen and (flow.name, i) not in reached_elsewhere:
                chk.err(flow.paths[i], f"step {node.id!r} ({node.kind}) of flow {flow.name!r} can never be reached "
                                       "(it follows a step that never falls through, and no step jumps to it)")
    # loops through steps that never wait for input would spin forever
    waiting = {(f.name, i) for f in flows.values() for i, n in enumerate(f.nodes) if n.waits_for_input}
    color: dict[tuple[str, int], int] = {}

    def visit(n: tuple[str, int], stack: list[tuple[str, int]]) -> list[tuple[str, int]] | None:
        color[n] = 1
        stack.append(n)
        for m in edges.get(n, []):
            if m in waiting:
                continue
            if color.get(m) == 1:
                return stack[stack.index(m):]
            if color.get(m, 0) == 0:
                found = visit(m, stack)
                if found:
                    return found
        stack.pop()
        color[n] = 2
        return None

    for n in edges:
        if n not in waiting and color.get(n, 0) == 0:
            cycle = visit(n, [])
            if cycle:
                flow = flows[cycle[0][0]]
                names = " -> ".join(f"{f}:{flows[f].nodes[i].id}" for f, i in cycle + [cycle[0]])
                chk.err(flow.paths[cycle[0][1]], f"loop that never waits for the caller's input: {names} "
                                                 "(put a menu or collect in it)")
                return


def config_flow_refs(cfg: Config) -> list[tuple[PathT, str]]:
    refs: list[tuple[PathT, str]] = [(("entry_points", i, "flow"), ep.flow) for i, ep in enumerate(cfg.entry_points)]
    if cfg.unknown_number.flow is not None:
        refs.append((("unknown_number", "flow"), cfg.unknown_number.flow))
    return refs


def check_flows(raw_flows: dict[str, Any], refs: list[tuple[PathT, str]], ctx: NodeContext,
                src: Source | None) -> list[ConfigError]:
    """Every error in the flows and in the references to them (refs: (path, flow name))."""
    chk = _Checker(src)
    flows, _ = parse_flows(raw_flows, ctx, src, chk)
    for path, name in refs:
        if name not in raw_flows:
            chk.err(path, f"unknown flow {name!r}{did_you_mean(name, set(raw_flows))}")
    return chk.errors


def languages_of(cfg: Config) -> Languages | None:
    if cfg.languages is None:
        return None
    return Languages(tuple(cfg.languages.supported), cfg.languages.fallback)


def node_context(cfg: Config) -> NodeContext:
    return NodeContext(Path(cfg.paths.prompts), schedules=frozenset(cfg.schedules), queues=frozenset(cfg.queues),
                       endpoints=frozenset(cfg.http_endpoints), languages=languages_of(cfg),
                       boxes=frozenset(cfg.voicemail.boxes))


@dataclass(frozen=True)
class Route:
    """flow: where the call goes (None: rejected with `reject`); variables: what it starts with."""

    flow: Flow | None
    reject: int = 0
    variables: tuple[tuple[str, str], ...] = ()


class DialPlan:
    """Compiled flows, schedules and entry-point matching. Built only from a validated Config."""

    def __init__(self, cfg: Config):
        flows, errors = parse_flows(cfg.flows, node_context(cfg), None)
        if errors:
            raise ValueError("; ".join(e.message for e in errors))
        self.cfg = cfg
        self.flows = flows
        self.languages = languages_of(cfg)
        self.schedules: dict[str, Schedule] = dict(cfg.schedules)
        self._patterns = [(ep, re.compile(ep.pattern)) for ep in cfg.entry_points if ep.pattern]

    def resolve(self, here: Flow, target: TargetSpec) -> tuple[Flow, int] | None:
        r = _resolve(self.flows, here, target)
        if isinstance(r, str):  # checked at load time; a stale target ends the call cleanly
            return None
        return r

    def route(self, number: str) -> Route:
        """Exact numbers win over prefixes (longest first), prefixes over patterns."""
        eps = self.cfg.entry_points
        for ep in eps:
            if ep.number is not None and ep.number == number:
                return Route(self.flows[ep.flow], variables=tuple(ep.variables.items()))
        prefixed = sorted((ep for ep in eps if ep.prefix is not None and number.startswith(ep.prefix)),
                          key=lambda ep: -len(ep.prefix or ""))
        if prefixed:
            return Route(self.flows[prefixed[0].flow], variables=tuple(prefixed[0].variables.items()))
        for ep, rx in self._patterns:
            if rx.fullmatch(number):
                return Route(self.flows[ep.flow], variables=tuple(ep.variables.items()))
        un = self.cfg.unknown_number
        if un.flow is not None:
            return Route(self.flows[un.flow])
        return Route(None, un.reject)
