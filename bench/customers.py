"""Benchmark of an offer's customer context: the history read every ring and chat offer waits
for (docs/customers.md), on a store of N calls and N/6 tasks over N/10 customers.

The store has the production schema (Store's migrations); rows are inserted directly. Timed:
reads.customer(key, 5, exclude) (what an offer reads), the whole history (the API and CLI), and
CustomerBook.context (the same read through its ReportReader thread, as the daemon does).

    PYTHONPATH=src:. .venv/bin/python -m bench.customers --calls 300000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.engine import figure, percentile
from ringmaster.config import CustomersConfig
from ringmaster.customers import CustomerBook
from ringmaster.reports import customers as reads
from ringmaster.store import Store


async def _migrate(db: Path) -> None:
    store = Store(db)
    await store.open()
    await store.close()


def fill(db: Path, calls: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    customers = max(1, calls // 10)
    keys = [f"+4520{i:06d}" for i in range(customers)]
    con = sqlite3.connect(db)
    now = time.time()
    con.executemany("INSERT INTO customers (id, created_at, updated_at) VALUES (?,?,?)",
                    [(f"c-{i}", now, now) for i in range(customers)])
    con.executemany("INSERT INTO customer_keys (key, kind, customer_id, added_at) VALUES (?,?,?,?)",
                    [(k, "phone", f"c-{i}", now) for i, k in enumerate(keys)])
    rows = []
    for n in range(calls):
        at = now - 90 * 86400 * rnd.random()
        rows.append((f"call-{n}", "x", keys[rnd.randrange(customers)][1:], "500", "sip:500@x", "w1", at, at + 60,
                     "completed", "sales", "alice", 5.0, 55.0, keys[rnd.randrange(customers)]))
    con.executemany("INSERT INTO calls (call_id, sip_call_id, caller, called, request_uri, worker, arrived_at, ended_at,"
                    " disposition, queue, agent, wait_seconds, talk_seconds, customer_key)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.executemany("INSERT INTO wrapups (kind, ref, agent, code, notes, at) VALUES ('call',?,?,?,?,?)",
                    [(r[0], "alice", "sale", "notes " * 20, r[7]) for r in rows[::3]])
    con.executemany("INSERT INTO tasks (task_id, channel, queue, created_at, enqueued_at, state, agent, customer_key)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    [(f"t-{n}", "chat", "sales", now - 90 * 86400 * rnd.random(), now, "completed", "bob",
                      keys[rnd.randrange(customers)]) for n in range(calls // 6)])
    con.commit()
    con.close()
    return keys


def timed(fn, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=500)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-customers-"))
    try:
        db = folder / "rm.db"
        await _migrate(db)
        t = time.perf_counter()
        keys = fill(db, args.calls)
        figure("store_calls", args.calls, "calls")
        figure("store_tasks", args.calls // 6, "tasks")
        figure("store_customers", len(keys), "customers")
        figure("store_size", round(db.stat().st_size / 1e6), "MB")
        figure("store_fill", round(time.perf_counter() - t, 1), "s")
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rnd = random.Random(1)
        offer = timed(lambda: reads.customer(con, rnd.choice(keys), 5, "call-1"), args.runs)
        whole = timed(lambda: reads.customer(con, rnd.choice(keys)), args.runs)
        figure("offer_read_last5_p50", round(percentile(offer, 50), 2), "ms")
        figure("offer_read_last5_p99", round(percentile(offer, 99), 2), "ms")
        figure("whole_history_p50", round(percentile(whole, 50), 2), "ms")
        figure("whole_history_p99", round(percentile(whole, 99), 2), "ms")
        store = Store(db)
        await store.open()
        book = CustomerBook(CustomersConfig(), store, str(db))
        await book.start()
        via = []
        for _ in range(args.runs):
            t = time.perf_counter()
            await book.context(rnd.choice(keys), "call-1")
            via.append((time.perf_counter() - t) * 1000)
        figure("customerbook_context_p50", round(percentile(via, 50), 2), "ms")
        figure("customerbook_context_p99", round(percentile(via, 99), 2), "ms")
        await book.stop()
        await store.close()
        con.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
