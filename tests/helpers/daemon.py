"""Run the real `ringmaster run` daemon (real Kamailio edge, real pjsua2 workers) on a
private block of loopback ports, with a config written for the test."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.audio import write_tone

_blocks = itertools.count(0)
PORT_BASE = int(os.environ.get("RINGMASTER_TEST_PORT_BASE", "21000"))
BLOCK = 400


@dataclass
class Ports:
    """A block of loopback ports for one test: edge +0, WSS +4, rtpengine control +5, HTTP +6,
    browser debugging +7, MQTT +8, workers' SIP +10.., SIPp and phones' SIP +30..59, RTP sinks
    +60..79, test phones' RTP +80..199, workers' RTP +200..299, rtpengine's media +300..399."""

    base: int

    @property
    def edge(self) -> int:
        return self.base

    @property
    def workers(self) -> int:
        return self.base + 10

    def caller(self, i: int = 0) -> int:
        return self.base + 30 + i  # SIPp / phones: base+30..+59

    def sink(self, i: int = 0) -> int:
        return self.base + 60 + i  # RTP sinks: base+60..+79

    @property
    def rtp(self) -> str:
        """Worker RTP: apart from the test phones' (agents_up puts them at base+100+16*i; a
        customer test that let the daemon's workers take base+100.. collided with them)."""
        return f"{self.base + 200}-{self.base + 299}"

    @property
    def wss(self) -> int:
        """The edge's WSS port for browser phones (sip.webrtc)."""
        return self.base + 4

    @property
    def rtpengine_ng(self) -> int:
        """rtpengine's control port."""
        return self.base + 5

    @property
    def rtpengine(self) -> str:
        """rtpengine's media ports."""
        return f"{self.base + 300}-{self.base + 399}"

    @property
    def rtp_spare(self) -> str:
        """The same as `rtp` (worker RTP clear of the agent phones'): tests that asked for it
        when the default overlapped the phones still say so."""
        return self.rtp


def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _usable_bases() -> list[int]:
    """Block bases that stay out of the kernel's ephemeral range: a client socket that happened
    to get an ephemeral port inside a test's block made Kamailio fail to bind its TCP listener
    ("Address already in use", once in a full run). Blocks are reused after the last one."""
    lo, hi = _ephemeral()
    # RINGMASTER_TEST_PORT_END keeps runs started side by side (separate checkouts) apart
    end = int(os.environ.get("RINGMASTER_TEST_PORT_END", "65000"))
    # workers.sip_port_base (base + 10) may be at most 65000 (config.py)
    return [b for b in range(PORT_BASE, min(end, 65000) - BLOCK + 1, BLOCK) if b + BLOCK <= lo or b > hi]


_bases = _usable_bases() or [PORT_BASE]


# Under pytest-xdist (scripts/test runs two processes) each process takes every Nth block, so
# two tests running at once never share a port.
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
_XDIST_COUNT = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


# Each process cycles through its own share of the blocks: with an odd number of blocks the
# old "every Nth block, modulo all" wrapped into the other process's share and two tests ran on
# one block at once (CI: workers failed to bind their SIP port near the end of a full run).
_own_bases = _bases[_XDIST_INDEX::_XDIST_COUNT] or _bases


def allocate_ports() -> Ports:
    return Ports(_own_bases[next(_blocks) % len(_own_bases)])


TONES = {"welcome": 440, "other": 1000, "long": 620}


def make_prompts(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_tone(folder / "welcome.wav", TONES["welcome"], 1.5)
    write_tone(folder / "other.wav", TONES["other"], 1.5)
    write_tone(folder / "long.wav", TONES["long"], 20.0)
    return folder


def base_config(tmp: Path, ports: Ports, workers: int = 2, trusted: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    make_prompts(tmp / "prompts")
    return {
        "sip": {"listen": f"127.0.0.1:{ports.edge}",
                "trusted": trusted if trusted is not None else
                [{"name": "test-callers", "address": f"127.0.0.1:{ports.caller(i)}"} for i in range(10)]},
        "workers": {"count": workers, "sip_port_base": ports.workers, "rtp_ports": ports.rtp,
                    "address": "127.0.0.1"},
        "storage": {"path": "ringmaster.db"},
        "paths": {"prompts": "prompts", "recordings": "recordings", "runtime": "run"},
        "logging": {"level": os.environ.get("RINGMASTER_TEST_LOG", "info"), "format": "json"},
        "flows": {"demo": [{"play": "welcome"}, "hangup"],
                  "hold": [{"play": "long"}, "hangup"]},
        "entry_points": [{"number": "100", "flow": "demo"}, {"number": "200", "flow": "hold"}],
    }


@dataclass
class Daemon:
    dir: Path
    ports: Ports
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    log_lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.dir / "ringmaster.yaml"

    @property
    def db_path(self) -> Path:
        return self.dir / "ringmaster.db"

    @property
    def log_path(self) -> Path:
        return self.dir / "daemon.log"

    @property
    def edge(self) -> str:
        return f"127.0.0.1:{self.ports.edge}"

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self, timeout: float = 40.0) -> None:  # a ceiling: a loaded CI box took 20 s once
        self.write_config()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "ringmaster.cli", "run", "-c", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            st = self.status()
            if st and st.get("ok") and all(w["edge"] == "active" for w in st["workers"]):
                return
            time.sleep(0.1)
        raise RuntimeError(f"daemon not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def status(self) -> dict[str, Any] | None:
        out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "status", "--json", "-c", str(self.config_path)],
                             capture_output=True, text=True, timeout=15)
        if out.returncode not in (0, 1):
            return None
        try:
            return json.loads(out.stdout)
        except json.JSONDecodeError:
            return None

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._report_stuck_stop(timeout)
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def _report_stuck_stop(self, timeout: float) -> None:
        """A daemon that did not stop on SIGTERM within `timeout` s: print (pytest shows it with
        the failure) where each of its threads is, from py-spy, and what its log said since the
        stop began, before it is killed. A rare hang in CI is otherwise only a -9."""
        assert self.proc is not None
        spy = Path(sys.executable).with_name("py-spy")
        try:
            dump = subprocess.run([str(spy), "dump", "--pid", str(self.proc.pid)], capture_output=True,
                                  text=True, timeout=20)
            stacks = dump.stdout + dump.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            stacks = f"py-spy dump failed: {exc}"
        text = self.log_text()
        since = text.rfind('"controller.stopping"')
        tail = text[text.rfind("\n", 0, since) + 1:] if since >= 0 else text[-4000:]
        print(f"daemon pid {self.proc.pid} still running {timeout:g} s after SIGTERM; its threads:\n{stacks}\n"
              f"its log since the stop began:\n{tail[-6000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("event") == name:
                    out.append(rec)
        return out

    def wait_event(self, name: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"log event {name!r} x{count} not seen in {timeout}s; log tail:\n{self.log_text()[-2500:]}")

    def calls(self) -> list[dict[str, Any]]:
        if not self.db_path.exists():
            return []
        con = sqlite3.connect(self.db_path)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute("SELECT * FROM calls ORDER BY id")]
        finally:
            con.close()

    def wait_calls_ended(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.calls()
            if len([r for r in rows if r["disposition"] != "in_progress"]) >= count:
                return rows
            time.sleep(0.1)
        raise AssertionError(f"{count} ended calls not stored in {timeout}s: {rows}")
