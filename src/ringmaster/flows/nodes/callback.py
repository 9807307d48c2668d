"""callback: a queued callback (docs/callbacks.md). `- callback: {queue: sales, number: "${callback_number}"}`.

The number defaults to the caller ID; a `collect` step before it can ask for another one. The
callback enters the queue (which must have `callback:` settings) behind those waiting; the
caller hears the queue's confirm prompt with the position and estimated wait, and the step
sets ${callback_id}, ${callback_position}, ${callback_wait} (minutes, "" if no estimate), or
${callback_error} when the number is refused (empty, not digits, a pattern the queue's route
does not allow): nothing is stored then, and the flow goes on (branch on callback_error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ringmaster.flows.actions import CallbackStored, FlowEvent, StoreCallback
from ringmaster.flows.nodes.base import Node, NodeOptions, Outcome
from ringmaster.flows.nodes.setvar import expand

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class CallbackOptions(NodeOptions):
    queue: str
    number: str = Field(default="${caller}")
    priority: int = Field(default=0, ge=0, le=100)


class CallbackNode(Node):
    kind = "callback"
    Options = CallbackOptions
    shorthand = "queue"

    @classmethod
    def name_refs(cls, options: CallbackOptions) -> list[tuple[tuple[str | int, ...], str, str]]:  # type: ignore[override]
        return [(("queue",), "queue", options.queue)]

    def enter(self, run: FlowRun) -> Outcome:
        number = expand(self.options.number, run.variables)
        run.variables["callback_requested"] = number
        run.note(f"callback to {number!r} for {self.options.queue}")
        return Outcome([StoreCallback(number, self.options.queue, self.options.priority)], then="wait")

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        if not isinstance(event, CallbackStored):
            return None
        if event.error:
            run.variables["callback_requested"] = ""
            run.variables["callback_error"] = event.error
            run.note(f"callback refused: {event.error}")
        else:
            run.variables.update(callback_id=event.callback_id, callback_position=event.position,
                                 callback_wait="" if event.wait_minutes is None else event.wait_minutes,
                                 callback_error="")
        return Outcome(then="next")

    def describe(self) -> str:
        return f"callback {self.options.queue}"
