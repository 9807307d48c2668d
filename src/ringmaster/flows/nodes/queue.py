"""queue: hand the caller to an ACD queue. `- queue: sales` or `- queue: {name: sales, priority: 5}`.

The call's variables (menu choices, account, language) travel with it into the queue. When the
queue lets the caller go unserved without an overflow target of its own (max wait, exit
empty), the flow continues with the next step, so a plan can offer voicemail after a queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ringmaster.flows.actions import EnqueueCall, FlowEvent, QueueLeft
from ringmaster.flows.nodes.base import NEXT, Node, NodeOptions, Outcome
from ringmaster.flows.nodes.setvar import expand

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class QueueOptions(NodeOptions):
    name: str
    priority: int = Field(default=0, ge=0, le=100, description="higher is served first")
    skills: dict[str, int] = Field(default_factory=dict, description="skills this call needs on top of the queue's; "
                                   "names may use variables: {\"${language}\": 3}")


class QueueNode(Node):
    kind = "queue"
    Options = QueueOptions
    shorthand = "name"

    @classmethod
    def name_refs(cls, options: QueueOptions) -> list[tuple[tuple[str | int, ...], str, str]]:  # type: ignore[override]
        return [(("name",), "queue", options.name)]

    def enter(self, run: FlowRun) -> Outcome:
        run.variables["queue"] = self.options.name
        skills = {expand(name, run.variables): level for name, level in self.options.skills.items()}
        skills = {k: v for k, v in skills.items() if k}  # an unset variable asks for nothing
        return Outcome([EnqueueCall(self.options.name, self.options.priority, tuple(sorted(skills.items())))])

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        if isinstance(event, QueueLeft):
            run.variables["queue_result"] = event.reason
            run.note(f"left queue {self.options.name}: {event.reason}")
            return NEXT
        return None

    def describe(self) -> str:
        return f"queue {self.options.name}"
