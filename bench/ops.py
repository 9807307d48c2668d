"""Benchmark of the operator side: call-log queries through the HTTP API over 1,000,000 stored
calls (generated into a real store, same schema and indexes as production).

Each query asks for one queue's calls in a random 1-hour window of a 30-day log (newest first,
limit 100), as an operator's screen does. Latency is measured at the HTTP client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.engine import figure, percentile
from ringmaster.store import Store
from tests.helpers.daemon import Daemon, Ports, base_config

TOKEN = "bench-" + "t" * 20
DAYS = 30


def generate(db: Path, calls: int, queues: int) -> float:
    asyncio.run(_migrate(db))
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    start = time.time() - DAYS * 86400
    rng = random.Random(1)
    t0 = time.perf_counter()
    batch = []
    for i in range(calls):
        at = start + i * (DAYS * 86400 / calls)
        q = f"q{rng.randrange(queues):02d}"
        wait = rng.expovariate(1 / 30)
        disp = "abandoned" if rng.random() < 0.08 else "completed"
        batch.append((f"gen-{i:07d}", f"s{i}", f"45{rng.randrange(10**8):08d}", "500", "sip:500@x", "w1", "main",
                      at, at + 1, at + 1 + wait + 120, "caller_hangup", 200, "caller", disp, "[]", "{}", q,
                      None if disp == "abandoned" else f"ag{rng.randrange(200):03d}", wait, 120.0))
        if len(batch) == 20000:
            _insert(con, batch)
            batch = []
    if batch:
        _insert(con, batch)
    con.commit()
    con.close()
    return time.perf_counter() - t0


def _insert(con: sqlite3.Connection, rows: list[tuple]) -> None:  # type: ignore[type-arg]
    con.executemany(
        "INSERT INTO calls (call_id, sip_call_id, caller, called, request_uri, worker, flow, arrived_at, answered_at,"
        " ended_at, hangup_cause, hangup_code, hangup_by, disposition, ivr_path, variables, queue, agent,"
        " wait_seconds, talk_seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)


async def _migrate(db: Path) -> None:
    store = Store(db)
    await store.open()
    await store.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--wallboard-rate", type=float, default=50.0, help="calls/s flowing while the wallboard is timed")
    ap.add_argument("--no-wallboard", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ringmaster-bench-ops-"))
    ports = Ports(38000)
    cfg = base_config(tmp, ports, workers=1)
    cfg["workers"]["sip_port_base"] = 38010
    cfg["logging"] = {"level": "warning", "format": "json"}
    cfg["http"] = {"listen": f"127.0.0.1:{ports.base + 6}", "tokens": [{"name": "b", "token": TOKEN, "role": "operator"}]}
    seconds = generate(tmp / "ringmaster.db", args.calls, 20)
    figure("generated_calls", args.calls, "calls")
    figure("generate_seconds", round(seconds, 1), "s")
    d = Daemon(tmp, ports, cfg)
    d.start(timeout=60)
    rng = random.Random(2)
    lat, sizes = [], []
    try:
        now = time.time()
        for _ in range(args.queries):
            since = now - rng.uniform(3600, DAYS * 86400)
            q = f"q{rng.randrange(20):02d}"
            url = (f"http://127.0.0.1:{ports.base + 6}/api/calls?queue={q}&limit=100"
                   f"&since={time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(since))}"
                   f"&until={time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(since + 3600))}")
            req = urllib.request.Request(url.replace("+", "%2B"), headers={"Authorization": f"Bearer {TOKEN}"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
            lat.append(1000 * (time.perf_counter() - t0))
            sizes.append(json.loads(body)["count"])
    finally:
        code = d.stop(timeout=60)
    figure("queries", len(lat), "queries")
    figure("rows_per_query_mean", round(sum(sizes) / len(sizes), 1), "calls")
    figure("calllog_query_p50", round(percentile(lat, 50), 1), "ms")
    figure("calllog_query_p99", round(percentile(lat, 99), 1), "ms")
    figure("daemon_exit_code", code)
    if not args.no_wallboard:
        from bench import wallboard

        wallboard.run(rate=args.wallboard_rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
