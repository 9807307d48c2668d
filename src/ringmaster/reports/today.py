"""Today's queue figures (since local midnight) for /api/queues and the wallboard, at the same
cost on the first day and the thousandth.

The first read of a day reads that day's queue_log rows (the `at` index bounds it to one day);
every later read reads only the rows stored since (by row id, the primary key) and feeds them
to a running stats.Tally. So a read costs the rows stored since the last one, never the history
(measured in docs/engine-findings.md, bench/reports.py).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta

from ringmaster.reports.stats import QueueStats, Tally


def local_midnight(now: float) -> float:
    """Epoch seconds of the local midnight that starts the day holding `now`."""
    return time.mktime(time.localtime(now)[:3] + (0, 0, 0, 0, 0, -1))


def next_midnight(now: float) -> float:
    """Epoch seconds of the local midnight that ends the day holding `now` (23-25 h later on
    days the clocks change)."""
    day = datetime.fromtimestamp(local_midnight(now)).date() + timedelta(days=1)
    return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))


class TodayFigures:
    """The running figures of today. Not thread-safe: one reader (reports.reader's thread)."""

    def __init__(self) -> None:
        self._tally: Tally | None = None
        self._day: tuple[float, float] = (0.0, 0.0)
        self._settings: tuple[dict[str, float], dict[str, float]] = ({}, {})
        self._last_id = 0
        self.rows_read = 0  # rows the last read() fed (what it cost)

    def read(self, con: sqlite3.Connection, now: float, service_levels: dict[str, float],
             wrapups: dict[str, float]) -> dict[str, QueueStats]:
        """queue -> its figures from local midnight to now. service_levels, wrapups: queue ->
        seconds (the config's); a change of them, or a new day, starts the day's tally again."""
        start = local_midnight(now)
        if (self._tally is None or self._day[0] != start
                or self._settings != (service_levels, wrapups)):
            end = next_midnight(now)
            self._tally = Tally(start, end, dict(service_levels), dict(wrapups))
            self._day, self._settings = (start, end), (dict(service_levels), dict(wrapups))
            top = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM queue_log").fetchone()[0])
            rows = con.execute("SELECT id, at, queue, agent, event, data FROM queue_log"
                               " WHERE at >= ? AND at < ? AND id <= ? ORDER BY at, id", (start, end, top)).fetchall()
            self._last_id = top
        else:
            rows = con.execute("SELECT id, at, queue, agent, event, data FROM queue_log WHERE id > ? ORDER BY id",
                               (self._last_id,)).fetchall()
        for rid, at, queue, agent, event, data in rows:
            self._last_id = max(self._last_id, rid)
            if self._day[0] <= at < self._day[1]:
                self._tally.add(at, queue, agent, event, data)
        self.rows_read = len(rows)
        queues, _ = self._tally.result(now)
        return {s.queue: s for s in queues}
