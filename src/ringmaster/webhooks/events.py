"""The events webhooks carry: their types, the lane each one is ordered in, and the body sent.

Most are the events Ringmaster already publishes on MQTT, mapped by `from_publication(topic,
payload)` (the one place that sees them: ringmaster.tasks' out-topics and voicemail's), with the
same fields; the call's end and a callback request, which MQTT does not carry, come from the
call itself (`call_ended`, `callback_requested`).

| type | from | lane |
|---|---|---|
| call.offered, call.answered | `calls/events` offered, answered | call:ID |
| call.ended | the call's end (every call, with its disposition) | call:ID |
| callback.requested | a flow's callback step | call:ID |
| voicemail.new | `voicemail/BOX/events` new | call:ID |
| task.offered, task.accepted, task.completed | `tasks/ID/events` offered, assigned, completed | task:ID |
| agent.state | `agents/ID/state` (only when it changed) | agent:ID |

Events of one lane are delivered in the order they happened: a later one waits until the
earlier one is delivered (or dead). The body follows Standard Webhooks' payload structure:
`{"type": ..., "timestamp": ISO 8601 UTC of the event, "data": {...}}`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """A webhook event type (Standard Webhooks: full-stop delimited, grouped hierarchically)."""

    CALL_OFFERED = "call.offered"
    CALL_ANSWERED = "call.answered"
    CALL_ENDED = "call.ended"
    TASK_OFFERED = "task.offered"
    TASK_ACCEPTED = "task.accepted"
    TASK_COMPLETED = "task.completed"
    CALLBACK_REQUESTED = "callback.requested"
    VOICEMAIL_NEW = "voicemail.new"
    AGENT_STATE = "agent.state"


_CALL_EVENTS = {"offered": EventType.CALL_OFFERED, "answered": EventType.CALL_ANSWERED}
_TASK_EVENTS = {"offered": EventType.TASK_OFFERED, "assigned": EventType.TASK_ACCEPTED,
                "completed": EventType.TASK_COMPLETED}


@dataclass(frozen=True)
class WebhookEvent:
    """One event: its type, the lane it is ordered in (call:ID, task:ID, agent:ID), its id
    (webhook-id: `msg_` + 32 hex, the same for every endpoint and attempt), when it happened
    (epoch seconds) and its data (a JSON object)."""

    type: EventType
    lane: str
    data: dict[str, Any]
    at: float
    id: str

    @classmethod
    def new(cls, type_: EventType, lane: str, data: dict[str, Any], at: float | None = None) -> WebhookEvent:
        return cls(type_, lane, data, time.time() if at is None else at, f"msg_{uuid.uuid4().hex}")

    def body(self) -> bytes:
        """The request body, minified JSON (what is signed is what is sent, byte for byte)."""
        stamp = datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return json.dumps({"type": self.type.value, "timestamp": stamp, "data": self.data},
                          separators=(",", ":"), ensure_ascii=False, default=str).encode()


def from_publication(topic: str, payload: dict[str, Any]) -> WebhookEvent | None:
    """The webhook event an MQTT publication (topic without the prefix, payload without the
    link's version/seq/at) stands for, or None if webhooks do not carry it."""
    parts = topic.split("/")
    kind = payload.get("event")
    data = {k: v for k, v in payload.items() if k != "event"}
    if topic == "calls/events" and kind in _CALL_EVENTS:
        return WebhookEvent.new(_CALL_EVENTS[kind], f"call:{payload.get('call_id', '')}", data)
    if len(parts) == 3 and parts[0] == "tasks" and parts[2] == "events" and kind in _TASK_EVENTS:
        return WebhookEvent.new(_TASK_EVENTS[kind], f"task:{parts[1]}", data)
    if len(parts) == 3 and parts[0] == "agents" and parts[2] == "state":
        return WebhookEvent.new(EventType.AGENT_STATE, f"agent:{parts[1]}", dict(payload))
    if len(parts) == 3 and parts[0] == "voicemail" and parts[2] == "events" and kind == "new":
        return WebhookEvent.new(EventType.VOICEMAIL_NEW, f"call:{payload.get('call_id', '')}", data)
    return None


def call_ended(call_id: str, data: dict[str, Any]) -> WebhookEvent:
    """call.ended: data has call_id, caller, called, flow, disposition, cause, code, by,
    arrived_at, answered_at, ended_at (epoch seconds), variables."""
    return WebhookEvent.new(EventType.CALL_ENDED, f"call:{call_id}", {"call_id": call_id, **data})


def callback_requested(call_id: str, data: dict[str, Any]) -> WebhookEvent:
    """callback.requested: data has call_id, caller, queue, number."""
    return WebhookEvent.new(EventType.CALLBACK_REQUESTED, f"call:{call_id}", {"call_id": call_id, **data})
