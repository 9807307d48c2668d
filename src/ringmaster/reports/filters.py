"""What the reports can be filtered by: one definition for the CLI (`ringmaster calls`,
`tasks`, `events`, `stats`, `voicemail`) and the HTTP API (/api/calls, /api/tasks,
/api/voicemail), validated the same way, and the source of the API's documented query parameters (api.py's OpenAPI document).

Times: ISO 8601 (`2026-11-23T08:00`, local time if no zone) or an age (`15m`, `2h`, `7d`
ago; `-2h` works too). A refused value raises FilterError naming the parameter.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ringmaster.store import DISPOSITIONS

DIRECTIONS = ("inbound", "outbound")

_REL = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])$")
MAX_LIMIT = 10_000  # rows one API answer may carry (the CLI exports without a limit)


class TaskState(StrEnum):
    """A chat or email task's state in the tasks table."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


TASK_STATES = tuple(s.value for s in TaskState)


class MessageState(StrEnum):
    """A voicemail message's state, as Asterisk's folders: new (INBOX) or heard (Old)."""

    NEW = "new"
    HEARD = "heard"


MESSAGE_STATES = tuple(s.value for s in MessageState)
TASK_CHANNELS = ("chat", "email")


class FilterError(ValueError):
    """A filter value that cannot be used; the message names the parameter and what it takes."""


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds from an ISO 8601 time (local if it has no zone) or an age ago (15m, 2h, 7d).
    ValueError with the expected shapes for anything else, or a time a timestamp cannot hold."""
    now = time.time() if now is None else now
    m = _REL.match(text.strip())
    if m:
        at = now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        if not math.isfinite(at):
            raise ValueError(f"age out of range: {text!r}")
        return at
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected an ISO time (2026-11-23T08:00+01:00) or an age (15m, 2h, 7d), got {text!r}") from None
    try:
        if dt.tzinfo is None:
            dt = dt.astimezone()
        return dt.timestamp()
    except (OverflowError, OSError) as exc:  # year 1 or 9999 overflows a local timestamp
        raise ValueError(f"time out of range: {text!r} ({exc})") from None


@dataclass(frozen=True)
class Param:
    """One query parameter: its name, OpenAPI type, meaning, and the parser that turns the
    text into the filter's value (ValueError with the reason when it cannot)."""

    name: str
    kind: str  # OpenAPI schema type: string, number, integer
    description: str
    parse: Callable[[str], Any]
    choices: tuple[str, ...] = ()


def _text(v: str) -> str:
    if len(v) > 200 or not v.isprintable():
        raise ValueError("at most 200 printable characters")
    return v


def _seconds(v: str) -> float:
    x = float(v)
    if not math.isfinite(x) or x < 0:
        raise ValueError("a number of seconds, 0 or more")
    return x


def _limit(v: str) -> int:
    if len(v) > 6:
        raise ValueError(f"1 to {MAX_LIMIT}")
    n = int(v)
    if not 1 <= n <= MAX_LIMIT:
        raise ValueError(f"1 to {MAX_LIMIT}")
    return n


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v not in options:
            raise ValueError(f"one of {', '.join(options)}")
        return v
    return parse


_SINCE = Param("since", "string", "from this time: ISO 8601 or an age (15m, 2h, 7d)", parse_time)
_UNTIL = Param("until", "string", "before this time: ISO 8601 or an age", parse_time)
_QUEUE = Param("queue", "string", "only this queue", _text)
_LIMIT = Param("limit", "integer", f"at most this many rows (1-{MAX_LIMIT}; default 100)", _limit)


def _from_query(cls: type[Any], params: tuple[Param, ...], query: Mapping[str, str], **defaults: Any) -> Any:
    known = {p.name: p for p in params}
    unknown = set(query) - set(known)
    if unknown:
        raise FilterError(f"unknown parameter(s) {sorted(unknown)[:5]}; known: {sorted(known)}")
    values: dict[str, Any] = dict(defaults)
    for name, text in query.items():
        try:
            values[name] = known[name].parse(text)
        except (ValueError, OverflowError) as exc:
            raise FilterError(f"{name}: {exc}") from None
    return cls(**values)


@dataclass(frozen=True)
class CallFilter:
    """Which calls: arrived in [since, until) (epoch seconds), in a queue, answered by an
    agent, caller ID containing `caller`, ended as `disposition`, waited >= min_wait seconds;
    at most `limit` rows (None: all), oldest first unless newest_first."""

    since: float | None = None
    until: float | None = None
    queue: str | None = None
    agent: str | None = None
    caller: str | None = None
    disposition: str | None = None
    min_wait: float | None = None
    limit: int | None = None
    newest_first: bool = False
    direction: str | None = None

    PARAMS = (_SINCE, _UNTIL, _QUEUE, Param("agent", "string", "only calls this agent answered or placed", _text),
              Param("caller", "string", "caller ID contains this", _text),
              Param("disposition", "string", "only calls that ended this way", _choice(DISPOSITIONS), DISPOSITIONS),
              Param("min_wait", "number", "waited at least this many seconds in a queue", _seconds),
              Param("direction", "string", "inbound, or outbound (calls agents placed)", _choice(DIRECTIONS),
                    DIRECTIONS), _LIMIT)

    def __post_init__(self) -> None:
        if self.disposition is not None and self.disposition not in DISPOSITIONS:
            raise FilterError(f"disposition: one of {', '.join(DISPOSITIONS)}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise FilterError(f"direction: one of {', '.join(DIRECTIONS)}")
        if self.limit is not None and self.limit < 1:
            raise FilterError("limit: 1 or more")
        if self.min_wait is not None and not (math.isfinite(self.min_wait) and self.min_wait >= 0):
            raise FilterError("min_wait: a number of seconds, 0 or more")

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> CallFilter:
        """The API's filter from its query string: newest first, 100 rows unless `limit`."""
        f: CallFilter = _from_query(cls, cls.PARAMS, query, limit=100, newest_first=True)
        return f

    def where(self) -> tuple[str, list[Any]]:
        """The SQL WHERE clause (with its leading " WHERE ", or "") and its parameters."""
        caller = None
        if self.caller is not None:  # a caller ID containing % or _ means those characters
            caller = "%" + self.caller.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return where([("arrived_at", self.since, ">="), ("arrived_at", self.until, "<"),
                      ("queue", self.queue, "="), ("agent", self.agent, "="),
                      ("disposition", self.disposition, "="), ("wait_seconds", self.min_wait, ">="),
                      ("caller", caller, "LIKE"), ("direction", self.direction, "=")])


@dataclass(frozen=True)
class TaskFilter:
    """Which chat/email tasks: created in [since, until), in a queue, taken by an agent, of a
    channel, in a state; at most `limit` rows (None: all), oldest first."""

    since: float | None = None
    until: float | None = None
    queue: str | None = None
    agent: str | None = None
    channel: str | None = None
    state: str | None = None
    limit: int | None = None

    PARAMS = (_SINCE, _UNTIL, _QUEUE, Param("agent", "string", "only tasks this agent took", _text),
              Param("channel", "string", "only this channel", _choice(TASK_CHANNELS), TASK_CHANNELS),
              Param("state", "string", "only tasks in this state", _choice(TASK_STATES), TASK_STATES), _LIMIT)

    def __post_init__(self) -> None:
        if self.channel is not None and self.channel not in TASK_CHANNELS:
            raise FilterError(f"channel: one of {', '.join(TASK_CHANNELS)}")
        if self.state is not None and self.state not in TASK_STATES:
            raise FilterError(f"state: one of {', '.join(TASK_STATES)}")
        if self.limit is not None and self.limit < 1:
            raise FilterError("limit: 1 or more")

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> TaskFilter:
        """The API's filter from its query string: 100 rows unless `limit`."""
        f: TaskFilter = _from_query(cls, cls.PARAMS, query, limit=100)
        return f

    def where(self) -> tuple[str, list[Any]]:
        """The SQL WHERE clause (with its leading " WHERE ", or "") and its parameters."""
        return where([("created_at", self.since, ">="), ("created_at", self.until, "<"),
                      ("queue", self.queue, "="), ("agent", self.agent, "="),
                      ("channel", self.channel, "="), ("state", self.state, "=")])


@dataclass(frozen=True)
class VoicemailFilter:
    """Which voicemail messages (never deleted ones): in `box`, in `state` (new or heard); at
    most `limit` (None: all), newest first. Which boxes a reader may see is not a filter: the
    reads take that set beside it (reads.voicemails)."""

    box: str | None = None
    state: str | None = None
    limit: int | None = None

    PARAMS = (Param("box", "string", "only this box (one the token may read)", _text),
              Param("state", "string", "only new or only heard messages", _choice(MESSAGE_STATES), MESSAGE_STATES),
              Param("limit", "integer", f"at most this many messages (1-{MAX_LIMIT}; default 500)", _limit))

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in MESSAGE_STATES:
            raise FilterError(f"state: one of {', '.join(MESSAGE_STATES)}")
        if self.limit is not None and self.limit < 1:
            raise FilterError("limit: 1 or more")

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> VoicemailFilter:
        """The API's filter from its query string: 500 messages unless `limit`."""
        f: VoicemailFilter = _from_query(cls, cls.PARAMS, query, limit=500)
        return f

    def where(self, boxes: Iterable[str] | None = None) -> tuple[str, list[Any]]:
        """The SQL WHERE clause (with its leading " WHERE ") and its parameters; boxes: only
        messages in these (None: any box)."""
        heard = None if self.state is None else int(self.state == MessageState.HEARD)
        clause, params = where([("box", self.box, "="), ("heard", heard, "=")])
        clause = (clause + " AND " if clause else " WHERE ") + "deleted_at IS NULL"
        if boxes is not None:
            names = sorted(boxes)
            clause += f" AND box IN ({','.join('?' * len(names))})" if names else " AND 0"
            params += names
        return clause, params


@dataclass(frozen=True)
class EventFilter:
    """Which queue_log (or task_log) events: at in [since, until), of one queue."""

    since: float | None = None
    until: float | None = None
    queue: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL WHERE clause (with its leading " WHERE ", or "") and its parameters."""
        return where([("at", self.since, ">="), ("at", self.until, "<"), ("queue", self.queue, "=")])


def where(conditions: list[tuple[str, Any, str]]) -> tuple[str, list[Any]]:
    """A WHERE clause from (column, value, operator) triples; a None value is left out. LIKE
    takes backslash as its escape character."""
    given = [(col, value, op) for col, value, op in conditions if value is not None]
    clause = " AND ".join(f"{col} {op} ?" + (" ESCAPE '\\'" if op == "LIKE" else "") for col, _, op in given)
    return (" WHERE " + clause if clause else ""), [value for _, value, _ in given]
