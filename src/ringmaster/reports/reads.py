"""Every read of the stored records for people and tools: calls, their events and queue
events, chat/email tasks, the queue_log and task_log, the events behind the figures, and
voicemail messages with their counts per box.

Plain functions over a read-only sqlite3 connection (WAL lets readers and the daemon's one
writer work at once). The CLI calls them directly; the daemon's API calls the same functions
in its reader thread (reports.reader), so both answer the same filter with the same rows.
A store that cannot be read raises sqlite3.Error.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ringmaster.reports.filters import CallFilter, EventFilter, TaskFilter, VoicemailFilter
from ringmaster.reports.stats import PRESENCE_EVENTS, AgentStats, QueueStats, Tally


def connect(db: str | Path) -> sqlite3.Connection:
    """A read-only connection to the store's file; FileNotFoundError (naming the file) if there
    is none. Rows read as sqlite3.Row."""
    if not Path(db).exists():
        raise FileNotFoundError(f"no call log at {db} (has ringmaster run with this config?)")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5, check_same_thread=False)
    con.row_factory = sqlite3.Row
    return con


def _call_record(r: sqlite3.Row) -> dict[str, Any]:
    rec = dict(r)
    rec["ivr_path"] = json.loads(rec["ivr_path"])
    rec["variables"] = json.loads(rec["variables"])
    return rec


def calls(con: sqlite3.Connection, f: CallFilter, after_id: int = 0) -> list[dict[str, Any]]:
    """The calls table's rows that match `f` (every column; ivr_path and variables decoded),
    in arrival order (newest first if f.newest_first); after_id: only rows stored after it."""
    clause, params = f.where()
    if after_id:
        clause += (" AND " if clause else " WHERE ") + "id > ?"
        params.append(after_id)
    order = " ORDER BY arrived_at DESC, id DESC" if f.newest_first else " ORDER BY arrived_at, id"
    if f.limit:
        order += " LIMIT ?"
        params.append(int(f.limit))
    return [_call_record(r) for r in con.execute(f"SELECT * FROM calls{clause}{order}", params)]


def call_detail(con: sqlite3.Connection, call_id: str) -> dict[str, Any] | None:
    """One call: {"call": record, "events": [{at, event, data}], "queue_events": [{at, queue,
    agent, event, data}]}, or None if no call has that id."""
    row = con.execute("SELECT * FROM calls WHERE call_id=?", (call_id,)).fetchone()
    if row is None:
        return None
    events = [{"at": r["at"], "event": r["event"], "data": json.loads(r["data"])} for r in con.execute(
        "SELECT at, event, data FROM call_events WHERE call_id=? ORDER BY id", (call_id,))]
    qlog = [dict(r) for r in con.execute(
        "SELECT at, queue, agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", (call_id,))]
    return {"call": _call_record(row), "events": events, "queue_events": qlog}


def recording_path(con: sqlite3.Connection, call_id: str) -> str | None:
    """The recording file the call record names (None: no call, no recording)."""
    row = con.execute("SELECT recording FROM calls WHERE call_id=?", (call_id,)).fetchone()
    return str(row["recording"]) if row is not None and row["recording"] else None


def last_call_id(con: sqlite3.Connection) -> int:
    """The newest stored call's row id (0: none): where `follow` starts."""
    return int(con.execute("SELECT COALESCE(MAX(id), 0) FROM calls").fetchone()[0])


def follow(con: sqlite3.Connection, f: CallFilter, poll: float = 0.5) -> Iterator[list[dict[str, Any]]]:
    """Calls matching `f` as they end (a batch per poll that found some; forever). A reader of
    another process's file can only poll: every `poll` seconds."""
    last = last_call_id(con)
    f = CallFilter(**{**f.__dict__, "limit": None, "newest_first": False})
    pending: set[int] = set()
    while True:
        for r in calls(con, f, after_id=last):
            pending.add(r["id"])
            last = max(last, r["id"])
        done = []
        for rid in sorted(pending):
            row = con.execute("SELECT * FROM calls WHERE id=?", (rid,)).fetchone()
            if row is not None and row["disposition"] != "in_progress":
                done.append(_call_record(row))
                pending.discard(rid)
        if done:
            yield done
        time.sleep(poll)


def task_view(r: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    """A task row as the CLI and API show it: ISO times, rounded seconds, data decoded."""
    def when(v: float | None) -> str | None:
        return None if v is None else datetime.fromtimestamp(v).isoformat(timespec="seconds")

    def rnd(v: Any) -> Any:
        return round(v, 1) if isinstance(v, float) else v

    return {"task_id": r["task_id"], "created": when(r["created_at"]), "channel": r["channel"], "queue": r["queue"],
            "priority": r["priority"], "state": r["state"], "agent": r["agent"], "wait_s": rnd(r["wait_seconds"]),
            "handle_s": rnd(r["handle_seconds"]), "disposition": r["disposition"], "due": when(r["due"]),
            "data": json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]}


def tasks(con: sqlite3.Connection, f: TaskFilter) -> list[dict[str, Any]]:
    """Chat and email tasks matching `f`, oldest first, as task_view shapes them."""
    clause, params = f.where()
    sql = f"SELECT * FROM tasks{clause} ORDER BY created_at, id"
    if f.limit:
        sql += " LIMIT ?"
        params.append(int(f.limit))
    return [task_view(r) for r in con.execute(sql, params)]


def task_detail(con: sqlite3.Connection, task_id: str) -> dict[str, Any] | None:
    """One task: {"task": task_view, "events": [{at, queue, agent, event, data, channel}]}, or None."""
    row = con.execute("SELECT * FROM tasks WHERE task_id=?", (task_id,)).fetchone()
    if row is None:
        return None
    events = [dict(r) for r in con.execute(
        "SELECT at, queue, agent, event, data, channel FROM task_log WHERE task_id=? ORDER BY id", (task_id,))]
    return {"task": task_view(row), "events": events}


def queue_log_lines(con: sqlite3.Connection, f: EventFilter, table: str = "queue_log") -> Iterator[str]:
    """Asterisk's queue_log format, one line per event: epoch|callid|queuename|agent|event|data1|...
    table: queue_log (calls) or task_log (chat and email tasks, the task id in callid's place)."""
    if table not in ("queue_log", "task_log"):
        raise ValueError(f"no event table {table!r}")
    id_column = "task_id" if table == "task_log" else "call_id"
    clause, params = f.where()
    for r in con.execute(f"SELECT at, {id_column} AS xid, queue, agent, event, data FROM {table}{clause}"
                         " ORDER BY at, id", params):
        data = f"|{r['data']}" if r["data"] != "" else ""
        yield f"{int(r['at'])}|{r['xid']}|{r['queue']}|{r['agent']}|{r['event']}{data}"


def stats(con: sqlite3.Connection, since: float, until: float, channel: str, service_levels: dict[str, float],
          wrapups: dict[str, float], short_abandon: float = 5.0) -> tuple[list[QueueStats], list[AgentStats]]:
    """Queue and agent figures over [since, until) for one channel (voice: queue_log; chat or
    email: that channel's task_log), with logins and pauses opened before `since` that were
    still open (read from every earlier presence event: one pass over the older log)."""
    tally = Tally(since, until, service_levels, wrapups if channel == "voice" else {}, short_abandon)
    marks = ",".join("?" * len(PRESENCE_EVENTS))
    rows: list[tuple[Any, ...]] = [tuple(r) for r in con.execute(
        f"SELECT at, queue, agent, event, data FROM queue_log WHERE at < ? AND event IN ({marks}) ORDER BY at, id",
        (since, *PRESENCE_EVENTS))]
    if channel == "voice":
        rows += [tuple(r) for r in con.execute(
            "SELECT at, queue, agent, event, data FROM queue_log WHERE at >= ? AND at < ? ORDER BY at, id",
            (since, until))]
    else:  # the channel's task events, with the agents' logins and pauses (one presence for all)
        rows += [tuple(r) for r in con.execute(
            f"SELECT at, queue, agent, event, data FROM queue_log WHERE at >= ? AND at < ? AND event IN ({marks})",
            (since, until, *PRESENCE_EVENTS))]
        rows += [tuple(r) for r in con.execute(
            "SELECT at, queue, agent, event, data FROM task_log WHERE at >= ? AND at < ? AND channel = ?",
            (since, until, channel))]
        rows.sort(key=lambda r: r[0])
    for at, queue, agent, event, data in rows:
        tally.add(at, queue, agent, event, data)
    return tally.result()


def outbound_stats(con: sqlite3.Connection, since: float, until: float) -> list[dict[str, Any]]:
    """Calls agents placed (docs/outbound.md) in [since, until), per agent: {"agent", "placed",
    "answered" (completed), "no_answer", "busy", "failed", "refused", "talk_seconds"}, by agent."""
    rows = con.execute(
        "SELECT agent, count(*), sum(disposition='completed'), sum(disposition='no_answer'), sum(disposition='busy'),"
        " sum(disposition='failed'), sum(disposition='refused'), coalesce(sum(talk_seconds), 0)"
        " FROM calls WHERE direction='outbound' AND arrived_at >= ? AND arrived_at < ?"
        " AND disposition != 'in_progress' GROUP BY agent ORDER BY agent", (since, until))
    names = ("agent", "placed", "answered", "no_answer", "busy", "failed", "refused", "talk_seconds")
    return [dict(zip(names, (r[0], *(int(x or 0) for x in r[1:7]), round(r[7] or 0.0, 1)), strict=True))
            for r in rows]


def voicemails(con: sqlite3.Connection, f: VoicemailFilter, boxes: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Voicemail messages not deleted that match `f`, in `boxes` (None: every box), newest
    first: the voicemails table's rows (id, call_id, box, caller, path, started_at, seconds,
    heard, heard_at, heard_by, deleted_at, deleted_by)."""
    clause, params = f.where(boxes)
    sql = f"SELECT * FROM voicemails{clause} ORDER BY started_at DESC, id DESC"
    if f.limit:
        sql += " LIMIT ?"
        params.append(int(f.limit))
    return [dict(r) for r in con.execute(sql, params)]


def voicemail(con: sqlite3.Connection, message_id: int) -> dict[str, Any] | None:
    """One voicemail message's row, or None if there is none or it is deleted."""
    row = con.execute("SELECT * FROM voicemails WHERE id=? AND deleted_at IS NULL", (message_id,)).fetchone()
    return dict(row) if row is not None else None


def voicemail_recorded(con: sqlite3.Connection, call_id: str, path: str) -> dict[str, Any] | None:
    """The message a call recorded into `path` (its newest row), deleted or not; None if not stored."""
    row = con.execute("SELECT * FROM voicemails WHERE call_id=? AND path=? ORDER BY id DESC LIMIT 1",
                      (call_id, path)).fetchone()
    return dict(row) if row is not None else None


def voicemail_counts(con: sqlite3.Connection, boxes: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
    """box -> (new, heard) messages not deleted (RFC 3842's new/old), over `boxes` (None:
    every box); a box with no message is left out. One pass over the voicemails_live index."""
    sql = "SELECT box, heard, COUNT(*) FROM voicemails WHERE deleted_at IS NULL"
    params: list[Any] = []
    if boxes is not None:
        names = sorted(boxes)
        if not names:
            return {}
        sql += f" AND box IN ({','.join('?' * len(names))})"
        params = names
    out: dict[str, list[int]] = {}
    for box, heard, n in con.execute(sql + " GROUP BY box, heard", params):
        out.setdefault(box, [0, 0])[1 if heard else 0] += int(n)
    return {b: (c[0], c[1]) for b, c in out.items()}


def voicemails_left_before(con: sqlite3.Connection, before: float, limit: int) -> list[dict[str, Any]]:
    """Messages not deleted that were left before `before` (epoch seconds), oldest first, at
    most `limit`: what retention deletes."""
    return [dict(r) for r in con.execute(
        "SELECT * FROM voicemails WHERE deleted_at IS NULL AND started_at < ? ORDER BY started_at LIMIT ?",
        (before, limit))]
