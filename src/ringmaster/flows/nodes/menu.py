"""menu: a greeting, then the caller's choice among options, with FreeSWITCH's IVR semantics.

- `greeting` is played on entry, `short_greeting` (default: the greeting) on every repeat;
- a digit during any prompt stops it and counts (barge-in); stale digits are flushed on entry;
- `timeout` starts when the prompt ends; `inter_digit_timeout` ends a multi-digit choice,
  and so does the `terminator` key; a choice is complete at the longest option's length;
- a choice matching no option is a failure: `invalid_prompt`, then the menu again, until
  `max_failures` -> `on_max_failures`; no input is a timeout: `timeout_prompt`, again, until
  `max_timeouts` -> `on_max_timeouts` (each defaults to the next step, so a plan can say what
  happens after a menu in plain order).
The digits chosen are stored in the variable `var` (default `menu_<id>`), for the call record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from ringmaster.flows.actions import CollectDigits, DigitsEntered, FlowEvent, PlayPrompts
from ringmaster.flows.language import PromptRef
from ringmaster.flows.nodes.base import Node, NodeContext, NodeOptions, Outcome, TargetSpec
from ringmaster.flows.nodes.play import prompt_list

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun

DTMF = set("0123456789*#ABCD")


class MenuOptions(NodeOptions):
    greeting: list[str] = Field(min_length=1)
    short_greeting: list[str] | None = None
    options: dict[str, TargetSpec] = Field(min_length=1, description="digits -> target")
    timeout: float = Field(default=5.0, gt=0, le=60, description="seconds to wait for the first digit")
    inter_digit_timeout: float = Field(default=2.0, gt=0, le=30)
    terminator: str = Field(default="#", max_length=1)
    max_failures: int = Field(default=3, ge=1, le=20)
    max_timeouts: int = Field(default=3, ge=1, le=20)
    invalid_prompt: list[str] = Field(default_factory=lambda: ["invalid"])
    timeout_prompt: list[str] = Field(default_factory=lambda: ["timeout"])
    on_max_failures: TargetSpec | None = None
    on_max_timeouts: TargetSpec | None = None
    var: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    _lists = field_validator("greeting", "short_greeting", "invalid_prompt", "timeout_prompt",
                             mode="before")(classmethod(lambda cls, v: prompt_list(v)))

    @field_validator("options", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): t for k, t in v.items()}  # YAML reads `1:` as an int
        return v

    @model_validator(mode="after")
    def _digits(self) -> MenuOptions:
        for key in self.options:
            bad = set(key) - DTMF
            if bad or not key:
                raise ValueError(f"option {key!r}: options are DTMF digits 0-9 * # A-D")
            if self.terminator and self.terminator in key:
                raise ValueError(f"option {key!r} contains the terminator {self.terminator!r}")
        return self


class MenuNode(Node):
    kind = "menu"
    Options = MenuOptions
    waits_for_input = True

    def __init__(self, options: MenuOptions, ctx: NodeContext, node_id: str = ""):
        super().__init__(options, ctx, node_id)
        o = options
        self.greeting = ctx.prompts(o.greeting)
        self.short = ctx.prompts(o.short_greeting) if o.short_greeting else self.greeting
        self.invalid = ctx.prompts(o.invalid_prompt)
        self.timeout_prompt = ctx.prompts(o.timeout_prompt)
        self.max_len = max(len(k) for k in o.options)

    @classmethod
    def file_refs(cls, options: Any, ctx: NodeContext) -> list[tuple[tuple[str | int, ...], PromptRef]]:
        refs: list[tuple[tuple[str | int, ...], PromptRef]] = []
        for key in ("greeting", "short_greeting", "invalid_prompt", "timeout_prompt"):
            for i, name in enumerate(getattr(options, key) or []):
                refs.append(((key, i), ctx.prompt(name)))
        return refs

    def targets(self) -> list[tuple[tuple[str | int, ...], TargetSpec]]:
        out: list[tuple[tuple[str | int, ...], TargetSpec]] = [(("options", k), t) for k, t in self.options.options.items()]
        for key in ("on_max_failures", "on_max_timeouts"):
            t = getattr(self.options, key)
            if t is not None:
                out.append(((key,), t))
        return out

    def falls_through(self) -> bool:
        return self.options.on_max_failures is None or self.options.on_max_timeouts is None

    def _prompt(self, run: FlowRun, prompts: tuple[PromptRef, ...], flush: bool) -> list[Any]:
        o = self.options
        return [PlayPrompts(run.files(prompts), barge_in=True),
                CollectDigits(max_digits=self.max_len, terminators=o.terminator, first_timeout=o.timeout,
                              inter_digit_timeout=o.inter_digit_timeout, flush=flush)]

    def enter(self, run: FlowRun) -> Outcome:
        state = run.fresh_state(self)
        state.update(failures=0, timeouts=0)
        return Outcome(self._prompt(run, self.greeting, flush=True))

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        if not isinstance(event, DigitsEntered):
            return None
        o = self.options
        state = run.state(self)
        digits = event.digits
        if digits in o.options:
            run.variables[o.var or f"menu_{self.id}"] = digits
            run.note(f"choice {digits}")
            return Outcome(then=o.options[digits])
        if event.reason == "timeout" and not digits:
            state["timeouts"] += 1
            run.note(f"timeout {state['timeouts']}/{o.max_timeouts}")
            if state["timeouts"] >= o.max_timeouts:
                return Outcome(then=o.on_max_timeouts or "next")
            return Outcome(self._prompt(run, self.timeout_prompt + self.short, flush=True))
        state["failures"] += 1
        run.note(f"invalid {digits!r} {state['failures']}/{o.max_failures}")
        if state["failures"] >= o.max_failures:
            return Outcome(then=o.on_max_failures or "next")
        return Outcome(self._prompt(run, self.invalid + self.short, flush=True))

    def describe(self) -> str:
        return "menu " + ", ".join(self.options.greeting)
