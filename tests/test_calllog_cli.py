"""`ringmaster calls` and `ringmaster events` on a call log written by the real Store."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringmaster.store import Store

CLI = [sys.executable, "-m", "ringmaster.cli"]
T0 = 1_795_000_000.0  # 2026-11-18


@pytest.fixture
def logfile(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    cfg = tmp_path / "rm.yaml"
    cfg.write_text("storage: {path: calls.db}\npaths: {prompts: prompts, runtime: run}\n")

    async def fill() -> None:
        store = Store(tmp_path / "calls.db")
        await store.open()
        calls = [  # call, caller, queue, agent, wait, talk, disposition
            ("c1", "4511111111", "sales", "alice", 5.0, 60.0, "completed"),
            ("c2", "4522222222", "sales", None, 40.0, None, "abandoned"),
            ("c3", "4533333333", "support", "bob", 12.0, 30.0, "completed"),
            ("c4", "4544444444", None, None, None, None, "rejected"),
        ]
        for i, (cid, caller, queue, agent, wait, talk, disp) in enumerate(calls):
            at = T0 + 100 * i
            store.call_arrived(cid, f"sip-{cid}", caller, "500", "sip:500@x", "w1", at)
            if queue:
                store.call_queued(cid, queue)
                store.queue_log(at + 1, cid, queue, "NONE", "ENTERQUEUE", ("", caller))
            if agent:
                store.call_agent(cid, agent, wait)
                store.call_talk(cid, talk)
                store.queue_log(at + 1 + wait, cid, queue, agent, "CONNECT", (int(wait), "", 2))
            elif queue:
                store.call_wait(cid, wait)
                store.queue_log(at + 1 + wait, cid, queue, "NONE", "ABANDON", (1, 1, int(wait)))
            store.call_ended(cid, at + 90, disp, "x", 200, "caller", [], {})
        await store.close()

    asyncio.run(fill())
    return cfg


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=30)


def test_calls_filters_by_queue_agent_disposition_and_wait(logfile: Path):
    out = run("calls", "-c", str(logfile), "--format", "json")
    assert [json.loads(line)["call_id"] for line in out.stdout.splitlines()] == ["c1", "c2", "c3", "c4"]
    out = run("calls", "-c", str(logfile), "--format", "json", "--queue", "sales")
    assert [json.loads(line)["call_id"] for line in out.stdout.splitlines()] == ["c1", "c2"]
    out = run("calls", "-c", str(logfile), "--format", "json", "--disposition", "abandoned")
    assert [json.loads(line)["wait_s"] for line in out.stdout.splitlines()] == [40.0]
    out = run("calls", "-c", str(logfile), "--format", "json", "--min-wait", "10")
    assert [json.loads(line)["call_id"] for line in out.stdout.splitlines()] == ["c2", "c3"]
    out = run("calls", "-c", str(logfile), "--format", "json", "--agent", "bob", "--caller", "4533")
    assert [json.loads(line)["call_id"] for line in out.stdout.splitlines()] == ["c3"]


def test_calls_time_range_and_csv_and_table(logfile: Path):
    out = run("calls", "-c", str(logfile), "--format", "csv", "--since", "2026-11-18T00:00+00:00",
              "--until", f"{time.strftime('%Y-%m-%dT%H:%M:%S+00:00', time.gmtime(T0 + 150))}")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["call_id"] for r in rows] == ["c1", "c2"] and rows[0]["agent"] == "alice" and rows[0]["talk_s"] == "60.0"
    table = run("calls", "-c", str(logfile)).stdout.splitlines()
    assert table[0].split()[:4] == ["call_id", "arrived", "caller", "called"] and len(table) == 5
    assert run("calls", "-c", str(logfile), "--since", "1h").stdout.count("\n") == 1  # header only: all older
    assert run("calls", "-c", str(logfile), "--since=-1h").stdout.count("\n") == 1


def test_events_export_asterisk_queue_log_lines(logfile: Path):
    out = run("events", "-c", str(logfile))
    lines = out.stdout.splitlines()
    assert lines[0] == f"{int(T0 + 1)}|c1|sales|NONE|ENTERQUEUE||4511111111"
    assert f"{int(T0 + 6)}|c1|sales|alice|CONNECT|5||2" in lines
    assert f"{int(T0 + 141)}|c2|sales|NONE|ABANDON|1|1|40" in lines
    assert all(len(line.split("|")) >= 5 for line in lines)
    support = run("events", "-c", str(logfile), "--queue", "support").stdout.splitlines()
    assert support and all("|support|" in line for line in support)


def test_bad_input_is_a_clear_error(logfile: Path, tmp_path: Path):
    bad = run("calls", "-c", str(logfile), "--since", "yesterday")
    assert bad.returncode == 2 and "expected an ISO time" in bad.stderr
    other = tmp_path / "none.yaml"
    other.write_text("storage: {path: nothing.db}\npaths: {prompts: prompts}\n")
    missing = run("calls", "-c", str(other))
    assert missing.returncode == 1 and "no call log at" in missing.stderr


def test_stats_match_the_stored_events_exactly(tmp_path: Path):
    (tmp_path / "prompts").mkdir()
    from tests.helpers.audio import write_tone

    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 0.1)
    cfg = tmp_path / "rm.yaml"
    cfg.write_text("storage: {path: calls.db}\npaths: {prompts: prompts, runtime: run}\n"
                   "agents:\n  alice: {mobile: '+451'}\n  bob: {mobile: '+452'}\n"
                   "queues:\n  sales: {members: [alice, bob], service_level: 20, wrapup: 10}\n")
    t = T0
    ev = [  # (offset s, call, agent, event, data)
        (0, "NONE", "alice", "ADDMEMBER", ()), (0, "NONE", "bob", "ADDMEMBER", ()),
        (10, "c1", "NONE", "ENTERQUEUE", ("", "1")), (15, "c1", "alice", "CONNECT", (5, "", 2)),
        (75, "c1", "alice", "COMPLETECALLER", (5, 60, 1)),
        (20, "c2", "NONE", "ENTERQUEUE", ("", "2")), (23, "c2", "NONE", "ABANDON", (1, 1, 3)),       # short
        (30, "c3", "NONE", "ENTERQUEUE", ("", "3")), (60, "c3", "bob", "RINGNOANSWER", (15000,)),
        (70, "c3", "bob", "CONNECT", (40, "", 1)), (100, "c3", "bob", "COMPLETEAGENT", (40, 30, 1)),
        (40, "c4", "NONE", "ENTERQUEUE", ("", "4")), (90, "c4", "NONE", "ABANDON", (1, 2, 50)),
        (200, "NONE", "alice", "PAUSE", ("lunch",)), (500, "NONE", "alice", "UNPAUSE", ("lunch",)),
        (600, "NONE", "bob", "REMOVEMEMBER", ()),
    ]

    async def fill() -> None:
        store = Store(tmp_path / "calls.db")
        await store.open()
        for off, cid, agent, event, data in sorted(ev, key=lambda e: e[0]):
            store.queue_log(t + off, cid, "sales", agent, event, data)
        await store.close()

    asyncio.run(fill())
    until = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t + 1000))
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
    out = run("stats", "-c", str(cfg), "--since", since, "--until", until, "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    q = data["queues"][0]
    assert (q["offered"], q["answered"], q["abandoned"], q["abandoned_short"]) == (4, 2, 2, 1)
    assert q["answered_in_sl"] == 1 and q["service_level_pct"] == round(100 * 1 / 3, 1)  # 1 of (4 - 1 short)
    assert q["asa"] == 22.5 and q["avg_talk"] == 45.0 and q["aht"] == 55.0 and q["longest_wait"] == 50
    agents = {a["agent"]: a for a in data["agents"]}
    assert agents["alice"]["answered"] == 1 and agents["alice"]["talk_seconds"] == 60
    assert agents["alice"]["login_seconds"] == 1000.0 and agents["alice"]["pause_seconds"] == {"lunch": 300.0}
    assert agents["alice"]["occupancy_pct"] == round(100 * (60 + 10) / (1000 - 300), 1)
    assert agents["bob"]["no_answer"] == 1 and agents["bob"]["login_seconds"] == 600.0
    table = run("stats", "-c", str(cfg), "--since", since, "--until", until).stdout
    assert "sales" in table and "lunch 300.0" in table
