"""Incoming MQTT payloads: JSON objects with a version field, checked before anything changes.

A payload that does not parse, has the wrong version, an unknown command or wrong fields is
a BadPayload with the reason; the router answers it on the errors topic and changes nothing.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

VERSION = 1
TASK_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,100}$")

AGENT_COMMANDS = ("login", "logout", "pause", "unpause", "accept", "reject", "complete", "wrapup-done", "transfer")
TASK_COMMANDS = ("cancel", "transfer", "complete")


class BadPayload(Exception):
    pass


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    queue: str
    priority: int = Field(default=0, ge=-100, le=100)
    skills: dict[str, int] = Field(default_factory=dict)
    due: float | str | None = Field(default=None, description="email: epoch seconds or ISO 8601")
    data: dict[str, Any] = Field(default_factory=dict)

    def due_epoch(self) -> float | None:
        if self.due is None or isinstance(self.due, float | int):
            return None if self.due is None else float(self.due)
        try:
            return datetime.fromisoformat(self.due.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadPayload(f"due: not a time: {self.due!r} (epoch seconds or ISO 8601)") from None


class AgentCommand(_Payload):
    command: Literal["login", "logout", "pause", "unpause", "accept", "reject", "complete", "wrapup-done", "transfer"]
    reason: str = Field(default="", max_length=64)
    task: str | None = Field(default=None, pattern=TASK_ID.pattern)
    channel: Literal["voice", "chat", "email"] | None = None
    queue: str | None = None


class TaskCommand(_Payload):
    command: Literal["cancel", "transfer", "complete"]
    queue: str | None = None
    reason: str = Field(default="", max_length=64)


def parse(model: type[_Payload], raw: bytes) -> Any:
    if len(raw) > 64_000:
        raise BadPayload(f"payload of {len(raw)} bytes is too large (limit 64000)")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadPayload("the payload must be a JSON object")
    if "version" not in data:
        raise BadPayload(f"missing version (this is version {VERSION})")
    if "command" in data and model is not NewTask:
        allowed = AGENT_COMMANDS if model is AgentCommand else TASK_COMMANDS
        if data["command"] not in allowed:
            raise BadPayload(f"unknown command {data['command']!r}; commands: {', '.join(allowed)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadPayload("; ".join(_describe(e) for e in exc.errors())) from None


def _describe(err: Any) -> str:
    where = ".".join(str(x) for x in err.get("loc", ())) or "payload"
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        msg = "unknown field"
    return f"{where}: {msg}"
