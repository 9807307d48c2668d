"""play: one or more prompts, in order. `- play: welcome` or `- play: {prompts: [a, b]}`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ringmaster.flows.actions import Action, FlowEvent, PlayPrompts, PromptsDone
from ringmaster.flows.nodes.base import Node, NodeContext, NodeOptions


class PlayOptions(NodeOptions):
    prompts: list[str] = Field(min_length=1, description="prompt names (in the prompts dir) or paths to 8 kHz WAV files")
    barge_in: bool = Field(default=False, description="a digit stops the prompt")

    @field_validator("prompts", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class PlayNode(Node):
    kind = "play"
    Options = PlayOptions
    shorthand = "prompts"

    def __init__(self, options: PlayOptions, ctx: NodeContext):
        super().__init__(options, ctx)
        self.files = tuple(str(ctx.prompt_path(p)) for p in options.prompts)

    @classmethod
    def file_refs(cls, options: Any, ctx: NodeContext) -> list[tuple[tuple[str | int, ...], Path]]:
        return [(("prompts", i), ctx.prompt_path(p)) for i, p in enumerate(options.prompts)]

    def enter(self, state: dict[str, Any]) -> list[Action]:
        return [PlayPrompts(self.files, barge_in=self.options.barge_in)]

    def on_event(self, state: dict[str, Any], event: FlowEvent) -> tuple[bool, list[Action]]:
        return isinstance(event, PromptsDone), []
