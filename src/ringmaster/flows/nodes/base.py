"""The small interface every IVR node type implements.

A node is parsed once from YAML (`Options`, a strict pydantic model, plus `from_options`
which may check files) and then, per call, `enter()` returns the actions to run and
`on_event()` says what happens next: more actions, or that the node is finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ringmaster.flows.actions import Action, FlowEvent


class NodeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class NodeContext:
    """What parsing a node may need: where prompts live."""

    prompts_dir: Path

    def prompt_path(self, name: str) -> Path:
        p = Path(name)
        if p.suffix == "":
            p = p.with_suffix(".wav")
        return p if p.is_absolute() else self.prompts_dir / p


class Node:
    kind: ClassVar[str]
    Options: ClassVar[type[NodeOptions]]
    # accepts the YAML shorthand `- kind: VALUE` by naming the option VALUE fills
    shorthand: ClassVar[str | None] = None

    def __init__(self, options: Any, ctx: NodeContext):
        self.options = options

    @classmethod
    def file_refs(cls, options: Any, ctx: NodeContext) -> list[tuple[tuple[str | int, ...], Path]]:
        """(option path, file) pairs that must exist; checked at load time with positions."""
        return []

    def enter(self, state: dict[str, Any]) -> list[Action]:
        raise NotImplementedError

    def on_event(self, state: dict[str, Any], event: FlowEvent) -> tuple[bool, list[Action]]:
        """Returns (finished, actions)."""
        return False, []
