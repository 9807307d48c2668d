"""goto: jump to a step (by id) of this flow, or to another flow. `- goto: menu`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from ringmaster.flows.nodes.base import Node, NodeOptions, Outcome, TargetSpec

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class GotoOptions(NodeOptions):
    to: TargetSpec

    @field_validator("to", mode="before")
    @classmethod
    def _t(cls, v: Any) -> Any:
        return v


class GotoNode(Node):
    kind = "goto"
    Options = GotoOptions
    shorthand = "to"

    def falls_through(self) -> bool:
        return False

    def targets(self) -> list[tuple[tuple[str | int, ...], TargetSpec]]:
        return [(("to",), self.options.to)]

    def enter(self, run: FlowRun) -> Outcome:
        return Outcome(then=self.options.to)

    def describe(self) -> str:
        return f"goto {self.options.to}"
