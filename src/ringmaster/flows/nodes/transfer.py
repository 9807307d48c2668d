"""transfer: connect the caller to a target written in the dial plan, optionally recorded.

Only targets the plan lists can be dialled: the URI is part of the YAML, never taken from
caller input, so no caller can make the server dial an arbitrary number (toll fraud).
When the target does not answer, the flow continues with the next step (or `on_failure`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from ringmaster.flows.actions import Connect, ConnectEnded, FlowEvent
from ringmaster.flows.nodes.base import NEXT, Node, NodeOptions, Outcome, TargetSpec

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class TransferOptions(NodeOptions):
    to: str = Field(description="SIP URI of the target, e.g. sip:reception@192.0.2.20")
    record: bool = False
    ring_timeout: float = Field(default=30.0, gt=0, le=300, description="seconds")
    on_failure: TargetSpec | None = None

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

    def targets(self) -> list[tuple[tuple[str | int, ...], TargetSpec]]:
        return [(("on_failure",), self.options.on_failure)] if self.options.on_failure else []

    def enter(self, run: FlowRun) -> Outcome:
        o = self.options
        return Outcome([Connect(o.to, record=o.record, ring_timeout=o.ring_timeout)])

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        if not isinstance(event, ConnectEnded):
            return None
        run.variables["transfer_result"] = event.result
        run.note(f"transfer {event.result}")
        if event.result != "completed" and self.options.on_failure is not None:
            return Outcome(then=self.options.on_failure)
        return NEXT

    def describe(self) -> str:
        return f"transfer {self.options.to}"
