"""transfer: connect the caller to a target written in the dial plan, optionally recorded.

Only targets the plan lists can be dialled: the URI is part of the YAML, never taken from
caller input, so no caller can make the server dial an arbitrary number (toll fraud).
When the target does not answer, the flow continues with the next step.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ringmaster.flows.actions import Action, Connect, ConnectEnded, FlowEvent
from ringmaster.flows.nodes.base import Node, NodeContext, NodeOptions


class TransferOptions(NodeOptions):
    to: str = Field(description="SIP URI of the target, e.g. sip:reception@192.0.2.20")
    record: bool = False
    ring_timeout: float = Field(default=30.0, gt=0, le=300, description="seconds")

    @field_validator("to")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not v.startswith(("sip:", "sips:")) or "@" not in v:
            raise ValueError("expected a SIP URI with a user part, e.g. sip:reception@192.0.2.20")
        return v


class TransferNode(Node):
    kind = "transfer"
    Options = TransferOptions
    shorthand = "to"

    def __init__(self, options: TransferOptions, ctx: NodeContext):
        super().__init__(options, ctx)

    def enter(self, state: dict[str, Any]) -> list[Action]:
        o = self.options
        return [Connect(o.to, record=o.record, ring_timeout=o.ring_timeout)]

    def on_event(self, state: dict[str, Any], event: FlowEvent) -> tuple[bool, list[Action]]:
        if isinstance(event, ConnectEnded):
            state["transfer_result"] = event.result
            # answered and over: the caller is done; not answered: go on with the flow
            return True, []
        return False, []
