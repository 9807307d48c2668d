"""Benchmark of the reads a dashboard polls: GET /api/queues and GET /metrics on a real daemon
whose store holds N days of calls (default 1 and 90 days of 3,000 calls a day; issue 15).

The store is generated with the production schema and indexes (migrations of ringmaster.store):
one calls row and ~3 queue_log rows per call (ENTERQUEUE, CONNECT + COMPLETECALLER, or ABANDON;
a RINGNOANSWER for every tenth), spread evenly over each day up to now, over 20 queues. The
daemon (real Kamailio edge, one worker) then answers the requests; latency is timed at the HTTP
client. The first /api/queues of a run is reported apart: it reads the day (reports.today), the
later ones only the rows stored since.

Before/after: run it with the package of another tree on PYTHONPATH, e.g.
    git archive 122cb37 src | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before/src:. .venv/bin/python -m bench.reports --label before
    PYTHONPATH=src:. .venv/bin/python -m bench.reports --label after
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.engine import figure, percentile
from ringmaster.store import Store
from tests.helpers.daemon import Daemon, Ports, base_config

TOKEN = "bench-reports-" + "t" * 16
QUEUES = [f"q{i:02d}" for i in range(20)]


async def _migrate(db: Path) -> None:
    store = Store(db)
    await store.open()
    await store.close()


def generate(db: Path, days: int, per_day: int, now: float) -> tuple[int, int]:
    """Fill `db` with `days` days of calls ending today (up to `now`); returns (calls, queue_log rows)."""
    asyncio.run(_migrate(db))
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    rng = random.Random(15)
    today = time.mktime(time.localtime(now)[:3] + (0, 0, 0, 0, 0, -1))
    calls: list[tuple[object, ...]] = []
    qlog: list[tuple[object, ...]] = []
    n_calls = n_log = 0
    for d in range(days - 1, -1, -1):
        start = today - d * 86400
        for i in range(per_day):
            at = start + i * 86400 / per_day
            if at >= now - 300:
                break
            cid = f"gen-{d:04d}-{i:05d}"
            q = rng.choice(QUEUES)
            agent = "a" + q[1:]
            wait = min(int(rng.expovariate(1 / 30)), 280)
            abandoned = rng.random() < 0.08
            qlog.append((at, cid, q, "NONE", "ENTERQUEUE", "|1"))
            if i % 10 == 0:
                qlog.append((at + 1, cid, q, agent, "RINGNOANSWER", "15000"))
            if abandoned:
                qlog.append((at + wait, cid, q, "NONE", "ABANDON", f"1|1|{wait}"))
            else:
                qlog.append((at + wait, cid, q, agent, "CONNECT", f"{wait}|{cid}|2"))
                qlog.append((at + wait + 120, cid, q, agent, "COMPLETECALLER", f"{wait}|120|1"))
            calls.append((cid, f"s-{cid}", f"45{rng.randrange(10**8):08d}", "500", "sip:500@x", "w1", "main",
                          at, at + 1, at + wait + 121, "caller_hangup", 200, "caller",
                          "abandoned" if abandoned else "completed", "[]", "{}", q,
                          None if abandoned else agent, float(wait), None if abandoned else 120.0))
            if len(calls) >= 20000:
                n_calls, n_log = n_calls + len(calls), n_log + len(qlog)
                _insert(con, calls, qlog)
                calls, qlog = [], []
    n_calls, n_log = n_calls + len(calls), n_log + len(qlog)
    _insert(con, calls, qlog)
    con.commit()
    con.close()
    return n_calls, n_log


def _insert(con: sqlite3.Connection, calls: list[tuple[object, ...]], qlog: list[tuple[object, ...]]) -> None:
    con.executemany(
        "INSERT INTO calls (call_id, sip_call_id, caller, called, request_uri, worker, flow, arrived_at, answered_at,"
        " ended_at, hangup_cause, hangup_code, hangup_by, disposition, ivr_path, variables, queue, agent,"
        " wait_seconds, talk_seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", calls)
    con.executemany("INSERT INTO queue_log (at, call_id, queue, agent, event, data) VALUES (?,?,?,?,?,?)", qlog)


def _get(port: int, path: str) -> float:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        assert r.status == 200
    return 1000 * (time.perf_counter() - t0)


def measure(days: int, per_day: int, requests: int, ports: Ports, label: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"ringmaster-bench-reports-{days}d-"))
    now = time.time()
    t0 = time.perf_counter()
    n_calls, n_log = generate(tmp / "ringmaster.db", days, per_day, now)
    p = f"{label}_{days}d"
    figure(f"{p}_calls_stored", n_calls, "calls")
    figure(f"{p}_queue_log_rows", n_log, "rows")
    figure(f"{p}_generate_seconds", round(time.perf_counter() - t0, 1), "s")
    figure(f"{p}_store_mb", round((tmp / "ringmaster.db").stat().st_size / 2**20, 1), "MiB")
    t0 = time.perf_counter()
    asyncio.run(_migrate(tmp / "ringmaster.db"))  # what a start costs the store (after: one count of calls)
    figure(f"{p}_store_open_ms", round(1000 * (time.perf_counter() - t0), 1), "ms")
    cfg = base_config(tmp, ports, workers=1)
    cfg["logging"] = {"level": "warning", "format": "json"}
    cfg["http"] = {"listen": f"127.0.0.1:{ports.base + 6}", "tokens": [{"name": "b", "token": TOKEN, "role": "operator"}]}
    cfg["agents"] = {"a" + q[1:]: {"softphone": {"username": "a" + q[1:], "password": f"{q}-secret"}, "auto_login": False}
                     for q in QUEUES}
    cfg["queues"] = {q: {"members": ["a" + q[1:]], "moh": "long"} for q in QUEUES}
    cfg["flows"]["main"] = [{"queue": "q00"}, "hangup"]
    d = Daemon(tmp, ports, cfg)
    t0 = time.perf_counter()
    d.start(timeout=120)
    figure(f"{p}_daemon_start_seconds", round(time.perf_counter() - t0, 2), "s")
    http = ports.base + 6
    try:
        figure(f"{p}_api_queues_first_ms", round(_get(http, "/api/queues"), 1), "ms")
        for path, name in (("/api/queues", "api_queues"), ("/metrics", "metrics")):
            lat = [_get(http, path) for _ in range(requests)]
            figure(f"{p}_{name}_p50_ms", round(percentile(lat, 50), 1), "ms")
            figure(f"{p}_{name}_max_ms", round(max(lat), 1), "ms")
    finally:
        d.stop(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", default="1,90", help="comma-separated store ages in days")
    ap.add_argument("--per-day", type=int, default=3000, help="calls a day")
    ap.add_argument("--requests", type=int, default=20, help="requests of each kind after the first")
    ap.add_argument("--label", default="after", help="prefix of the figures (before / after)")
    ap.add_argument("--port-base", type=int, default=9000)
    args = ap.parse_args()
    for days in (int(x) for x in args.days.split(",")):
        measure(days, args.per_day, args.requests, Ports(args.port_base), args.label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
