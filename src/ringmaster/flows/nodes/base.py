"""The small interface every IVR node type implements, and jump targets.

A node is parsed once from YAML (`Options`, a strict pydantic model) and then, per call,
`enter()` returns an Outcome (actions to run, and what comes next) and `on_event()` returns
one when an event concerns it (or None to keep waiting). Per-call state lives in the
FlowRun (`run.state(node)`), never in the node, which is shared by every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from ringmaster.flows.actions import Action, FlowEvent
from ringmaster.flows.language import Languages, PromptRef, prompt_ref

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class NodeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(BaseModel):
    """Where to go: a step id in this flow, another flow's start, or a step in another flow.

    YAML: `sales` (a step id), `{goto: sales}`, `{flow: support}`, `{flow: support, goto: x}`,
    or `hangup`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    goto: str | None = None
    flow: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"goto": v}
        return v

    @model_validator(mode="after")
    def _some(self) -> TargetSpec:
        if self.goto is None and self.flow is None:
            raise ValueError("a target needs goto (a step id) and/or flow (a flow name)")
        return self

    def __str__(self) -> str:
        if self.flow and self.goto:
            return f"{self.flow}:{self.goto}"
        return self.flow if self.flow else str(self.goto)


HANGUP_TARGET = "hangup"  # `goto: hangup` ends the call without a hangup step


@dataclass(frozen=True)
class Outcome:
    """actions to run now; then: 'wait' for an event, 'next' step, a jump target, or 'end'."""

    actions: list[Action] = field(default_factory=list)
    then: Literal["wait", "next", "end"] | TargetSpec = "wait"


WAIT = Outcome()
NEXT = Outcome(then="next")


@dataclass(frozen=True)
class NodeContext:
    """What parsing a node may need: where prompts live, in which languages, what exists in
    the plan (schedules, queues, HTTP endpoints, voicemail boxes)."""

    prompts_dir: Path
    schedules: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    endpoints: frozenset[str] = frozenset()
    boxes: frozenset[str] = frozenset()  # voicemail.boxes
    languages: Languages | None = None

    def prompt(self, name: str) -> PromptRef:
        """name's file in each language (ValueError: not a prompt name; see flows.language)."""
        return prompt_ref(name, self.prompts_dir, self.languages)

    def prompts(self, names: list[str]) -> tuple[PromptRef, ...]:
        return tuple(self.prompt(n) for n in names)

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
    # True for nodes that stop and wait for the caller's input (menu, collect): a loop
    # through nodes that never wait would spin forever, so `check` rejects it
    waits_for_input: ClassVar[bool] = False

    def __init__(self, options: Any, ctx: NodeContext, node_id: str = ""):
        self.options = options
        self.id = node_id

    @classmethod
    def file_refs(cls, options: Any, ctx: NodeContext) -> list[tuple[tuple[str | int, ...], PromptRef]]:
        """(option path, prompt) pairs whose file must exist in every language; checked at
        load time with positions. ValueError for a name that is no prompt name."""
        return []

    @classmethod
    def name_refs(cls, options: Any) -> list[tuple[tuple[str | int, ...], str, str]]:
        """(option path, kind, name) of plan objects it needs: ('schedule', 'office'),
        ('queue', 'sales'), ('endpoint', 'crm')."""
        return []

    @classmethod
    def check_options(cls, options: Any, ctx: NodeContext) -> None:
        """Checks that need the plan around the step (its languages, say); ValueError with
        the reason, reported at the step's options."""

    def targets(self) -> list[tuple[tuple[str | int, ...], TargetSpec]]:
        """(option path, target) of every jump this node can make, for checks and graphs."""
        return []

    def falls_through(self) -> bool:
        """Can the walk continue with the next step after this node?"""
        return True

    def enter(self, run: FlowRun) -> Outcome:
        raise NotImplementedError

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        return None

    def describe(self) -> str:
        """One line for `simulate` and `graph`."""
        return self.kind
