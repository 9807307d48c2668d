"""Reading the task log: `ringmaster tasks` and /api/tasks (chat and email tasks).

The same shapes as the call log: a filter, rows for table/csv/json, and the task_log in
Asterisk's queue_log format (epoch|taskid|queue|agent|EVENT|data...) for reporting tools.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ringmaster.calllog import queue_log_lines, where

COLUMNS = ["task_id", "created", "channel", "queue", "priority", "state", "agent", "wait_s", "handle_s",
           "disposition", "due"]
STATES = ("queued", "assigned", "completed", "cancelled")
CHANNELS = ("chat", "email")


@dataclass
class TaskFilter:
    since: float | None = None
    until: float | None = None
    queue: str | None = None
    agent: str | None = None
    channel: str | None = None
    state: str | None = None
    limit: int | None = None

    def sql(self) -> tuple[str, list[Any]]:
        clause, params = where([("created_at", self.since, ">="), ("created_at", self.until, "<"),
                                ("queue", self.queue, "="), ("agent", self.agent, "="),
                                ("channel", self.channel, "="), ("state", self.state, "=")])
        return f"SELECT * FROM tasks{clause} ORDER BY created_at, id" + (f" LIMIT {int(self.limit)}" if self.limit else ""), params


def row_view(r: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    def when(v: float | None) -> str | None:
        return None if v is None else datetime.fromtimestamp(v).isoformat(timespec="seconds")

    def rnd(v: Any) -> Any:
        return round(v, 1) if isinstance(v, float) else v

    return {"task_id": r["task_id"], "created": when(r["created_at"]), "channel": r["channel"], "queue": r["queue"],
            "priority": r["priority"], "state": r["state"], "agent": r["agent"], "wait_s": rnd(r["wait_seconds"]),
            "handle_s": rnd(r["handle_seconds"]), "disposition": r["disposition"], "due": when(r["due"]),
            "data": json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]}


def query(con: sqlite3.Connection, f: TaskFilter) -> list[dict[str, Any]]:
    sql, params = f.sql()
    return [row_view(r) for r in con.execute(sql, params)]


def log_lines(con: sqlite3.Connection, since: float | None, until: float | None, queue: str | None) -> Iterator[str]:
    return queue_log_lines(con, since, until, queue, table="task_log", id_column="task_id")
