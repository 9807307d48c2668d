"""schedule: branch on business hours. `- schedule: {name: office, closed: after-hours}`.

The schedule itself (weekly hours in a time zone, holidays) is defined once under the plan's
`schedules:` section; an operator can force it open or closed at run time
(`ringmaster schedule office --closed`), which this node respects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringmaster.flows.nodes.base import NEXT, Node, NodeOptions, Outcome, TargetSpec

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class ScheduleOptions(NodeOptions):
    name: str
    open: TargetSpec | None = None
    closed: TargetSpec | None = None


class ScheduleNode(Node):
    kind = "schedule"
    Options = ScheduleOptions
    shorthand = "name"

    @classmethod
    def name_refs(cls, options: ScheduleOptions) -> list[tuple[tuple[str | int, ...], str, str]]:  # type: ignore[override]
        return [(("name",), "schedule", options.name)]

    def targets(self) -> list[tuple[tuple[str | int, ...], TargetSpec]]:
        return [((k,), t) for k in ("open", "closed") if (t := getattr(self.options, k)) is not None]

    def falls_through(self) -> bool:
        return self.options.open is None or self.options.closed is None

    def enter(self, run: FlowRun) -> Outcome:
        is_open, why = run.schedule_open(self.options.name)
        run.variables[f"schedule_{self.options.name}"] = "open" if is_open else "closed"
        run.note(f"{self.options.name} {'open' if is_open else 'closed'} ({why})")
        target = self.options.open if is_open else self.options.closed
        return Outcome(then=target) if target is not None else NEXT

    def describe(self) -> str:
        return f"schedule {self.options.name}"
