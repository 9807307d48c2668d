"""hangup: end the call (before answer, `code` is the SIP rejection sent, e.g. 486)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ringmaster.flows.actions import HangUp
from ringmaster.flows.nodes.base import Node, NodeOptions, Outcome

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class HangupOptions(NodeOptions):
    code: int = Field(default=200, description="200 = normal clearing; 4xx-6xx before answer")


class HangupNode(Node):
    kind = "hangup"
    Options = HangupOptions

    def falls_through(self) -> bool:
        return False

    def enter(self, run: FlowRun) -> Outcome:
        return Outcome([HangUp(self.options.code, cause="flow_hangup")], then="end")
