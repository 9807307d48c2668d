"""hangup: end the call (before answer, `code` is the SIP rejection sent, e.g. 486)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ringmaster.flows.actions import Action, HangUp
from ringmaster.flows.nodes.base import Node, NodeOptions


class HangupOptions(NodeOptions):
    code: int = Field(default=200, description="200 = normal clearing; 4xx-6xx before answer")


class HangupNode(Node):
    kind = "hangup"
    Options = HangupOptions

    def enter(self, state: dict[str, Any]) -> list[Action]:
        return [HangUp(self.options.code, cause="flow_hangup")]
