"""Incoming MQTT payloads: JSON objects with a version field, checked before anything changes.

A payload that does not parse, has the wrong version, an unknown command or wrong fields is
a BadPayload with the reason; the router answers it on the errors topic and changes nothing.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ringmaster.inputs import PLAIN_NAME, InputRefused, json_object

VERSION = 1
MAX_BYTES = 64_000
TASK_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,100}$")
NAME = PLAIN_NAME.pattern  # queue and skill names, as in the config
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"  # reasons end up in state messages and the store
# chat lines and wrap-up notes: lines and tabs, no other control bytes
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
TEXT_MAX = 4000
# due times: from the epoch to 2100-01-01; anything else is a typo or an attack (inf, 1e300)
DUE_MIN, DUE_MAX = 0.0, 4_102_444_800.0

AGENT_COMMANDS = ("login", "logout", "pause", "unpause", "accept", "reject", "complete", "wrapup-done", "transfer",
                  "reply", "wrapup", "dial", "call")
TASK_COMMANDS = ("cancel", "transfer", "complete", "message")


class BadPayload(Exception):
    """A payload (or a command in it) that cannot be applied; str() is "field: reason" when the
    reason belongs to one field, and `field` says which ("" for the payload as a whole)."""

    def __init__(self, reason: str, field: str = ""):
        self.reason = reason
        self.field = field
        super().__init__(reason if not field or reason.startswith(f"{field}:") else f"{field}: {reason}")


class _Payload(BaseModel):
    # strict: JSON has types, and a sender that writes "7" or true for a number has a bug we
    # should tell it about, not guess around (pydantic's lax mode would take both)
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != VERSION:
            raise ValueError(f"version {v} is not supported (this is version {VERSION})")
        return v


class NewTask(_Payload):
    id: str | None = Field(default=None, pattern=TASK_ID.pattern)
    channel: Literal["chat", "email"]
    queue: str = Field(pattern=NAME)
    priority: int = Field(default=0, ge=-100, le=100)
    skills: dict[str, int] = Field(default_factory=dict, max_length=32)
    due: Any = Field(default=None, description="email: epoch seconds or ISO 8601")
    data: dict[str, Any] = Field(default_factory=dict)
    # who the task is from: +E.164 or tel:NUMBER, an email address, or an id (docs/customers.md)
    customer: str | None = Field(default=None, max_length=254)

    @field_validator("skills")
    @classmethod
    def _skills(cls, v: dict[str, int]) -> dict[str, int]:
        for name, level in v.items():
            if not re.match(NAME, name):
                raise ValueError(f"skill name {name[:70]!r} is not plain (letters, digits, _ . -; at most 64)")
            if not 0 <= level <= 100:
                raise ValueError(f"skill {name!r}: level {level} is not 0-100")
        return v

    @field_validator("due")
    @classmethod
    def _due(cls, v: Any) -> float | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError("epoch seconds or an ISO 8601 time")
        if isinstance(v, str):
            try:
                if len(v) > 40:
                    raise ValueError
                v = datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except (ValueError, OverflowError):
                raise ValueError(f"not a time: {v[:50]!r} (epoch seconds or ISO 8601)") from None
        if not (math.isfinite(v) and DUE_MIN <= v <= DUE_MAX):
            raise ValueError(f"{v} is not a time between 1970 and 2100")
        return float(v)

    def due_epoch(self) -> float | None:
        return self.due  # type: ignore[no-any-return]


class AgentCommand(_Payload):
    command: Literal["login", "logout", "pause", "unpause", "accept", "reject", "complete", "wrapup-done", "transfer",
                     "reply", "wrapup", "dial", "call"]
    reason: str = Field(default="", max_length=64, pattern=PLAIN_TEXT)
    task: str | None = Field(default=None, pattern=TASK_ID.pattern)
    channel: Literal["voice", "chat", "email"] | None = None
    queue: str | None = Field(default=None, pattern=NAME)
    flow: str | None = Field(default=None, pattern=NAME, description="transfer of a call: to this flow")
    agent: str | None = Field(default=None, pattern=NAME, description="transfer of a call: to this agent")
    external: str | None = Field(default=None, pattern=r"^(\+?[0-9]{1,20}|[A-Za-z0-9_.-]{1,64})$",
                                 description="transfer of a call: to this transfer_targets name or number")
    mode: Literal["blind", "attended"] = Field(default="blind", description="transfer of a call: attended = a consult first")
    action: Literal["complete", "cancel"] | None = Field(default=None, description="transfer: ends the agent's consult")
    text: str = Field(default="", max_length=TEXT_MAX, pattern=TEXT, description="reply: the agent's message")
    # complete and wrapup: a wrap-up code (of customers.wrapup_codes when that section is set)
    # and/or notes; their length and codes are checked against the config by the customer book
    code: str | None = Field(default=None, max_length=64, description="the wrap-up code")
    notes: str | None = Field(default=None, max_length=20_000, description="the wrap-up notes")
    # dial: click-to-dial this number (the outbound rules decide; docs/outbound.md); call: call
    # the customer of the chat `task` the agent holds
    number: str | None = Field(default=None, max_length=40, pattern=r"^\+?[0-9*#]{1,32}$",
                               description="dial: the number to call")

    def wrapup_problem(self) -> tuple[str, str] | None:
        """(field, reason) when code or notes hold what no store row should (control bytes, notes
        over TEXT_MAX), checked where no customers section does it with the config's limits."""
        if self.code and not re.match(PLAIN_TEXT, self.code):
            return "code", "no control characters"
        if self.notes and (len(self.notes) > TEXT_MAX or not re.match(TEXT, self.notes)):
            return "notes", f"at most {TEXT_MAX} characters, no control characters but line breaks and tabs"
        return None


class TaskCommand(_Payload):
    command: Literal["cancel", "transfer", "complete", "message"]
    queue: str | None = Field(default=None, pattern=NAME)
    reason: str = Field(default="", max_length=64, pattern=PLAIN_TEXT)
    text: str = Field(default="", max_length=TEXT_MAX, pattern=TEXT, description="message: the customer's message")
    name: str = Field(default="", max_length=64, pattern=PLAIN_TEXT, description="message: who wrote it")


def parse(model: type[_Payload], raw: bytes) -> Any:
    """raw as a model instance; BadPayload (never anything else) with the field and reason."""
    try:
        data = json_object(raw, max_bytes=MAX_BYTES)
    except InputRefused as exc:
        raise BadPayload(exc.reason, exc.field or "payload") from None
    if "version" not in data:
        raise BadPayload(f"missing version (this is version {VERSION})", "version")
    if "command" in data and model is not NewTask:
        allowed = AGENT_COMMANDS if model is AgentCommand else TASK_COMMANDS
        if data["command"] not in allowed:
            shown = repr(data["command"])[:70]
            raise BadPayload(f"unknown command {shown}; commands: {', '.join(allowed)}", "command")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _field(errors[0])
        raise BadPayload("; ".join(_describe(e) for e in errors[:5]), first) from None


def _field(err: Any) -> str:
    return ".".join(str(x) for x in err.get("loc", ())) or "payload"


def _describe(err: Any) -> str:
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown field"
    return f"{_field(err)}: {msg}"
