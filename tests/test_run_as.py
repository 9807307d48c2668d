"""Started as root with `run_as`, the real daemon's Kamailio and mosquitto run as that user
(here `nobody`, which every Debian has), and still do their work: a softphone registers with
digest (the HA1 table is read, the registrar's SQLite file written as that user), an agent's
desk logs in over MQTT (the password file and ACL are read). A runtime dir the user cannot
reach is one clear error naming the directory, before anything starts."""

from __future__ import annotations

import os
import pwd
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.daemon import Daemon, allocate_ports, base_config
from tests.helpers.mqtt import Client
from tests.test_edge_boundary import _register

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
NOBODY = pwd.getpwnam("nobody").pw_uid


def _uids(pattern: str) -> dict[int, int]:
    """pid -> real uid of the processes whose command line contains pattern."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if pattern not in cmd:
                continue
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid_line = next(ln for ln in status.splitlines() if ln.startswith("Uid:"))
        out[int(pid)] = int(uid_line.split()[1])
    return out


@pytest.fixture
def open_dir():
    """A directory `nobody` can reach (pytest's own tmp dirs are mode 0700 under root)."""
    with tempfile.TemporaryDirectory(prefix="ringmaster-runas-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def _daemon(folder: Path) -> Daemon:
    ports = allocate_ports()
    cfg = base_config(folder, ports, workers=1)
    cfg["run_as"] = "nobody"
    cfg["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{ports.base + 8}",
                   "clients": [{"username": "chatsys", "password": "chatsys-secret"}]}
    cfg["agents"] = {"ann": {"softphone": {"username": "ann", "password": "ann-secret"},
                             "mqtt_password": "ann-mqtt-pw", "auto_login": False}}
    cfg["queues"] = {"q": {"members": ["ann"], "moh": "welcome"}}
    return Daemon(folder, ports, cfg)


def test_edge_and_broker_run_as_the_configured_user_and_still_work(open_dir):
    d = _daemon(open_dir)
    try:
        d.start()
        edge = _uids(str(open_dir / "run" / "edge" / "kamailio.cfg"))
        broker = _uids(str(open_dir / "run" / "mosquitto" / "mosquitto.conf"))
        assert len(edge) >= 5 and set(edge.values()) == {NOBODY}, edge  # main process and all children
        assert len(broker) == 1 and set(broker.values()) == {NOBODY}, broker
        # digest REGISTER: the edge (as nobody) read the HA1 table and stored the contact
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", d.ports.caller(5)))
        sock.settimeout(0.2)
        try:
            assert _register(sock, d.ports.edge, "ann", "ann-secret", wait=3.0) == 200
        finally:
            sock.close()
        db = open_dir / "edge" / "edge-registrations.sqlite"  # a directory of its own, owned by nobody
        assert db.parent.stat().st_uid == NOBODY
        deadline = time.monotonic() + 10
        rows: list[tuple[str]] = []
        while time.monotonic() < deadline and not rows:
            con = sqlite3.connect(db)
            try:
                rows = list(con.execute("SELECT username FROM location"))
            except sqlite3.OperationalError:
                rows = []
            finally:
                con.close()
            time.sleep(0.2)
        assert rows == [("ann",)]
        # MQTT: mosquitto (as nobody) read the generated password file and ACL
        desk = Client(d.ports.base + 8, "ann", "ann-mqtt-pw", client_id="desk-ann")
        try:
            desk.subscribe("agents/ann/state")
            desk.publish("agents/ann/commands", {"version": 1, "command": "login"})
            desk.wait_for("agents/ann/state", lambda s: s["status"] == "available")
        finally:
            desk.close()
        # the store stays root's: the edge's user cannot touch the daemon's database
        assert d.db_path.stat().st_uid == 0
    finally:
        assert d.stop() == 0


def test_a_runtime_dir_the_user_cannot_reach_is_one_clear_error(tmp_path: Path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    d = _daemon(closed)
    d.write_config()
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "run", "-c", str(d.config_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "run_as: user 'nobody' cannot reach" in text and "mode 0700" in text, text[-2000:]
    assert not _uids(str(closed / "run" / "edge" / "kamailio.cfg"))  # nothing left running
