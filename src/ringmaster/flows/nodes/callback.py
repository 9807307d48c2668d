"""callback: store a call-back request. `- callback: {queue: sales, number: "${callback_number}"}`.

The number defaults to the caller ID; a `collect` step before it can ask for another one.
The request is a row in the `callbacks` table, for the queue that will call back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ringmaster.flows.actions import StoreCallback
from ringmaster.flows.nodes.base import Node, NodeOptions, Outcome
from ringmaster.flows.nodes.setvar import expand

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class CallbackOptions(NodeOptions):
    queue: str
    number: str = Field(default="${caller}")


class CallbackNode(Node):
    kind = "callback"
    Options = CallbackOptions
    shorthand = "queue"

    def enter(self, run: FlowRun) -> Outcome:
        number = expand(self.options.number, run.variables)
        run.variables["callback_requested"] = number
        run.note(f"callback to {number!r} for {self.options.queue}")
        return Outcome([StoreCallback(number, self.options.queue)], then="next")

    def describe(self) -> str:
        return f"callback {self.options.queue}"
