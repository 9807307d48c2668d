"""set: set call variables. `- set: {language: en, tier: gold}`; `${caller}` etc. expand."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import RootModel

from ringmaster.flows.nodes.base import NEXT, Node, NodeContext, Outcome

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SetOptions(RootModel[dict[str, str | int | float | bool]]):
    model_config = {"frozen": True}


def expand(template: str, variables: dict[str, Any]) -> str:
    return _REF.sub(lambda m: str(variables.get(m.group(1), "")), template)


class SetNode(Node):
    kind = "set"
    Options = SetOptions  # type: ignore[assignment]

    def __init__(self, options: SetOptions, ctx: NodeContext, node_id: str = ""):
        super().__init__(options, ctx, node_id)
        self.values = dict(options.root)

    def enter(self, run: FlowRun) -> Outcome:
        for name, value in self.values.items():
            run.variables[name] = expand(value, run.variables) if isinstance(value, str) else value
        return NEXT

    def describe(self) -> str:
        return "set " + ", ".join(f"{k}={v}" for k, v in self.values.items())
