"""YAML loading that remembers where every value came from, for file:line:column errors.

PyYAML composes a node tree with marks; we construct plain Python data from it and keep a
map from each value's path (("sip", "trusted", 0, "address")) to its position. Duplicate
keys, which PyYAML silently resolves to the last one, are reported as errors.

A config file is input like any other (an admin's typo, a file written by a tool, a hostile
one): before anything is composed, one pass over the parser's event stream (libyaml, no
recursion) enforces the limits below, so no file can recurse, expand or run for long. This is
the "billion laughs" defence of libexpat/defusedxml and of Kubernetes' YAML decoder (which
refuses alias expansion beyond a ratio of the document), applied to YAML's anchors and aliases.
Only YAML's core tags are allowed: no `!!python/...`, no application tags.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]

# Limits. A plan for 500 agents, 100 queues and 200 ten-step flows is about 20 000 values and
# 150 kB; 2000 agents sharing anchors still load. A file at these limits is checked (and
# refused) in about 1 s here on an idle core, 1.5 s with the machine's two cores busy: within
# the 2 s that `check` and `reload` promise (the values, not the bytes, are what cost time).
MAX_BYTES = 300_000
MAX_DEPTH = 50  # nesting of mappings and sequences, aliases expanded
MAX_NODES = 30_000  # values once every alias is expanded (a bomb multiplies them)
MAX_ALIASES = 10_000
MAX_NUMBER_CHARS = 40  # int("9" * 5000) is refused by Python anyway; no setting needs 40 digits
MAX_ERRORS = 200  # more than this are summarised in one line: the terminal must not drown
_CORE = "tag:yaml.org,2002:"
# YAML 1.1 core schema tags as SafeLoader resolves them; timestamps are plain dates in holidays
SAFE_TAGS = {None, "!", *(_CORE + t for t in ("str", "int", "float", "bool", "null", "seq", "map",
                                               "timestamp", "merge"))}
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: 20x faster


@dataclass(frozen=True, order=True)
class ConfigError:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ConfigInvalid(Exception):
    """Every error found in a config, sorted, each `FILE:LINE:COL: message` on one line."""

    def __init__(self, errors: list[ConfigError]):
        clean = sorted({_one_line(e) for e in errors})
        if len(clean) > MAX_ERRORS:
            rest = clean[MAX_ERRORS]
            clean = clean[:MAX_ERRORS] + [ConfigError(rest.file, rest.line, rest.column,
                                                      f"... and {len(clean) - MAX_ERRORS} more errors")]
        self.errors = clean
        super().__init__("\n".join(str(e) for e in self.errors))


def _one_line(e: ConfigError) -> ConfigError:
    """A message is one line of bounded length (a hostile value may hold newlines or megabytes)."""
    msg = " ".join(e.message.split())
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return ConfigError(e.file, max(e.line, 1), max(e.column, 1), msg)


@dataclass
class Source:
    """Parsed YAML plus the position of every mapping key and value."""

    file: str
    data: Any
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: PathKey, key: bool = False) -> tuple[int, int]:
        """Position of the longest known prefix of path (1-based line and column)."""
        table = self.keys if key else self.values
        for n in range(len(path), -1, -1):
            pos = table.get(path[:n]) if n else None
            if pos is None and n:
                pos = self.values.get(path[:n])
            if pos is not None:
                return pos
        return (1, 1)

    def error(self, path: PathKey, message: str, key: bool = False) -> ConfigError:
        line, col = self.where(path, key)
        return ConfigError(self.file, line, col, message)


def _pos(node: yaml.Node | yaml.Event) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def load(path: str | Path) -> Source:
    file = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigInvalid([ConfigError(file, 1, 1, f"cannot read: {exc.strerror}")]) from exc
    if len(raw) > MAX_BYTES:
        raise ConfigInvalid([ConfigError(file, 1, 1, f"the file is larger than {MAX_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigInvalid([ConfigError(file, line, col, f"not UTF-8 text: {exc.reason}")]) from None
    return loads(text, file)


def loads(text: str, file: str = "<string>") -> Source:
    """Parse YAML text within the limits above; ConfigInvalid (never another error) if not."""
    if len(text) > MAX_BYTES:
        raise ConfigInvalid([ConfigError(file, 1, 1, f"the text is larger than {MAX_BYTES} characters")])
    try:
        _check_events(text, file)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigInvalid([ConfigError(file, line, col, f"YAML syntax: {exc.problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: position is a character index
        line, col = _line_col(text, exc.position)
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise ConfigInvalid([ConfigError(file, line, col, f"YAML: {exc.reason} ({char!r})")]) from None
    except yaml.YAMLError as exc:
        raise ConfigInvalid([ConfigError(file, 1, 1, f"YAML: {exc}")]) from None
    src = Source(file, None)
    if node is None:
        src.data = {}
        return src
    errors: list[ConfigError] = []
    constructor = yaml.SafeLoader("")
    src.data = _build(node, (), src, constructor, errors)
    if errors:
        raise ConfigInvalid(errors)
    return src


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _check_events(text: str, file: str) -> None:
    """Walk the event stream once and refuse what could recurse, expand or run away.

    Per anchor we keep its node count and height once expanded; an alias adds those to its
    parents, so a bomb is caught by arithmetic, before anything is built. An alias to an anchor
    whose node is still open refers to itself (PyYAML would build a cycle).
    """
    depth = 0
    nodes = 0
    aliases = 0
    # open collections: [anchor, expanded node count, expanded height of children]
    stack: list[list[Any]] = []
    done: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) once its node is closed

    def refuse(ev: yaml.Event, message: str) -> None:
        raise ConfigInvalid([ConfigError(file, *_pos(ev), message)])

    def add(ev: yaml.Event, count: int, height: int, new: bool = True) -> None:
        nonlocal nodes
        nodes += count if new else 0  # a closed collection's values were counted as they came
        if nodes > MAX_NODES:
            refuse(ev, f"more than {MAX_NODES} values once aliases are expanded (an alias bomb, or a file too big)")
        if depth + height > MAX_DEPTH:
            refuse(ev, f"nested deeper than {MAX_DEPTH} levels (aliases expanded)")
        if stack:
            stack[-1][1] += count
            stack[-1][2] = max(stack[-1][2], height)

    for ev in yaml.parse(text, Loader=_Loader):
        if isinstance(ev, yaml.NodeEvent) and not isinstance(ev, yaml.AliasEvent):
            tag = getattr(ev, "tag", None)
            if tag is not None and tag not in SAFE_TAGS:
                shown = "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
                refuse(ev, f"tag {shown} is not allowed: only plain YAML values (safe loading)")
        if isinstance(ev, yaml.AliasEvent):
            anchor = str(ev.anchor)
            aliases += 1
            if aliases > MAX_ALIASES:
                refuse(ev, f"more than {MAX_ALIASES} aliases")
            if any(s[0] == anchor for s in stack):
                refuse(ev, f"alias *{anchor} refers to its own anchor (a recursive structure)")
            if anchor not in done:
                refuse(ev, f"alias *{anchor} has no anchor &{anchor} before it")
            add(ev, *done[anchor])
        elif isinstance(ev, yaml.ScalarEvent):
            add(ev, 1, 0)
            if ev.anchor is not None:
                done[ev.anchor] = (1, 0)
        elif isinstance(ev, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                refuse(ev, f"nested deeper than {MAX_DEPTH} levels")
            nodes += 1
            stack.append([ev.anchor, 1, 0])
        elif isinstance(ev, yaml.CollectionEndEvent):
            anchor, count, height = stack.pop()
            depth -= 1
            add(ev, count, height + 1, new=False)
            if anchor is not None:
                done[anchor] = (count, height + 1)


def _scalar(node: yaml.ScalarNode, ctor: yaml.SafeLoader) -> Any:
    """Construct one scalar; ValueError with the reason if it is not a sane value."""
    if node.tag in (_CORE + "int", _CORE + "float") and len(node.value) > MAX_NUMBER_CHARS:
        raise ValueError(f"number of {len(node.value)} characters is too large (limit {MAX_NUMBER_CHARS})")
    try:
        value = ctor.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"not a valid {node.tag.removeprefix(_CORE)}: {problem}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"number {node.value!r} is not finite")
    return value


def _build(node: yaml.Node, path: PathKey, src: Source, ctor: yaml.SafeLoader,
           errors: list[ConfigError]) -> Any:
    src.values[path] = _pos(node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                errors.append(ConfigError(src.file, *_pos(knode),
                                          "YAML merge keys (<<) are not supported here"))
                continue
            if not isinstance(knode, yaml.ScalarNode):
                errors.append(ConfigError(src.file, *_pos(knode), "a key must be a string"))
                continue
            try:
                key = _scalar(knode, ctor)
            except ValueError as exc:
                errors.append(ConfigError(src.file, *_pos(knode), str(exc)))
                continue
            if not isinstance(key, (str, int)):
                errors.append(ConfigError(src.file, *_pos(knode), "a key must be a string"))
                continue
            # YAML 1.1 reads the keys on/off/yes/no as booleans: `branch: {on: tier}` meant "on"
            key = knode.value if isinstance(key, bool) else str(key)
            if key in out:
                first = src.keys[path + (key,)]
                errors.append(ConfigError(src.file, *_pos(knode),
                                          f"duplicate key {key!r} (first at line {first[0]})"))
                continue
            src.keys[path + (key,)] = _pos(knode)
            out[key] = _build(vnode, path + (key,), src, ctor, errors)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), src, ctor, errors) for i, v in enumerate(node.value)]
    try:
        return _scalar(node, ctor)  # type: ignore[arg-type]
    except ValueError as exc:
        errors.append(ConfigError(src.file, *_pos(node), str(exc)))
        return None


def did_you_mean(word: str, choices: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
