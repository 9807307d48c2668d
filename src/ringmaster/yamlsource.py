"""YAML loading that remembers where every value came from, for file:line:column errors.

PyYAML composes a node tree with marks; we construct plain Python data from it and keep a
map from each value's path (("sip", "trusted", 0, "address")) to its position. Duplicate
keys, which PyYAML silently resolves to the last one, are reported as errors.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class ConfigError:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ConfigInvalid(Exception):
    def __init__(self, errors: list[ConfigError]):
        self.errors = sorted(set(errors))
        super().__init__("\n".join(str(e) for e in self.errors))


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


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load(path: str | Path) -> Source:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid([ConfigError(file, 0, 0, f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigInvalid([ConfigError(file, 1, 1, f"not UTF-8 text: {exc}")]) from exc
    return loads(text, file)


def loads(text: str, file: str = "<string>") -> Source:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigInvalid([ConfigError(file, line, col, f"YAML syntax: {exc.problem}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigInvalid([ConfigError(file, 1, 1, f"YAML: {exc}")]) from exc
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
            key = ctor.construct_object(knode, deep=True)
            if not isinstance(key, (str, int)):
                errors.append(ConfigError(src.file, *_pos(knode), "a key must be a string"))
                continue
            key = str(key)
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
    return ctor.construct_object(node, deep=True)


def did_you_mean(word: str, choices: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
