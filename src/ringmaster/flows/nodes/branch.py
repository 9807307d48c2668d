"""branch: go somewhere by the caller ID or a variable. First matching case wins.

```yaml
- branch:
    on: caller            # or any variable, e.g. account, menu_main, language
    cases:
      - {prefix: "+4570", then: vip}
      - {in: ["4511223344", "4599887766"], then: {flow: vip}}
      - {regex: "^00", then: international}
      - {exact: "", then: anonymous}
    default: menu         # optional; otherwise the next step
```
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from ringmaster.flows.nodes.base import NEXT, Node, NodeContext, NodeOptions, Outcome, TargetSpec

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class Case(NodeOptions):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    then: TargetSpec

    @model_validator(mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        # caller IDs look like numbers to YAML: accept 4512345678 for "4512345678"
        if isinstance(v, dict):
            v = {k: (str(x) if k in ("exact", "prefix") and isinstance(x, int) else x) for k, x in v.items()}
            if isinstance(v.get("in"), list):
                v["in"] = [str(x) for x in v["in"]]
        return v

    @model_validator(mode="after")
    def _one(self) -> Case:
        given = [k for k in ("exact", "prefix", "regex", "in_") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a case has exactly one of exact, prefix, regex, in")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex is not valid: {exc}") from None
        return self

    def matches(self, value: str) -> bool:
        if self.exact is not None:
            return value == self.exact
        if self.prefix is not None:
            return value.startswith(self.prefix)
        if self.regex is not None:
            return re.search(self.regex, value) is not None
        return value in (self.in_ or [])


class BranchOptions(NodeOptions):
    on: str = Field(default="caller", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    cases: list[Case] = Field(min_length=1)
    default: TargetSpec | None = None


class BranchNode(Node):
    kind = "branch"
    Options = BranchOptions

    def __init__(self, options: BranchOptions, ctx: NodeContext, node_id: str = ""):
        super().__init__(options, ctx, node_id)

    def targets(self) -> list[tuple[tuple[str | int, ...], TargetSpec]]:
        out: list[tuple[tuple[str | int, ...], TargetSpec]] = [(("cases", i, "then"), c.then)
                                                             for i, c in enumerate(self.options.cases)]
        if self.options.default is not None:
            out.append((("default",), self.options.default))
        return out

    def falls_through(self) -> bool:
        return self.options.default is None

    def enter(self, run: FlowRun) -> Outcome:
        value = str(run.variables.get(self.options.on, ""))
        for i, case in enumerate(self.options.cases):
            if case.matches(value):
                run.note(f"{self.options.on}={value!r} matches case {i}")
                return Outcome(then=case.then)
        run.note(f"{self.options.on}={value!r} matches no case")
        return Outcome(then=self.options.default) if self.options.default else NEXT

    def describe(self) -> str:
        return f"branch on {self.options.on}"
