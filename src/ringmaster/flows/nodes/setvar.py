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

    @classmethod
    def check_options(cls, options: SetOptions, ctx: NodeContext) -> None:  # type: ignore[override]
        # `set: {language: danish}` would silently serve the fallback: say so at load
        value = options.root.get("language")
        langs = ctx.languages
        if langs is not None and isinstance(value, str) and "${" not in value and not langs.supports(value):
            raise ValueError(f"language {value!r} is not supported (languages.supported: {', '.join(langs.supported)})")

    def enter(self, run: FlowRun) -> Outcome:
        for name, value in self.values.items():
            run.variables[name] = expand(value, run.variables) if isinstance(value, str) else value
        return NEXT

    def describe(self) -> str:
        return "set " + ", ".join(f"{k}={v}" for k, v in self.values.items())
