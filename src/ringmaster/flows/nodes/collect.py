"""collect: digits into a named variable (account number, PIN, a phone number to call back).

`- collect: {var: account, prompt: enter-account, min: 4, max: 10, terminator: "#"}`.
Too few digits or no input -> `invalid_prompt` and again, up to `max_attempts`; then
`on_failure` (default: the next step, with the variable unset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from ringmaster.flows.actions import CollectDigits, DigitsEntered, FlowEvent, PlayPrompts
from ringmaster.flows.language import PromptRef
from ringmaster.flows.nodes.base import NEXT, Node, NodeContext, NodeOptions, Outcome, TargetSpec
from ringmaster.flows.nodes.play import prompt_list

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class CollectOptions(NodeOptions):
    var: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    prompt: list[str] = Field(default_factory=list)
    min: int = Field(default=1, ge=1, le=64)
    max: int = Field(default=16, ge=1, le=64)
    terminator: str = Field(default="#", max_length=1)
    timeout: float = Field(default=5.0, gt=0, le=60)
    inter_digit_timeout: float = Field(default=3.0, gt=0, le=30)
    max_attempts: int = Field(default=3, ge=1, le=10)
    invalid_prompt: list[str] = Field(default_factory=lambda: ["invalid"])
    on_failure: TargetSpec | None = None

    _lists = field_validator("prompt", "invalid_prompt", mode="before")(classmethod(lambda cls, v: prompt_list(v)))

    @model_validator(mode="after")
    def _range(self) -> CollectOptions:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class CollectNode(Node):
    kind = "collect"
    Options = CollectOptions
    waits_for_input = True

    def __init__(self, options: CollectOptions, ctx: NodeContext, node_id: str = ""):
        super().__init__(options, ctx, node_id)
        self.prompt = ctx.prompts(options.prompt)
        self.invalid = ctx.prompts(options.invalid_prompt)

    @classmethod
    def file_refs(cls, options: Any, ctx: NodeContext) -> list[tuple[tuple[str | int, ...], PromptRef]]:
        return [((key, i), ctx.prompt(n)) for key in ("prompt", "invalid_prompt")
                for i, n in enumerate(getattr(options, key))]

    def targets(self) -> list[tuple[tuple[str | int, ...], TargetSpec]]:
        return [(("on_failure",), self.options.on_failure)] if self.options.on_failure else []

    def _ask(self, run: FlowRun, prompts: tuple[PromptRef, ...]) -> list[Any]:
        o = self.options
        actions: list[Any] = [PlayPrompts(run.files(prompts), barge_in=True)] if prompts else []
        return actions + [CollectDigits(max_digits=o.max, terminators=o.terminator, first_timeout=o.timeout,
                                        inter_digit_timeout=o.inter_digit_timeout, flush=True)]

    def enter(self, run: FlowRun) -> Outcome:
        run.fresh_state(self)["attempts"] = 0
        return Outcome(self._ask(run, self.prompt))

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        if not isinstance(event, DigitsEntered):
            return None
        o = self.options
        if len(event.digits) >= o.min:
            run.variables[o.var] = event.digits
            run.note(f"{o.var}={event.digits}")
            return NEXT
        state = run.state(self)
        state["attempts"] += 1
        run.note(f"too short {event.digits!r} ({state['attempts']}/{o.max_attempts})")
        if state["attempts"] >= o.max_attempts:
            return Outcome(then=o.on_failure or "next")
        return Outcome(self._ask(run, self.invalid + self.prompt))

    def describe(self) -> str:
        return f"collect {self.options.var} ({self.options.min}-{self.options.max} digits)"
