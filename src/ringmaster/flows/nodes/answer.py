"""answer: take the call off-hook (a play answers implicitly; this is for silence first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringmaster.flows.actions import AnswerCall, Answered, FlowEvent
from ringmaster.flows.nodes.base import NEXT, Node, NodeOptions, Outcome

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class AnswerOptions(NodeOptions):
    pass


class AnswerNode(Node):
    kind = "answer"
    Options = AnswerOptions

    def enter(self, run: FlowRun) -> Outcome:
        if run.answered:
            return NEXT
        return Outcome([AnswerCall()])

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        return NEXT if isinstance(event, Answered) else None
