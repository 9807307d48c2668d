"""play: one or more prompts, in order. `- play: welcome` or `- play: {prompts: [a, b]}`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from ringmaster.flows.actions import FlowEvent, PlayPrompts, PromptsDone
from ringmaster.flows.language import PromptRef
from ringmaster.flows.nodes.base import NEXT, Node, NodeContext, NodeOptions, Outcome

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


def prompt_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


class PlayOptions(NodeOptions):
    prompts: list[str] = Field(min_length=1, description="prompt names (in the prompts dir, per language: "
                               "`welcome` or `${language}/welcome`) or paths to 8 kHz WAV files")
    barge_in: bool = Field(default=False, description="a digit stops the prompt")

    _one = field_validator("prompts", mode="before")(classmethod(lambda cls, v: prompt_list(v)))


class PlayNode(Node):
    kind = "play"
    Options = PlayOptions
    shorthand = "prompts"

    def __init__(self, options: PlayOptions, ctx: NodeContext, node_id: str = ""):
        super().__init__(options, ctx, node_id)
        self.prompts = ctx.prompts(options.prompts)

    @classmethod
    def file_refs(cls, options: Any, ctx: NodeContext) -> list[tuple[tuple[str | int, ...], PromptRef]]:
        return [(("prompts", i), ctx.prompt(p)) for i, p in enumerate(options.prompts)]

    def enter(self, run: FlowRun) -> Outcome:
        return Outcome([PlayPrompts(run.files(self.prompts), barge_in=self.options.barge_in)])

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        return NEXT if isinstance(event, PromptsDone) else None

    def describe(self) -> str:
        return "play " + ", ".join(self.options.prompts)
