"""No record is lost to a store fault: the real daemon keeps its store on a small loop-mounted
ext4 filesystem that refuses writes (the store's files made immutable: Linux refuses
`remount,ro` while the store holds them open for writing, and ext4's own emergency read-only
cannot be undone without unmounting) and then fills up; real SIPp callers wait in a queue
during each spell. After the store recovers every call is there once, complete, with its
queue_log events; during the fault `status` and /metrics show it and the log says so once.
A stop while the store still fails spills the pending records to the runtime dir, and the
next start writes them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.sipp import run_sipp
from tests.test_acd_calls import acd_config
from tests.test_api import TOKENS, http


@contextlib.contextmanager
def loop_ext4(folder: Path, mb: int = 8) -> Iterator[Path]:
    """A fresh ext4 filesystem in a file, loop-mounted on folder/mnt (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop filesystem needs root")
    img, mnt = folder / "store.img", folder / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(mb * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], check=True, capture_output=True)
    out = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["chattr", "-R", "-i", str(mnt)], capture_output=True)
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _checkpoint(db: Path) -> None:
    """Empty the WAL, so the store's next commit needs new blocks (a full disk then refuses it)."""
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def _calls(db: Path) -> list[dict]:  # type: ignore[type-arg]
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        con.close()


def _events(db: Path, table: str, call_id: str) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute(f"SELECT event FROM {table} WHERE call_id=? ORDER BY id", (call_id,))]
    finally:
        con.close()


def _wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(what)


def _metric(d, name: str) -> float:  # type: ignore[no-untyped-def]
    code, _, body = http(d, "GET", "/metrics", "operator")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _three_callers(d, tag: str) -> None:  # type: ignore[no-untyped-def]
    """3 callers wait 1.5 s in the queue (no agent logged in) and hang up: ENTERQUEUE, ABANDON."""
    res = run_sipp("uac_hold.xml", d.edge, d.ports.caller(0), d.dir, service="500", calls=3, rate=10,
                   hold_ms=1500, rtp_sink=d.ports.sink(), timeout=20, caller=f"45{tag}")
    assert res.successful == 3, res.output  # the calls themselves are answered through the fault


def _assert_complete(db: Path, calls: list[dict]) -> None:  # type: ignore[type-arg]
    for c in calls:
        assert c["disposition"] == "abandoned" and c["ended_at"] is not None and c["queue"] == "sales", c
        assert _events(db, "queue_log", c["call_id"]) == ["ENTERQUEUE", "ABANDON"], c["call_id"]
        ev = _events(db, "call_events", c["call_id"])
        assert ev.count("ARRIVED") == 1 and ev.count("ENDED") == 1, ev  # each record exactly once


def _failing_status(d) -> dict:  # type: ignore[no-untyped-def,type-arg]
    st = d.status()
    assert st is not None
    return st["store"]  # type: ignore[no-any-return]


async def test_records_made_while_the_store_refuses_writes_or_is_full_are_written_once_it_recovers(
        daemon_factory, tmp_path: Path):
    with loop_ext4(tmp_path) as mnt:
        d = daemon_factory(workers=2, start=False)
        acd_config(d, {"members": ["alice"]})
        d.config["storage"] = {"path": str(mnt / "ringmaster.db")}
        d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                            "tokens": [{"name": r, "token": t, "role": r} for r, t in TOKENS.items()]}
        d.start()
        db = mnt / "ringmaster.db"
        assert _failing_status(d)["state"] == "ok"

        # --- spell 1: the store's files refuse writes
        _checkpoint(db)
        subprocess.run(["chattr", "+i", str(db), str(mnt / "ringmaster.db-wal")], check=True)
        try:
            _three_callers(d, "11")
            st = _wait(lambda: (s := _failing_status(d))["state"] == "failing" and s["pending"] > 0 and s,
                       10, "status does not show the store failing")
            assert st["since"] is not None and st["write_failures"] >= 1 and st["last_error"]
            assert _metric(d, "ringmaster_store_ok") == 0
            assert _metric(d, "ringmaster_store_pending_records") == st["pending"]
            assert _metric(d, "ringmaster_store_write_failures_total") >= 1
            text = subprocess.run([d.proc.args[0], "-m", "ringmaster.cli", "status", "-c", str(d.config_path)],
                                  capture_output=True, text=True, timeout=15).stdout
            assert "store: FAILING since" in text and "records pending" in text, text
            time.sleep(2.5)  # retries go on: still one error line for the whole fault
        finally:
            subprocess.run(["chattr", "-i", str(db), str(mnt / "ringmaster.db-wal")], check=True)
        d.wait_event("store.recovered", 1, timeout=10)
        assert len(d.events("store.failing")) == 1
        # recovered: what was pending is written (a record made in the same moment, e.g. the
        # store's heartbeat, may still be in the writer's next batch: once seen as pending 1)
        healthy = {"state": "ok", "since": None, "pending": 0, "spilled": 0, "write_failures": 0, "last_error": None}
        _wait(lambda: _failing_status(d) | {"write_failures": 0} == healthy, 5,
              f"store not healthy after recovery: {_failing_status(d)}")
        calls = _calls(db)
        assert len(calls) == 3, calls
        _assert_complete(db, calls)

        # --- spell 2: the filesystem is full
        _checkpoint(db)
        filler = mnt / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        try:
            _three_callers(d, "22")
            st = _wait(lambda: (s := _failing_status(d))["state"] == "failing" and s, 10,
                       "status does not show the full store failing")
            assert "full" in st["last_error"], st
        finally:
            filler.unlink()
        d.wait_event("store.recovered", 2, timeout=10)
        assert len(d.events("store.failing")) == 2
        calls = _calls(db)
        assert len(calls) == 6, calls
        _assert_complete(db, calls)
        # (a record made in the last moment may still be on its way to the next batch)
        _wait(lambda: _metric(d, "ringmaster_store_ok") == 1 and _metric(d, "ringmaster_store_pending_records") == 0,
              5, "the store is not back to ok with nothing pending")

        # --- spell 3: the daemon stops while the store still fails (the records are spilled),
        # starts again while it still fails (takes calls), then the store recovers
        _checkpoint(db)
        spill = d.dir / "run" / "store-spill.jsonl"
        subprocess.run(["chattr", "+i", str(db), str(mnt / "ringmaster.db-wal")], check=True)
        try:
            _three_callers(d, "33")
            _wait(lambda: _failing_status(d)["state"] == "failing", 10, "store not failing")
            assert d.stop() == 0
            assert d.events("store.spilled_at_stop") and spill.exists()
            d._log.close()
            d.start()
            st = _failing_status(d)
            assert st["state"] == "failing" and st["spilled"] > 0, st
            _three_callers(d, "44")
            assert len(_calls(db)) == 6
        finally:
            subprocess.run(["chattr", "-i", str(db), str(mnt / "ringmaster.db-wal")], check=True)
        _wait(lambda: _failing_status(d)["state"] == "ok", 10, "store did not recover after the restart")
        assert not spill.exists()
        calls = _calls(db)
        assert len(calls) == 12, calls
        _assert_complete(db, calls)  # nothing of the first run was taken for an orphan
        con = sqlite3.connect(db)
        try:
            spills = con.execute("SELECT rows FROM store_spills").fetchall()
            runs = con.execute("SELECT stopped_at FROM store_runs ORDER BY id").fetchall()
        finally:
            con.close()
        assert spills and all(n > 0 for (n,) in spills)  # one per spell, each written once
        assert len(runs) == 2 and runs[0][0] is not None  # the first run's clean stop came from the spill
        assert json.dumps(_failing_status(d)["state"]) == '"ok"'
        d.stop()

async def test_past_the_memory_bound_writes_go_to_the_spill_file_and_land_once_in_order(tmp_path: Path, monkeypatch):
    """The store alone on the loop filesystem: 40 writes while its files refuse writes, with
    room for 10 in memory: the rest go to the spill file (another filesystem), and all 40 land
    once, in order, when the store takes writes again. A spill file found again after it was
    written (a crash between the commit and its removal) is not written twice."""
    from ringmaster import store as store_mod

    monkeypatch.setattr(store_mod, "MAX_PENDING", 10)
    monkeypatch.setattr(store_mod, "RETRY_SECONDS", 0.1)
    with loop_ext4(tmp_path) as mnt:
        db, spill = mnt / "s.db", tmp_path / "run" / "store-spill.jsonl"
        s = store_mod.Store(db, spill_path=spill)
        await s.open()
        await s.flush()
        _checkpoint(db)
        subprocess.run(["chattr", "+i", str(db), str(mnt / "s.db-wal")], check=True)
        try:
            for i in range(40):
                s.event(f"c{i:02d}", "NOTE", float(i), n=i)
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            st = s.status()
            assert st["state"] == "failing" and st["pending"] >= 40 and st["spilled"] >= 30, st
            assert spill.exists()
            kept = spill.read_bytes()
        finally:
            subprocess.run(["chattr", "-i", str(db), str(mnt / "s.db-wal")], check=True)
        await asyncio.wait_for(s.flush(), 5)
        assert s.status()["state"] == "ok" and s.status()["pending"] == 0 and not spill.exists()
        await s.close()
        con = sqlite3.connect(db)
        try:
            rows = [r[0] for r in con.execute("SELECT call_id FROM call_events WHERE event='NOTE' ORDER BY id")]
        finally:
            con.close()
        assert rows == [f"c{i:02d}" for i in range(40)]  # each once, in the order made

        spill.write_bytes(kept)  # as if the daemon died before removing the file it had written
        s2 = store_mod.Store(db, spill_path=spill)
        await s2.open()
        await s2.close()
        assert not spill.exists()
        con = sqlite3.connect(db)
        try:
            n = con.execute("SELECT COUNT(*) FROM call_events WHERE event='NOTE'").fetchone()[0]
        finally:
            con.close()
        assert n == 40


async def test_a_store_filesystem_gone_read_only_then_a_crash_loses_nothing_after_the_repair(daemon_factory, tmp_path: Path):
    """ext4 turned read-only under the daemon (`remount,abort`: what `errors=remount-ro` does
    on a disk error; it cannot be undone while mounted). Calls go on; their records go to the
    spill file (runtime dir) at each retry; the daemon is then killed (SIGKILL), and the start
    after the repair (umount, fsck, mount) writes them: all calls complete, queue_log whole."""
    with loop_ext4(tmp_path) as mnt:
        d = daemon_factory(workers=2, start=False)
        acd_config(d, {"members": ["alice"]})
        d.config["storage"] = {"path": str(mnt / "ringmaster.db")}
        d.start()
        db = mnt / "ringmaster.db"
        _three_callers(d, "11")
        _wait(lambda: sum(c["disposition"] != "in_progress" for c in _calls(db)) == 3, 10, "calls not stored")
        subprocess.run(["mount", "-o", "remount,abort", str(mnt)], check=True, capture_output=True)
        _three_callers(d, "22")
        st = _wait(lambda: (s := _failing_status(d))["state"] == "failing" and s, 10, "store not failing")
        assert st["pending"] > 0, st
        assert d.proc is not None and d.proc.poll() is None  # the daemon lives on
        time.sleep(1.5)  # a retry or so: the records are in the spill file
        d.proc.kill()  # and then the daemon dies too (SIGKILL: no stop, no last spill)
        d.proc.wait()
        spill = d.dir / "run" / "store-spill.jsonl"
        assert spill.exists() and d.events("store.spilling")
        # the repair: unmount, check, mount again
        img = tmp_path / "store.img"
        # the killed daemon's children (workers, edge) go with it (PR_SET_PDEATHSIG), not at once
        _wait(lambda: subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0, 10,
              "store filesystem still busy: " + subprocess.run(["fuser", "-vm", str(mnt)], capture_output=True,
                                                              text=True).stderr)
        subprocess.run(["e2fsck", "-fy", str(img)], capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True, capture_output=True)
        d._log.close()
        d.start()
        assert not spill.exists()
        calls = _calls(db)
        assert len(calls) == 6, calls
        _assert_complete(db, calls)
        d.stop()
