"""Several workers in one process (workers.per_process, default 4; worker.host and
worker.copies): each is a pjsua instance of its own with its own SIP port and calls, all in
one forked process; killing that process takes every worker it runs, whose calls are closed
as on any worker death, and they are replaced; a worker that the pool retires leaves its
host running the others; a request the zygote passed to a host that stops or dies before
taking it is forked into another (the zygote answers only once a host has started it).
Real daemon, Kamailio edge, pjsua2 workers and phones; the last two drive the zygote."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.helpers.sipp import run_sipp


def _wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def _threads(pid: int) -> list[str]:
    return sorted(Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in os.listdir(f"/proc/{pid}/task"))


def _workers(d: Any) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in d.status()["workers"]}


async def test_four_workers_share_one_process_and_each_carries_its_own_calls(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=4)
    workers = _workers(d)
    pids = {w["pid"] for w in workers.values()}
    assert len(pids) == 1, workers
    host = pids.pop()
    assert Path(f"/proc/{host}/comm").read_text().strip() == "rm-host-w1"
    assert {"rm-w1", "rm-w2", "rm-w3", "rm-w4"} <= set(_threads(host)), _threads(host)
    assert len({w["sip"] for w in workers.values()}) == 4  # a SIP port each: four pjsua instances
    phone = await Phone("many", d.ports.caller(0), d.ports.base + 80).start()
    try:
        legs = [await phone.call(f"sip:200@{d.edge}") for _ in range(4)]  # held: the calls stay up
        busy = await asyncio.to_thread(
            _wait, lambda: {n: w["calls"] for n, w in _workers(d).items() if w["calls"]}
            if sum(w["calls"] for w in _workers(d).values()) == 4 else None, 10, "4 calls up")
        # the edge gives a worker at most 2 inbound calls (workers.max_inbound_calls): the four
        # calls are carried by at least two of the host's pjsua instances
        assert len(busy) >= 2 and max(busy.values()) <= 2, busy
        for leg in legs:
            await phone.hangup(leg)
    finally:
        await phone.stop()
    rows = d.wait_calls_ended(4)
    assert [r["hangup_cause"] for r in rows] == ["caller_hangup"] * 4, rows
    assert d.stop() == 0
    assert not Path(f"/proc/{host}").exists() or Path(f"/proc/{host}/stat").read_text().split()[2] == "Z"


async def test_a_killed_host_takes_all_its_workers_calls_and_every_worker_is_replaced(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2)
    host = _workers(d)["w1"]["pid"]
    assert _workers(d)["w2"]["pid"] == host
    phone = await Phone("victims", d.ports.caller(0), d.ports.base + 80).start()
    try:
        legs = [await phone.call(f"sip:200@{d.edge}") for _ in range(3)]
        await asyncio.to_thread(_wait, lambda: all(w["calls"] for w in _workers(d).values()), 10,
                                "a call on each worker")
        os.kill(host, signal.SIGKILL)
        for leg in legs:  # the edge ends every dialog of both workers
            await phone.wait(p.CallState, lambda m, leg=leg: m.leg == leg and m.state == "disconnected", timeout=10)
    finally:
        await phone.stop()
    rows = d.wait_calls_ended(3)
    assert {(r["disposition"], r["hangup_cause"]) for r in rows} == {("failed", "worker_died")}, rows
    died = d.wait_event("worker.died", 2)
    assert sorted((e["worker"], e["pid"], e["code"]) for e in died) == \
        [("w1", host, -signal.SIGKILL), ("w2", host, -signal.SIGKILL)], died
    def all_replaced() -> dict[str, dict[str, Any]] | None:
        ws = _workers(d)
        return ws if all(w["alive"] and w["pid"] != host and w["edge"] == "active" for w in ws.values()) else None

    replaced = await asyncio.to_thread(_wait, all_replaced, 15, "both workers replaced")
    assert len({w["pid"] for w in replaced.values()}) == 1  # in one new host
    res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(1), tmp_path, service="100",
                   rtp_sink=d.ports.sink(), timeout=20)
    assert res.successful == 1, res.output


async def test_a_retired_worker_leaves_its_host_running_the_others(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    d.config["workers"].update({"max": 2, "spare": 1, "idle_retire": 2})
    d.start()
    host = _workers(d)["w1"]["pid"]
    phone = await Phone("one", d.ports.caller(0), d.ports.base + 80).start()
    try:
        leg = await phone.call(f"sip:200@{d.edge}")
        # w1 took the call: the pool grows a spare, into w1's host, which has room
        def w2_alive() -> dict[str, Any] | None:
            w2 = _workers(d).get("w2")
            return w2 if w2 is not None and w2["alive"] else None

        grown = await asyncio.to_thread(_wait, w2_alive, 10, "w2 grown")
        assert grown["pid"] == host
        await phone.hangup(leg)
    finally:
        await phone.stop()
    retired = d.wait_event("pool.retired", timeout=15)[0]
    assert retired["worker"] == "w2" and retired["code"] == 0, retired
    w1 = _workers(d)["w1"]
    assert w1["alive"] and w1["pid"] == host and list(_workers(d)) == ["w1"]
    assert "rm-w2" not in _threads(host)  # its engine's thread has ended, the process runs on
    assert not d.events("worker.died")
    res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(1), tmp_path, service="100",
                   rtp_sink=d.ports.sink(), timeout=20)
    assert res.successful == 1, res.output


def _spec(ports: Any, i: int) -> Any:
    from ringmaster.workerproc import WorkerSpec

    return WorkerSpec(name=f"h{i}", sip_host="127.0.0.1", sip_port=ports.workers + i,
                      rtp_port=ports.base + 200 + 20 * i, rtp_count=20)


async def _host_and_a_second_request(tmp_path: Path, before_cont: str) -> None:
    """A host (2 per process) runs h0; stopped (SIGSTOP), it is sent h1's request, then it is
    either told to stop (SIGTERM: on SIGCONT it refuses the request) or killed (the request is
    never read). Either way h1 must start, in another process, and h0's end be reported."""
    from ringmaster.workerproc import WorkerProcess
    from ringmaster.zygote import Zygote
    from tests.helpers.daemon import allocate_ports

    ports = allocate_ports()
    zygote = Zygote(2, str(tmp_path / "copies"))
    await zygote.start()
    first = WorkerProcess(_spec(ports, 0), lambda wp, msg: None, zygote=zygote)
    second = WorkerProcess(_spec(ports, 1), lambda wp, msg: None, zygote=zygote)
    try:
        await first.start()
        host = first.pid
        assert host is not None
        os.kill(host, signal.SIGSTOP)
        if before_cont == "term":
            os.kill(host, signal.SIGTERM)  # delivered on SIGCONT, before the request is read
        starting = asyncio.ensure_future(second.start(timeout=15))
        await asyncio.sleep(0.5)  # the zygote has passed the request to the stopped host
        assert not starting.done()  # the zygote answers only once a host has started it
        if before_cont == "kill":
            os.kill(host, signal.SIGKILL)
        else:
            os.kill(host, signal.SIGCONT)
        await starting
        assert second.alive and second.pid not in (None, host)
        code = await asyncio.wait_for(first.proc.wait(), 10)  # type: ignore[union-attr]
        assert code == (-signal.SIGKILL if before_cont == "kill" else 0), code
    finally:
        await second.stop()
        await first.stop()
        await zygote.stop()


async def test_a_request_a_stopping_host_refuses_is_forked_into_another(tmp_path: Path):
    await _host_and_a_second_request(tmp_path, "term")


async def test_a_request_a_host_never_read_is_forked_into_another(tmp_path: Path):
    await _host_and_a_second_request(tmp_path, "kill")


async def _two_in_a_host(tmp_path: Path) -> tuple[Any, Any, Any, Any]:
    from ringmaster.workerproc import WorkerProcess
    from ringmaster.zygote import Zygote
    from tests.helpers.daemon import allocate_ports

    ports = allocate_ports()
    zygote = Zygote(2, str(tmp_path / "copies"))
    await zygote.start()
    first = WorkerProcess(_spec(ports, 0), lambda wp, msg: None, zygote=zygote)
    second = WorkerProcess(_spec(ports, 1), lambda wp, msg: None, zygote=zygote)
    await first.start()
    return ports, zygote, first, second


async def test_stopping_a_hosts_first_worker_returns_while_the_other_runs_on(tmp_path: Path):
    """The controller waits for a stopped worker's output pipe to close: a host's first worker
    used to have the host's stdout as its pipe, so stopping or retiring it hung as long as the
    host ran another worker (found by a helper session's tests)."""
    _, zygote, first, second = await _two_in_a_host(tmp_path)
    try:
        await second.start()
        assert second.pid == first.pid
        assert await asyncio.wait_for(first.stop(), 10) == 0
        assert second.alive and Path(f"/proc/{second.pid}").exists()
    finally:
        await second.stop()
        await first.stop()
        await zygote.stop()


async def test_a_worker_that_cannot_start_ends_alone_and_its_host_runs_on(tmp_path: Path):
    """Its SIP port is taken: the engine fails in transportCreate. It carries no call, so it
    ends by itself (code 1); the host and its other worker run on."""
    import socket

    ports, zygote, first, second = await _two_in_a_host(tmp_path)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", ports.workers + 1))
    try:
        try:
            await second.start(timeout=10)
            raise AssertionError("a worker whose SIP port is taken started")
        except RuntimeError as exc:
            assert "exited with 1" in str(exc), exc
        await asyncio.sleep(0.5)
        assert first.alive and first.proc.returncode is None  # type: ignore[union-attr]
    finally:
        taken.close()
        await second.stop()
        await first.stop()
        await zygote.stop()


async def test_a_fork_given_up_while_its_host_was_stopped_does_not_kill_the_host(tmp_path: Path):
    """The host is stopped (SIGSTOP) while a second worker is asked of it: the fork times out.
    When the host resumes and starts that engine, nobody drives it: it must end alone (its
    socket is closed), not by a SIGKILL of the shared pid, which took the first worker too."""
    _, zygote, first, second = await _two_in_a_host(tmp_path)
    host = first.pid
    assert host is not None
    try:
        os.kill(host, signal.SIGSTOP)
        try:
            await second.start(timeout=1.5)
            raise AssertionError("a worker started in a stopped host")
        except TimeoutError:
            pass  # the zygote had no answer from the host in time
        finally:
            os.kill(host, signal.SIGCONT)
        await asyncio.sleep(2.0)  # the host has started the engine and been told "forked"
        assert first.alive and first.proc.returncode is None  # type: ignore[union-attr]
    finally:
        await second.stop()
        await first.stop()
        await zygote.stop()
