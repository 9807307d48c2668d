"""Workers forked from the zygote (workers.spawn: zygote, the default; issue 10 item 3): they
are the zygote's children and the zygote is the daemon's; a killed worker is replaced and its
exit code reported; a killed zygote is restarted, its workers die with it (their calls closed
as on any worker death) and are replaced from the new zygote, and calls are served again;
a forked worker's own memory is a fraction of an exec'd one's (workers.spawn: exec, still
serving calls). Real daemon, Kamailio edge, pjsua2 workers, SIPp and pjsua2 phones."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.helpers.sipp import run_sipp

# Private memory (Private_Clean + Private_Dirty, smaps_rollup) of one idle worker, measured
# 2026-11-30 (docs/engine-findings.md 50): exec'd ~14 MB, forked from the zygote ~3.7 MB
# (the bound leaves room for what the call each pool took left allocated).
FORKED_PRIVATE_MAX_MB = 9.0


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _ppid(pid: int) -> int:
    return int(_stat(pid)[1])


def _rollup(pid: int) -> dict[str, float]:
    """smaps_rollup's figures of one process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) / 1024
    return out


def _private_mb(pid: int) -> float:
    r = _rollup(pid)
    return r["Private_Clean"] + r["Private_Dirty"]


def _wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def _all_alive(d: Any, old: set[int]) -> dict[str, Any] | None:
    st = d.status()
    if st and all(w["alive"] and w["pid"] not in old for w in st["workers"]) \
            and all(w["edge"] == "active" for w in st["workers"]):
        return st
    return None


def _call_ok(d: Any, tmp_path: Path) -> None:
    res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(0), tmp_path, service="100",
                   rtp_sink=d.ports.sink(), timeout=20)
    assert res.successful == 1, res.output


def test_workers_are_children_of_the_zygote_and_a_killed_one_is_replaced_with_its_exit_code(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2, start=False)
    d.config["workers"]["per_process"] = 1  # a process per worker (hosts: tests/test_worker_host.py)
    d.start()
    assert d.proc is not None
    st = d.status()
    pids = [w["pid"] for w in st["workers"]]
    zygote = _ppid(pids[0])
    assert all(_ppid(pid) == zygote for pid in pids)
    assert _ppid(zygote) == d.proc.pid  # the daemon's child: it dies with the daemon
    assert Path(f"/proc/{zygote}/comm").read_text().strip() == "rm-zygote"
    assert sorted(Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids) == ["rm-w1", "rm-w2"]
    assert all(_stat(pid)[3] == str(pid) for pid in pids)  # each in its own session (setsid)

    os.kill(pids[0], signal.SIGKILL)
    st = _wait(lambda: _all_alive(d, {pids[0]}) if d.status()["worker_restarts"] == 1 else None, 10,
               "killed worker replaced")
    died = d.wait_event("worker.died")
    assert died[0]["pid"] == pids[0] and died[0]["code"] == -signal.SIGKILL, died
    replaced = next(w["pid"] for w in st["workers"] if w["pid"] != pids[1])
    assert _ppid(replaced) == zygote  # from the same zygote
    _call_ok(d, tmp_path)


async def test_a_killed_zygote_is_restarted_and_its_workers_calls_are_closed_and_served_again(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2, start=False)
    d.config["workers"]["per_process"] = 1  # a process per worker (hosts: tests/test_worker_host.py)
    d.start()
    st = d.status()
    pids = {w["pid"] for w in st["workers"]}
    zygote = _ppid(next(iter(pids)))
    phone = await Phone("victim", d.ports.caller(1), d.ports.base + 80).start()
    try:
        leg = await phone.call(f"sip:200@{d.edge}")  # a long prompt: the call stays up
        os.kill(zygote, signal.SIGKILL)
        # its workers die with it (PR_SET_PDEATHSIG, SIGKILL); the edge ends their dialogs
        await phone.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=5)
        st = await asyncio.to_thread(_wait, lambda: _all_alive(d, pids), 15, "workers replaced after the zygote died")
        row = d.wait_calls_ended(1)[0]
        assert row["disposition"] == "failed" and row["hangup_cause"] == "worker_died", row
    finally:
        await phone.stop()
    assert d.wait_event("zygote.died")[0]["code"] == -signal.SIGKILL
    assert d.events("zygote.workers_orphaned")
    died = d.events("worker.died")
    # the zygote that reaped them is gone: the code is unknown (255), as asyncio reports it
    assert sorted(e["pid"] for e in died) == sorted(pids) and {e["code"] for e in died} == {255}, died
    new_zygote = _ppid(st["workers"][0]["pid"])
    assert new_zygote != zygote and all(_ppid(w["pid"]) == new_zygote for w in st["workers"])
    assert Path(f"/proc/{new_zygote}/comm").read_text().strip() == "rm-zygote"
    assert not Path(f"/proc/{zygote}").exists() or _stat(zygote)[0] == "Z"
    _call_ok(d, tmp_path)
    assert d.stop() == 0
    # the daemon's clean stop took the new zygote and its workers with it
    for pid in [new_zygote, *(w["pid"] for w in st["workers"])]:
        assert not Path(f"/proc/{pid}").exists() or _stat(pid)[0] == "Z"


def test_a_forked_worker_costs_a_fraction_of_an_execd_ones_private_memory(daemon_factory, tmp_path: Path):
    private: dict[str, list[float]] = {}
    for spawn in ("exec", "zygote"):
        d = daemon_factory(workers=3, start=False)
        d.config["workers"]["spawn"] = spawn
        d.config["workers"]["per_process"] = 1  # a process per worker, both ways
        d.start()
        assert d.proc is not None
        _call_ok(d, tmp_path)  # both paths serve calls
        time.sleep(1.0)  # the worker that took the call is idle again
        st = d.status()
        pids = [w["pid"] for w in st["workers"]]
        parent = {_ppid(pid) for pid in pids}
        if spawn == "exec":
            assert parent == {d.proc.pid}
        else:
            assert len(parent) == 1 and parent != {d.proc.pid}
        private[spawn] = [_private_mb(pid) for pid in pids]
        assert d.stop() == 0
    assert max(private["zygote"]) < FORKED_PRIVATE_MAX_MB, private
    # the import state is what the zygote shares: a forked worker keeps well under half of it
    assert max(private["zygote"]) < 0.5 * min(private["exec"]), private


async def test_a_burst_of_forks_larger_than_the_socket_holds_is_served_in_full():
    """A pool that starts many workers at once sends the zygote more fork requests than its
    socket's send buffer holds (167 measured); each request waits for room instead of failing
    with EAGAIN (a 200-worker pool failed to start on it). Real zygote, stopped (SIGSTOP) while
    the requests are sent so that none is read before the buffer is full; the children get
    settings no worker accepts, so each exits at once (the zygote still forks and reports it)."""
    from ringmaster.zygote import ForkedWorker, Zygote

    count = 300
    zygote = Zygote()
    await zygote.start()
    assert zygote.pid is not None
    ours: list[socket.socket] = []
    try:
        requests = []
        os.kill(zygote.pid, signal.SIGSTOP)
        try:
            for i in range(count):
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                ours.append(mine)
                settings = {"name": f"burst{i}", "not_a_worker_setting": "x" * 200}  # a real one's size
                requests.append(asyncio.ensure_future(
                    _closing_after(zygote.fork(settings, theirs, timeout=60), theirs)))
            await asyncio.sleep(0.5)  # every request sent, or waiting for room
        finally:
            os.kill(zygote.pid, signal.SIGCONT)
        workers = await asyncio.gather(*requests, return_exceptions=True)
        failed = [w for w in workers if not isinstance(w, ForkedWorker)]
        assert not failed, (len(failed), failed[:3])
        assert len({w.pid for w in workers}) == count  # type: ignore[union-attr]
        codes = await asyncio.gather(*(w.wait() for w in workers))  # type: ignore[union-attr]
        assert set(codes) == {1}, set(codes)  # each child refused its settings and exited
    finally:
        await zygote.stop()
        for s in ours:
            s.close()


async def _closing_after(request, sock: socket.socket):  # type: ignore[no-untyped-def]
    """The fork request's result; then our copy of the worker's end is closed (it has its own)."""
    try:
        return await request
    finally:
        sock.close()
