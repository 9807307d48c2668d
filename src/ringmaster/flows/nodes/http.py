"""http: ask a configured service (a CRM) about the caller, and keep fields of its answer.

```yaml
- http:
    endpoint: crm                      # a name under http_endpoints: (URL, method, auth, timeout)
    params: {caller: "${caller}", account: "${account}"}   # default: every call variable
    map: {tier: customer.tier, language: customer.language, manager: customer.agent}
    on_timeout: no-crm                 # default: the next step
    on_error: no-crm                   # default: the next step
- branch: {on: tier, cases: [{exact: vip, then: {flow: vip}}]}
```
The URL, method and secrets are in the config, never in a flow: params go into the query
(GET, url-encoded) or the JSON body (POST), so caller input cannot choose the address. The
answer must be a JSON object; `map` takes dotted paths (`items.0.id` for lists) and keeps
scalar values of at most 200 printable characters. `http_result` is ok, error or timeout,
`http_status` the HTTP status (0 without one): a slow or dead service sends the caller on
within the endpoint's timeout, never strands them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from ringmaster.flows.actions import FlowEvent, HttpAnswered, HttpRequest
from ringmaster.flows.nodes.base import NEXT, Node, NodeOptions, Outcome, TargetSpec
from ringmaster.flows.nodes.setvar import expand

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun

_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIELD = re.compile(r"^[A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*$")
VALUE_MAX = 200
RESERVED = ("caller", "called", "http_result", "http_status")


class HttpOptions(NodeOptions):
    endpoint: str = Field(description="a name under http_endpoints:")
    params: dict[str, str] | None = Field(
        default=None, description="name -> template (${var}); default: every call variable")
    map: dict[str, str] = Field(default_factory=dict, description="variable -> dotted field of the JSON answer")
    on_error: TargetSpec | None = None
    on_timeout: TargetSpec | None = None

    @field_validator("params", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        # account: 1234 in YAML is an int: send it as the text it is
        if isinstance(v, dict):
            return {k: (str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x) for k, x in v.items()}
        return v

    @field_validator("params")
    @classmethod
    def _param_names(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name in v or {}:
            if not 0 < len(name) <= 64:
                raise ValueError(f"parameter name {name!r}: 1-64 characters")
        return v

    @field_validator("map")
    @classmethod
    def _map(cls, v: dict[str, str]) -> dict[str, str]:
        for var, path in v.items():
            if not _VAR.match(var):
                raise ValueError(f"variable name {var!r}: letters, digits and _ (not starting with a digit)")
            if var in RESERVED:
                raise ValueError(f"{var!r} cannot be set from an answer")
            if not _FIELD.match(path):
                raise ValueError(f"field {path!r}: a dotted path such as customer.tier or items.0.id")
        return v


def field_at(data: Any, path: str) -> Any:
    """The value at a dotted path of a JSON document (list items by index), or None."""
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def as_variable(value: Any) -> str | None:
    """A JSON scalar as a call variable's text, or None when it cannot be one (an object, a
    list, a long or unprintable string: variables go into SIP headers and the call record)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and len(value) <= VALUE_MAX and value.isprintable():
        return value
    return None


class HttpNode(Node):
    kind = "http"
    Options = HttpOptions
    shorthand = "endpoint"

    @classmethod
    def name_refs(cls, options: HttpOptions) -> list[tuple[tuple[str | int, ...], str, str]]:  # type: ignore[override]
        return [(("endpoint",), "endpoint", options.endpoint)]

    def targets(self) -> list[tuple[tuple[str | int, ...], TargetSpec]]:
        return [((k,), t) for k in ("on_error", "on_timeout") if (t := getattr(self.options, k)) is not None]

    def enter(self, run: FlowRun) -> Outcome:
        o = self.options
        if o.params is None:
            values = {k: str(v) for k, v in run.variables.items()}
        else:
            values = {k: expand(t, run.variables) for k, t in o.params.items()}
        endpoint = run.plan.cfg.http_endpoints.get(o.endpoint)
        if endpoint is None:  # checked at load; a plan is built only from a checked config
            return self._done(run, HttpAnswered("error", detail=f"unknown endpoint {o.endpoint!r}"))
        run.note(f"http {o.endpoint} {endpoint.method} {sorted(values)}")
        return Outcome([HttpRequest(o.endpoint, endpoint, tuple(sorted(values.items())))])

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        return self._done(run, event) if isinstance(event, HttpAnswered) else None

    def _done(self, run: FlowRun, answer: HttpAnswered) -> Outcome:
        o = self.options
        run.variables["http_result"] = answer.result
        run.variables["http_status"] = answer.status
        run.note(f"http {o.endpoint}: {answer.result}"
                 f"{f' {answer.status}' if answer.status else ''}{f' ({answer.detail})' if answer.detail else ''}")
        if answer.result == "ok":
            for var, path in o.map.items():
                value = as_variable(field_at(answer.data or {}, path))
                if value is None:
                    run.note(f"http: no usable {path!r} in the answer: {var} not set")
                    continue
                run.variables[var] = value
                run.note(f"{var}={value!r}")
            return NEXT
        target = o.on_timeout if answer.result == "timeout" else o.on_error
        return Outcome(then=target) if target is not None else NEXT

    def describe(self) -> str:
        return f"http {self.options.endpoint}"
