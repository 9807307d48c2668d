"""The dial plan: parsed flows and the entry points that pick a flow for a called number.

A flow is a list of steps; each step is `- KIND` or `- KIND: OPTIONS` (or the node's
shorthand value). Parsing keeps YAML positions so every error names file:line:column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ringmaster.flows.nodes import NODE_TYPES, Node, NodeContext
from ringmaster.yamlsource import ConfigError, Source, did_you_mean

if TYPE_CHECKING:
    from ringmaster.config import Config


@dataclass(frozen=True)
class Flow:
    name: str
    steps: tuple[Node, ...]


def _parse_step(raw: Any, path: tuple[Any, ...], src: Source | None, ctx: NodeContext,
                errors: list[ConfigError]) -> Node | None:
    from ringmaster.config import pydantic_errors

    def err(p: tuple[Any, ...], msg: str, key: bool = False) -> None:
        if src is not None:
            errors.append(src.error(p, msg, key=key))
        else:
            errors.append(ConfigError("<flow>", 0, 0, msg))

    opts: Any
    if isinstance(raw, str):
        kind, opts, opts_path = raw, {}, path
    elif isinstance(raw, dict) and len(raw) == 1:
        kind, opts = next(iter(raw.items()))
        opts_path = path + (kind,)
    else:
        err(path, "a step is `- KIND` or `- KIND: OPTIONS` (one key), e.g. `- play: welcome`")
        return None
    cls = NODE_TYPES.get(kind)
    if cls is None:
        err(path + ((kind,) if isinstance(raw, dict) else ()),
            f"unknown step type {kind!r}{did_you_mean(kind, set(NODE_TYPES))}; "
            f"expected one of {', '.join(sorted(NODE_TYPES))}", key=isinstance(raw, dict))
        return None
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        if cls.shorthand is None:
            err(opts_path, f"{kind}: expected a mapping of options")
            return None
        opts = {cls.shorthand: opts}
        shorthand_path: tuple[Any, ...] | None = opts_path
    else:
        shorthand_path = None
    try:
        options = cls.Options.model_validate(opts)
    except ValidationError as exc:
        if src is None:
            err(path, str(exc))
        elif shorthand_path is not None:
            for e in pydantic_errors(src, exc, cls.Options, shorthand_path):
                errors.append(e)
        else:
            errors.extend(pydantic_errors(src, exc, cls.Options, opts_path))
        return None
    ok = True
    for opt_path, file in cls.file_refs(options, ctx):
        if not file.is_file():
            where = shorthand_path if shorthand_path is not None else opts_path + opt_path
            err(where, f"{kind}: prompt file not found: {file}")
            ok = False
    return cls(options, ctx) if ok else None


def check_flows(flows: dict[str, Any], entry_flows: list[tuple[tuple[Any, ...], str]],
                prompts_dir: Path, src: Source | None) -> list[ConfigError]:
    """Every error in the flows and in the references to them (entry_flows: (path, flow name))."""
    errors: list[ConfigError] = []
    _parse_all(flows, entry_flows, prompts_dir, src, errors)
    return errors


def _parse_all(raw_flows: dict[str, Any], entry_flows: list[tuple[tuple[Any, ...], str]],
               prompts_dir: Path, src: Source | None, errors: list[ConfigError]) -> dict[str, Flow]:
    ctx = NodeContext(prompts_dir)
    flows: dict[str, Flow] = {}
    for name, steps in raw_flows.items():
        if not isinstance(steps, list) or not steps:
            errors.append(_at(src, ("flows", name), f"flow {name!r}: expected a non-empty list of steps"))
            continue
        nodes = []
        for i, raw in enumerate(steps):
            node = _parse_step(raw, ("flows", name, i), src, ctx, errors)
            if node is not None:
                nodes.append(node)
        flows[name] = Flow(name, tuple(nodes))
    for path, flow in entry_flows:
        if flow not in raw_flows:
            errors.append(_at(src, path, f"unknown flow {flow!r}{did_you_mean(flow, set(raw_flows))}"))
    return flows


def config_flow_refs(cfg: Config) -> list[tuple[tuple[Any, ...], str]]:
    refs: list[tuple[tuple[Any, ...], str]] = [(("entry_points", i, "flow"), ep.flow)
                                               for i, ep in enumerate(cfg.entry_points)]
    if cfg.unknown_number.flow is not None:
        refs.append((("unknown_number", "flow"), cfg.unknown_number.flow))
    return refs


def _at(src: Source | None, path: tuple[Any, ...], msg: str) -> ConfigError:
    return src.error(path, msg) if src is not None else ConfigError("<config>", 0, 0, msg)


@dataclass(frozen=True)
class Route:
    flow: Flow | None
    reject: int = 0


class DialPlan:
    """Compiled flows plus entry-point matching. Built only from a validated Config."""

    def __init__(self, cfg: Config):
        errors: list[ConfigError] = []
        self.flows = _parse_all(cfg.flows, config_flow_refs(cfg), Path(cfg.paths.prompts), None, errors)
        if errors:
            raise ValueError("; ".join(e.message for e in errors))
        self.cfg = cfg
        self._patterns = [(ep, re.compile(ep.pattern)) for ep in cfg.entry_points if ep.pattern]

    def route(self, number: str) -> Route:
        """Exact numbers win over prefixes (longest first), prefixes over patterns."""
        eps = self.cfg.entry_points
        for ep in eps:
            if ep.number is not None and ep.number == number:
                return Route(self.flows[ep.flow])
        prefixed = sorted((ep for ep in eps if ep.prefix is not None and number.startswith(ep.prefix)),
                          key=lambda ep: -len(ep.prefix or ""))
        if prefixed:
            return Route(self.flows[prefixed[0].flow])
        for ep, rx in self._patterns:
            if rx.fullmatch(number):
                return Route(self.flows[ep.flow])
        un = self.cfg.unknown_number
        if un.flow is not None:
            return Route(self.flows[un.flow])
        return Route(None, un.reject)
