"""Closing what a crash left open, at the next start: the calls still `in_progress`, their
queue_log entries without an outcome, and their offers (rings) without a closing event.

Asterisk-style queue_log reports pair every ENTERQUEUE with one outcome and every offer with
how it ended; a call cut by a crash has neither, and reports count it as still waiting for
ever. Each is closed at the moment the previous run was last known alive (its heartbeat in
`store_runs`, or its last record if later), not at the restart: the downtime is not counted as
anyone's wait or talk time.

The events written, with the data fields app_queue writes for them:
- a caller never connected: ABANDON position|origposition|waittime (the caller did not reach
  an agent; as in Asterisk, a hang-up while waiting is an abandon whatever its cause).
- a caller connected to an agent: COMPLETECALLER holdtime|calltime|origposition. Neither side
  hung up; COMPLETEAGENT is what reports count as an agent releasing a caller (a figure
  supervisors act on), so a call the system cut must not count against the agent. The cause
  stays in `calls` (hangup_cause controller_restart).
- an offer (a ring) not answered, refused or cancelled: RINGCANCELED ringtime-ms, before the
  outcome, as app_queue cancels the rings before it logs the caller leaving.

Positions are rebuilt from queue_log (the callers in the same queue who had entered before and
not left yet); priorities are not in queue_log, so a caller with a priority may be shown
further back than it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

OUTCOMES = ("ABANDON", "COMPLETECALLER", "COMPLETEAGENT", "EXITWITHTIMEOUT", "EXITWITHKEY", "EXITEMPTY",
            "TRANSFER")
LEFT_WAITING = (*OUTCOMES, "CONNECT")  # no longer waiting in the queue
RING_ENDS = ("CONNECT", "RINGNOANSWER", "RINGCANCELED")
POSITION_WINDOW = 86_400.0  # callers who entered more than a day before are not counted ahead


@dataclass
class OrphanReport:
    """calls: calls closed as failed; outcomes: ABANDON/COMPLETECALLER written; offers:
    RINGCANCELED written; closed_at: the moment they were closed at (epoch seconds)."""

    calls: int = 0
    outcomes: int = 0
    offers: int = 0
    closed_at: float | None = None


async def last_alive(db: aiosqlite.Connection, heartbeat: float | None) -> float | None:
    """The last moment the previous run is known to have been alive: its heartbeat, or its
    newest record if later (all read through indexes: cheap on a large store)."""
    times = [heartbeat]
    for sql in ("SELECT MAX(at) FROM queue_log", "SELECT at FROM call_events ORDER BY id DESC LIMIT 1",
                "SELECT MAX(at) FROM task_log", "SELECT MAX(arrived_at) FROM calls"):
        async with db.execute(sql) as cur:
            row = await cur.fetchone()
        times.append(row[0] if row else None)
    found = [float(t) for t in times if t is not None]
    return max(found) if found else None


async def close_orphans(db: aiosqlite.Connection, now: float, heartbeat: float | None) -> OrphanReport:
    """Close every call a previous run left in progress, in `calls` and in queue_log, in one
    transaction. heartbeat: the previous run's last heartbeat (None: unknown)."""
    async with db.execute("SELECT call_id, arrived_at FROM calls WHERE disposition='in_progress' ORDER BY id") as cur:
        open_calls = [(str(r[0]), float(r[1])) for r in await cur.fetchall()]
    report = OrphanReport()
    if not open_calls:
        return report
    alive = await last_alive(db, heartbeat)
    base = min(now, alive) if alive is not None else now
    report.closed_at = base
    async with db.execute("SELECT MAX(id) FROM queue_log") as cur:
        row = await cur.fetchone()
    last_id = int(row[0]) if row and row[0] is not None else 0  # what the crash left, before we write
    for call_id, arrived_at in open_calls:
        end = max(base, arrived_at)
        wait, talk = await _close_queue_log(db, call_id, end, last_id, report)
        await db.execute(
            "UPDATE calls SET ended_at=?, disposition='failed', hangup_cause='controller_restart',"
            " wait_seconds=COALESCE(wait_seconds, ?), talk_seconds=COALESCE(talk_seconds, ?)"
            " WHERE call_id=? AND disposition='in_progress'",
            (end, None if wait is None else round(wait, 3), None if talk is None else round(talk, 3), call_id))
        await db.execute("INSERT INTO call_events (call_id, at, event, data) VALUES (?,?,?,?)",
                         (call_id, end, "ENDED", json.dumps({"disposition": "failed", "cause": "controller_restart",
                                                             "closed_at_start": now})))
        report.calls += 1
    await db.commit()
    return report


async def _close_queue_log(db: aiosqlite.Connection, call_id: str, end: float, last_id: int,
                           report: OrphanReport) -> tuple[float | None, float | None]:
    """Write the call's missing RINGCANCELED and outcome; (wait, talk) seconds for `calls`."""
    async with db.execute("SELECT id, at, queue, agent, event, data FROM queue_log WHERE call_id=? ORDER BY id",
                          (call_id,)) as cur:
        log = [dict(r) for r in await cur.fetchall()]
    async with db.execute("SELECT at, data FROM call_events WHERE call_id=? AND event='OFFERED' ORDER BY id",
                          (call_id,)) as cur:
        offers = [(float(r[0]), json.loads(r[1])) for r in await cur.fetchall()]
    rows: list[tuple[Any, ...]] = []
    # offers: as many closings per agent as offers; the ones missing are cancelled now
    offered: dict[str, list[tuple[float, str]]] = {}
    for at, data in offers:
        for agent in data.get("agents", []):
            offered.setdefault(str(agent), []).append((at, str(data.get("queue", ""))))
    for agent, times in offered.items():
        closed = sum(1 for r in log if r["agent"] == agent and r["event"] in RING_ENDS)
        for at, queue in times[closed:]:
            rows.append((end, call_id, queue, agent, "RINGCANCELED", str(max(0, round((end - at) * 1000)))))
            report.offers += 1
    enters = [i for i, r in enumerate(log) if r["event"] == "ENTERQUEUE"]
    wait = talk = None
    if enters:
        enter = log[enters[-1]]
        after = log[enters[-1] + 1:]
        if not any(r["event"] in OUTCOMES for r in after):
            connect = next((r for r in reversed(after) if r["event"] == "CONNECT"), None)
            orig = await _ahead(db, call_id, enter, enter["id"]) + 1
            if connect is not None:
                hold = str(connect["data"]).split("|")[0]
                talk = end - float(connect["at"])
                rows.append((end, call_id, enter["queue"], connect["agent"], "COMPLETECALLER",
                             f"{hold}|{round(talk)}|{orig}"))
            else:
                pos = await _ahead(db, call_id, enter, last_id + 1) + 1  # still waiting at the crash
                wait = end - float(enter["at"])
                rows.append((end, call_id, enter["queue"], "NONE", "ABANDON", f"{pos}|{orig}|{round(wait)}"))
            report.outcomes += 1
    for row in rows:
        await db.execute("INSERT INTO queue_log (at, call_id, queue, agent, event, data) VALUES (?,?,?,?,?,?)", row)
    return wait, talk


async def _ahead(db: aiosqlite.Connection, call_id: str, enter: dict[str, Any], until_id: int) -> int:
    """Callers in enter's queue who entered before it and had not left by queue_log row until_id."""
    sql = ("SELECT COUNT(*) FROM queue_log e WHERE e.queue=? AND e.event='ENTERQUEUE' AND e.id<? AND e.at>=?"
           " AND e.call_id!=? AND NOT EXISTS (SELECT 1 FROM queue_log o WHERE o.call_id=e.call_id AND o.id>e.id"
           f" AND o.id<? AND o.event IN ({','.join('?' * len(LEFT_WAITING))}))")
    params = (enter["queue"], enter["id"], float(enter["at"]) - POSITION_WINDOW, call_id, until_id, *LEFT_WAITING)
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0
