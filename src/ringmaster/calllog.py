"""Reading the call log: `ringmaster calls` and `ringmaster events`.

Read-only SQLite connections beside the running daemon (WAL lets readers and the one writer
work at once). Times on the command line: ISO 8601 (`2026-11-23T08:00`, local time if no
zone), or an age (`15m`, `2h`, `7d` ago; `-2h` works too where the shell and argparse allow).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

COLUMNS = ["call_id", "arrived", "caller", "called", "flow", "queue", "agent", "wait_s", "talk_s",
           "disposition", "hangup_by", "hangup_cause", "recording"]
_REL = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])$")


def parse_time(text: str, now: float | None = None) -> float:
    now = time.time() if now is None else now
    m = _REL.match(text.strip())
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected an ISO time (2026-11-23T08:00+01:00) or an age (15m, 2h, 7d), got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return dt.timestamp()


def where(conditions: list[tuple[str, Any, str]]) -> tuple[str, list[Any]]:
    """A WHERE clause from (column, value, operator) triples; a None value is left out."""
    given = [(col, value, op) for col, value, op in conditions if value is not None]
    clause = " AND ".join(f"{col} {op} ?" for col, _, op in given)
    return (" WHERE " + clause if clause else ""), [value for _, value, _ in given]


@dataclass
class CallFilter:
    since: float | None = None
    until: float | None = None
    queue: str | None = None
    agent: str | None = None
    caller: str | None = None
    disposition: str | None = None
    min_wait: float | None = None
    limit: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        return where([("arrived_at", self.since, ">="), ("arrived_at", self.until, "<"),
                      ("queue", self.queue, "="), ("agent", self.agent, "="),
                      ("disposition", self.disposition, "="), ("wait_seconds", self.min_wait, ">="),
                      ("caller", None if self.caller is None else f"%{self.caller}%", "LIKE")])


def connect(db: str | Path) -> sqlite3.Connection:
    if not Path(db).exists():
        raise FileNotFoundError(f"no call log at {db} (has ringmaster run with this config?)")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    con.row_factory = sqlite3.Row
    return con


def query_calls(con: sqlite3.Connection, f: CallFilter, after_id: int = 0) -> list[sqlite3.Row]:
    where, params = f.where()
    if after_id:
        where += (" AND " if where else " WHERE ") + "id > ?"
        params.append(after_id)
    order = " ORDER BY arrived_at, id" + (f" LIMIT {int(f.limit)}" if f.limit else "")
    return list(con.execute(f"SELECT * FROM calls{where}{order}", params))


def row_view(r: sqlite3.Row) -> dict[str, Any]:
    def rnd(v: Any) -> Any:
        return round(v, 1) if isinstance(v, float) else v

    return {"call_id": r["call_id"], "arrived": datetime.fromtimestamp(r["arrived_at"]).isoformat(timespec="seconds"),
            "caller": r["caller"], "called": r["called"], "flow": r["flow"], "queue": r["queue"], "agent": r["agent"],
            "wait_s": rnd(r["wait_seconds"]), "talk_s": rnd(r["talk_seconds"]), "disposition": r["disposition"],
            "hangup_by": r["hangup_by"], "hangup_cause": r["hangup_cause"], "recording": r["recording"]}


def render(rows: list[dict[str, Any]], fmt: str, header: bool = True, columns: list[str] | None = None) -> str:
    columns = columns or COLUMNS
    if fmt == "json":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        if header:
            w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    shown = [c for c in columns if c != "recording"]
    cells = [[("" if r[c] is None else str(r[c])) for c in shown] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(shown)]
    lines = []
    if header:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(shown)).rstrip())
    lines += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in cells]
    return "".join(line + "\n" for line in lines)


def follow(con: sqlite3.Connection, f: CallFilter, fmt: str, poll: float = 0.5) -> Iterator[str]:
    """New ended calls as they are stored (a reader of another process's file can only poll)."""
    seen = 0
    last = con.execute("SELECT COALESCE(MAX(id), 0) FROM calls").fetchone()[0]
    f = CallFilter(**{**f.__dict__, "limit": None})
    pending: dict[int, sqlite3.Row] = {}
    while True:
        for r in query_calls(con, f, after_id=last):
            pending[r["id"]] = r
            last = max(last, r["id"])
        done = []
        for rid in sorted(pending):
            row = con.execute("SELECT * FROM calls WHERE id=?", (rid,)).fetchone()
            if row is not None and row["disposition"] != "in_progress":
                done.append(row_view(row))
                del pending[rid]
        if done:
            yield render(done, fmt, header=seen == 0 and fmt != "table")
            seen += len(done)
        time.sleep(poll)


def queue_log_lines(con: sqlite3.Connection, since: float | None, until: float | None, queue: str | None,
                    table: str = "queue_log", id_column: str = "call_id") -> Iterator[str]:
    """Asterisk's queue_log format: epoch|callid|queuename|agent|event|data1|data2|...
    (table task_log, id_column task_id: the same for chat and email tasks)."""
    clause, params = where([("at", since, ">="), ("at", until, "<"), ("queue", queue, "=")])
    for r in con.execute(f"SELECT at, {id_column} AS xid, queue, agent, event, data FROM {table}{clause}"
                         " ORDER BY at, id", params):
        data = f"|{r['data']}" if r["data"] != "" else ""
        yield f"{int(r['at'])}|{r['xid']}|{r['queue']}|{r['agent']}|{r['event']}{data}"
