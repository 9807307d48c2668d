"""goto: jump to a step (by id) of this flow, or to another flow.

`- goto: menu`, `- goto: {flow: message}`, `- goto: {flow: message, goto: start}`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import model_validator

from ringmaster.flows.nodes.base import Node, NodeOptions, Outcome, TargetSpec

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class GotoOptions(NodeOptions):
    to: TargetSpec

    @model_validator(mode="before")
    @classmethod
    def _target(cls, v: Any) -> Any:
        # `goto: {flow: message}` and `goto: {flow: x, goto: y}` name the target directly
        if isinstance(v, dict) and "to" not in v and ({"flow", "goto"} & set(v)):
            return {"to": v}
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
