"""answer: take the call off-hook (a play answers implicitly; this is for silence first)."""

from __future__ import annotations

from typing import Any

from ringmaster.flows.actions import Action, AnswerCall, Answered, FlowEvent
from ringmaster.flows.nodes.base import Node, NodeOptions


class AnswerOptions(NodeOptions):
    pass


class AnswerNode(Node):
    kind = "answer"
    Options = AnswerOptions

    def enter(self, state: dict[str, Any]) -> list[Action]:
        return [AnswerCall()]

    def on_event(self, state: dict[str, Any], event: FlowEvent) -> tuple[bool, list[Action]]:
        return isinstance(event, Answered), []
