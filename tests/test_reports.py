"""The reports module on call logs written by the real Store: today's figures kept by reading
only the new rows equal the figures computed from the whole day, whatever the interleaving of
reads and writes; the CLI and the API's filter give the same calls; a caller ID with LIKE's
wildcards matches only itself; `calls --follow` prints a call once, when it ends."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringmaster.reports import CallFilter, FilterError, TaskFilter, reads
from ringmaster.reports.stats import as_dicts, compute
from ringmaster.reports.today import TodayFigures, local_midnight, next_midnight
from ringmaster.store import Store

CLI = [sys.executable, "-m", "ringmaster.cli"]
SL = {"sales": 20.0, "support": 30.0}
WRAPUP = {"sales": 5.0, "support": 0.0}


def _events(rng: random.Random, start: float, n: int) -> list[tuple[float, str, str, str, str, tuple[object, ...]]]:
    """n calls' queue_log events from `start` on, some before midnight of the day they end in."""
    out: list[tuple[float, str, str, str, str, tuple[object, ...]]] = []
    for i in range(n):
        at = start + i * 37.0
        q = rng.choice(["sales", "support"])
        cid = f"c{i}"
        out.append((at, cid, q, "NONE", "ENTERQUEUE", ("", 1)))
        wait = rng.randrange(0, 60)
        end = rng.random()
        if end < 0.6:
            out.append((at + wait, cid, q, "alice", "CONNECT", (wait, "", 1)))
            out.append((at + wait + 30, cid, q, "alice", rng.choice(["COMPLETEAGENT", "COMPLETECALLER"]), (wait, 30, 1)))
        elif end < 0.8:
            out.append((at + wait, cid, q, "NONE", "ABANDON", (1, 1, wait)))
        elif end < 0.9:
            out.append((at + wait, cid, q, "NONE", "EXITWITHTIMEOUT", (1, 1, wait)))
        else:
            out.append((at + wait, cid, q, "NONE", "EXITWITHKEY", ("1", 1, 1, wait)))
    return sorted(out, key=lambda e: e[0])


def test_today_figures_read_only_new_rows_and_equal_the_whole_day(tmp_path: Path):
    db = tmp_path / "calls.db"
    now = time.time()
    midnight = local_midnight(now)
    rng = random.Random(3)
    events = _events(rng, midnight - 3600, 200)  # an hour of yesterday, then today
    events = [e for e in events if e[0] < now]
    cut = sorted(rng.sample(range(len(events)), 6)) + [len(events)]

    async def write(rows: list[tuple[float, str, str, str, str, tuple[object, ...]]]) -> None:
        store = Store(db)
        await store.open()
        for at, cid, q, agent, event, data in rows:
            store.queue_log(at, cid, q, agent, event, data)
        await store.close()

    today = TodayFigures()
    done = 0
    asyncio.run(write([]))
    con = reads.connect(db)
    for upto in cut:  # reads interleaved with writes: each read sees exactly the rows stored so far
        asyncio.run(write(events[done:upto]))
        got = today.read(con, now, SL, WRAPUP)
        assert today.rows_read <= upto - done or done == 0
        whole = [(at, cid, q, agent, ev, "|".join(str(d) for d in data))
                 for at, cid, q, agent, ev, data in events[:upto]]
        want, _ = compute(whole, midnight, next_midnight(now), SL, WRAPUP)
        assert as_dicts(sorted(got.values(), key=lambda s: s.queue), [])["queues"] == as_dicts(want, [])["queues"]
        done = upto
    assert sum(s.offered for s in got.values()) == sum(1 for e in events if e[4] == "ENTERQUEUE" and e[0] >= midnight)
    # a read with nothing new reads nothing; a change of service levels reads the day again
    today.read(con, now, SL, WRAPUP)
    assert today.rows_read == 0
    strict = {"sales": 1.0, "support": 1.0}
    got = today.read(con, now, strict, WRAPUP)
    whole = [(at, cid, q, agent, ev, "|".join(str(d) for d in data)) for at, cid, q, agent, ev, data in events]
    want, _ = compute(whole, midnight, next_midnight(now), strict, WRAPUP)
    assert {s.queue: s.answered_in_sl for s in want} == {n: s.answered_in_sl for n, s in got.items()}


@pytest.fixture
def calllog(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "rm.yaml").write_text("storage: {path: calls.db}\npaths: {prompts: prompts, runtime: run}\n")

    async def fill() -> None:
        store = Store(tmp_path / "calls.db")
        await store.open()
        t0 = time.time() - 3000
        for i, (caller, queue, disp) in enumerate([("4511", "sales", "completed"), ("45%1", "sales", "abandoned"),
                                                   ("4521", "support", "completed"), ("45_1", "sales", "completed")]):
            cid = f"c{i}"
            store.call_arrived(cid, f"sip-{cid}", caller, "500", "sip:500@x", "w1", t0 + 100 * i)
            store.call_queued(cid, queue)
            store.call_ended(cid, t0 + 100 * i + 50, disp, "caller_hangup", 200, "caller", ["main:0:queue"], {})
        store.task_created("t1", "chat", "sales", 0, {}, None, {"text": "hi"}, t0)
        await store.close()

    asyncio.run(fill())
    return tmp_path


def test_cli_and_api_filters_give_the_same_calls(calllog: Path):
    def cli(*args: str) -> list[dict[str, object]]:
        out = subprocess.run([*CLI, *args, "-c", str(calllog / "rm.yaml"), "--format", "json"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]

    con = reads.connect(calllog / "calls.db")
    for cli_args, query in ((["--queue", "sales"], {"queue": "sales"}),
                            (["--disposition", "completed", "--since", "1h"], {"disposition": "completed", "since": "1h"}),
                            (["--caller", "%"], {"caller": "%"}), (["--caller", "_"], {"caller": "_"}),
                            (["--queue", "sales", "--limit", "2"], {"queue": "sales", "limit": "2"})):
        from_cli = [c["call_id"] for c in cli("calls", *cli_args)]
        from_api = [c["call_id"] for c in reads.calls(con, CallFilter.from_query(query))]
        if "limit" in query:  # the API's answer is the newest first, the CLI's the oldest first
            assert len(from_cli) == len(from_api) == 2
        else:
            assert from_cli == list(reversed(from_api)), (cli_args, from_cli, from_api)
    assert [c["caller"] for c in reads.calls(con, CallFilter(caller="%"))] == ["45%1"]  # not every call
    assert [c["caller"] for c in reads.calls(con, CallFilter(caller="_"))] == ["45_1"]
    assert [t["task_id"] for t in reads.tasks(con, TaskFilter.from_query({"channel": "chat"}))] == ["t1"]
    assert cli("tasks", "--channel", "chat")[0]["task_id"] == "t1"


@pytest.mark.parametrize("query, named", [({"colour": "red"}, "unknown parameter"), ({"limit": "0"}, "limit"),
                                          ({"limit": "1" * 5000}, "limit"), ({"since": "yesterday"}, "since"),
                                          ({"since": "0001-01-01"}, "since"), ({"min_wait": "nan"}, "min_wait"),
                                          ({"min_wait": "1e999"}, "min_wait"), ({"disposition": "x"}, "disposition"),
                                          ({"caller": "a\x00b"}, "caller")])
def test_a_bad_filter_value_is_refused_naming_the_parameter(query: dict[str, str], named: str):
    with pytest.raises(FilterError) as exc:
        CallFilter.from_query(query)
    assert named in str(exc.value)


def test_the_cli_refuses_a_bad_time_with_the_reason(calllog: Path):
    out = subprocess.run([*CLI, "calls", "-c", str(calllog / "rm.yaml"), "--since", "yesterday"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "expected an ISO time" in out.stderr


def test_follow_prints_each_call_once_when_it_ends_not_before(calllog: Path):
    proc = subprocess.Popen([*CLI, "calls", "-c", str(calllog / "rm.yaml"), "--follow", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # it has read where the log ends: older calls are not printed again

        async def write(end: bool) -> None:
            store = Store(calllog / "calls.db")
            await store.open()
            if not end:
                store.call_arrived("new1", "sip-new1", "4599", "500", "sip:500@x", "w1", time.time())
            else:
                store.call_ended("new1", time.time(), "completed", "caller_hangup", 200, "caller", [], {})
            await store.close()

        asyncio.run(write(end=False))
        time.sleep(1.5)  # in progress: not printed yet
        asyncio.run(write(end=True))
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert json.loads(line)["call_id"] == "new1" and json.loads(line)["disposition"] == "completed"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "new1" not in out  # once
