"""The pool grows from its warm count under a burst, ahead of the callers, and shrinks back when
idle, with the edge's dispatcher set following at run time and no call failed (real daemon,
Kamailio, pjsua2 workers, SIPp callers)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ringmaster.poolplan import PoolPlan, Retire, Spawn, WorkerView
from tests.helpers.audio import write_tone
from tests.helpers.sipp import sipp_args


def test_the_plan_keeps_spare_workers_ahead_and_retires_the_newest_idle_one():
    plan = PoolPlan(["w1", "w2", "w3", "w4"], warm=1, spare=1, idle_retire=10)
    assert plan.decide([WorkerView("w1", 0)], 0.0) == []
    assert plan.decide([WorkerView("w1", 1)], 1.0) == [Spawn("w2")]  # the only worker took a call
    assert plan.decide([WorkerView("w1", 1), WorkerView("w2", 0, ready=False)], 1.1) == []  # starting: spare
    assert plan.decide([WorkerView("w1", 2), WorkerView("w2", 1)], 2.0) == [Spawn("w3")]
    running = [WorkerView("w1", 0), WorkerView("w2", 0), WorkerView("w3", 0)]
    assert plan.decide(running, 3.0) == []  # idle, but not for idle_retire yet
    assert plan.decide(running, 13.5) == [Retire("w3")]  # newest first
    assert plan.decide(running[:2], 13.6) == [Retire("w2")]  # w2 was idle since 3.0 too
    assert plan.decide(running[:1], 30.0) == []  # never below the warm count
    # a worker that takes a call is not idle any more
    plan2 = PoolPlan(["w1", "w2"], warm=1, spare=0, idle_retire=5)
    assert plan2.decide([WorkerView("w1", 0), WorkerView("w2", 0)], 0.0) == []
    assert plan2.decide([WorkerView("w1", 0), WorkerView("w2", 1)], 4.0) == []
    assert plan2.decide([WorkerView("w1", 0), WorkerView("w2", 0)], 8.0) == []
    assert plan2.decide([WorkerView("w1", 0), WorkerView("w2", 0)], 13.1) == [Retire("w2")]


def _running(d) -> list[str]:  # type: ignore[no-untyped-def]
    st = d.status() or {}
    return sorted(w["name"] for w in st.get("workers", []) if w["alive"])


def test_the_pool_grows_under_a_burst_and_shrinks_back_with_no_call_failed(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    d.config["workers"].update({"max": 4, "spare": 1, "idle_retire": 3})
    write_tone(d.dir / "prompts" / "five.wav", 523, 5.0)
    d.config["flows"]["five"] = [{"play": "five"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "five"})
    d.start()
    assert _running(d) == ["w1"]
    # 6 callers, 2 a second, each on the line 5 s: 3 workers' worth of calls at once
    callers = subprocess.Popen(sipp_args("uac_prompt.xml", d.edge, d.ports.caller(0), service="500", calls=6,
                                         rate=2, rtp_sink=d.ports.sink(), timeout=30),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    most = 1
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and callers.poll() is None:
        most = max(most, len(_running(d)))
        time.sleep(0.2)
    out, _ = callers.communicate(timeout=40)
    assert callers.returncode == 0, out[-2000:]  # every caller answered and hung up by the flow
    assert most >= 3, most
    rows = d.wait_calls_ended(6)
    assert len(rows) == 6 and all(r["disposition"] == "completed" for r in rows), rows
    assert len({r["worker"] for r in rows}) >= 3  # the grown workers took calls
    # idle again: back to the warm worker, and the edge's set with it
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _running(d) != ["w1"]:
        time.sleep(0.3)
    st = d.status()
    assert [w["name"] for w in st["workers"]] == ["w1"], st["workers"]
    assert d.events("pool.grown") and d.events("pool.retired")
    listed = (d.dir / "run" / "edge" / "dispatcher.list").read_text()
    assert listed.count("sip:") == 1 and f":{d.ports.workers} " in listed, listed
    assert d.stop() == 0
