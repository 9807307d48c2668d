"""README.md's walk-through, run as written: the ```sh blocks of its "The first hour" section,
taken from the README itself (so this fails when the README drifts), pasted into one bash
shell in the repository's directory, against the real daemon started with the demo config as
scripts/run-demo makes it (ringmaster.demo: random secrets), as root with run_as.

The one documented substitution: the daemon runs on this test's own ports and paths, so in the
copied config and in the commands the demo's ports (5060 edge, 5070 trusted caller, 1884 MQTT,
8080 HTTP, 16000 RTP sink) and its files (config/demo.yaml, config/demo-secrets.env) are
replaced by the test's, whole words only; each must occur, so a README that stops using them is
noticed. `ringmaster` on PATH is this tree's (PYTHONPATH=src). Nothing else in the commands is
touched."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from ringmaster import demo
from tests.helpers.daemon import Daemon, allocate_ports

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## The first hour"


def walkthrough_blocks(text: str) -> list[str]:
    """The ```sh blocks between the walk-through's heading and the next `## ` heading."""
    start = text.index(SECTION)
    nxt = text.find("\n## ", start + len(SECTION))
    section = text[start:nxt if nxt != -1 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)


def test_readme_walkthrough_blocks_are_found_and_use_only_the_documented_commands():
    blocks = walkthrough_blocks(README.read_text())
    assert len(blocks) >= 5
    script = "\n".join(blocks)
    first_words = {ln.split()[0] for ln in script.splitlines() if ln.strip() and not ln.startswith("#")}
    # everything the walk-through runs is installed by scripts/setup (or is bash itself)
    setup = (ROOT / "scripts" / "setup").read_text()
    assert first_words <= {".", "ringmaster", "sipp", "echo", "curl", "mosquitto_pub", "mosquitto_sub", "sleep",
                           "kill"}, first_words
    for pkg in ("sip-tester", "mosquitto-clients", "curl"):
        assert pkg in setup
    assert 'ln -sfn "$(pwd)/.venv/bin/ringmaster" /usr/local/bin/ringmaster' in setup
    # the README uses `ringmaster` from PATH everywhere, never a venv path
    assert ".venv/bin/ringmaster" not in README.read_text()


def _demo_config(folder: Path, ports: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """config/ringmaster.yaml through ringmaster.demo (as scripts/run-demo), on the test's ports."""
    text, secrets = demo.render((ROOT / "config" / "ringmaster.yaml").read_text(),
                                state_dir=str(folder / "state"), run_dir=str(folder / "run"))
    cfg = yaml.safe_load(text)
    cfg["sip"]["listen"] = f"127.0.0.1:{ports.edge}"
    assert cfg["sip"]["trusted"] == [{"name": "demo-caller", "address": "127.0.0.1:5070"}]
    cfg["sip"]["trusted"][0]["address"] = f"127.0.0.1:{ports.caller(0)}"
    cfg["workers"].update(sip_port_base=ports.workers, rtp_ports=ports.rtp)
    cfg["http"]["listen"] = f"127.0.0.1:{ports.base + 6}"
    cfg["mqtt"]["listen"] = f"127.0.0.1:{ports.base + 8}"
    cfg["http"]["desk"]["listen"] = f"127.0.0.1:{ports.base + 9}"
    cfg["sip"]["webrtc"].update(listen=f"127.0.0.1:{ports.wss}", control_port=ports.rtpengine_ng,
                                rtp_ports=ports.rtpengine)
    demo.make_certificate(Path(cfg["http"]["desk"]["certificate"]), Path(cfg["http"]["desk"]["key"]))
    cfg["paths"]["prompts"] = str(ROOT / "prompts")
    cfg["logging"]["format"] = "json"
    try:
        import pwd
        pwd.getpwnam(cfg["run_as"])
    except KeyError:  # scripts/setup creates `ringmaster`; a machine set up otherwise has nobody
        cfg["run_as"] = "nobody"
    return cfg, secrets


@pytest.mark.timeout(120)
def test_readme_walkthrough_runs_as_written_against_the_demo():
    if not (ROOT / "prompts" / "welcome.wav").exists():
        subprocess.run([str(ROOT / "scripts" / "make-prompts"), str(ROOT / "prompts")], check=True)
    ports = allocate_ports()
    # run_as needs a directory its user can reach (pytest's tmp dirs are 0700 under root)
    with tempfile.TemporaryDirectory(prefix="ringmaster-readme-") as name:
        folder = Path(name)
        os.chmod(folder, 0o755)
        cfg, secrets = _demo_config(folder, ports)
        env_file = folder / "demo-secrets.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(secrets.items())))
        d = Daemon(folder, ports, cfg)
        bindir = folder / "bin"
        bindir.mkdir()
        (bindir / "ringmaster").write_text(f'#!/bin/sh\nexec {sys.executable} -m ringmaster.cli "$@"\n')
        (bindir / "ringmaster").chmod(0o755)

        subst = {"config/demo.yaml": str(d.config_path), "config/demo-secrets.env": str(env_file),
                 "5060": str(ports.edge), "5070": str(ports.caller(0)), "1884": str(ports.base + 8),
                 "8080": str(ports.base + 6), "16000": str(ports.sink(0))}
        script = "\n".join(walkthrough_blocks(README.read_text()))
        for old, new in subst.items():
            script, n = re.subn(rf"(?<![\w/.-]){re.escape(old)}(?![\w.-])", new, script)
            assert n > 0, f"the README's walk-through no longer uses {old}"
        try:
            d.start(timeout=30)
            env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
            # the harness, not the README: a failing command must not leave the background
            # mosquitto_sub holding our pipes
            harness = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
            out = subprocess.run(["bash", "-c", harness + script], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=90)
            text = out.stdout + out.stderr
            assert out.returncode == 0, text[-4000:]
            assert f"{d.config_path}: OK (" in text
            assert "ringmaster pid" in text and "5551234" in text  # status; the call in the call log
            assert '"sales"' in text                                  # /api/queues with the admin token
            assert f"wallboard?token={secrets['WALLBOARD_TOKEN']}" in text
            # alice's desk got both offers; the tasks were completed (the tasks table)
            assert re.search(r'ringmaster/agents/alice/offers \{.*"event": ?"offer".*"task": ?"chat-1"', text), text[-3000:]
            assert re.search(r'ringmaster/agents/alice/offers \{.*"event": ?"offer".*"task": ?"mail-1"', text), text[-3000:]
            assert "unroutable chat-2: no-skills" in text
            assert "change-me" not in text  # `check` finds no placeholder secret in the made config
        finally:
            assert d.stop() == 0
        con = sqlite3.connect(folder / "state" / "ringmaster.db")
        try:
            tasks = dict(con.execute("SELECT task_id, state FROM tasks").fetchall())
            schedules = con.execute("SELECT name, state FROM schedule_overrides").fetchall()
        finally:
            con.close()
        assert tasks == {"chat-1": "completed", "mail-1": "completed", "chat-2": "cancelled"}
        assert schedules == [("office", "open")]
        errors = [ln for ln in d.log_text().splitlines() if '"level": "error"' in ln]
        assert errors == [], errors[:5]


def test_demo_secrets_are_made_fresh_and_the_committed_placeholders_are_flagged(tmp_path: Path):
    """ringmaster.demo (scripts/run-demo's first step) leaves no placeholder and no two runs
    share a secret; `check` on the committed config names every placeholder still there."""
    source = (ROOT / "config" / "ringmaster.yaml").read_text()
    one, s1 = demo.render(source)
    two, s2 = demo.render(source)
    assert "change-me" not in one.replace("in -change-me", "")
    assert set(s1) == {"ADMIN_TOKEN", "WALLBOARD_TOKEN", "DEMO_CHAT_PW", "ALICE_SIP_PW", "ALICE_MQTT_PW",
                       "BOB_SIP_PW", "BOB_MQTT_PW", "SUE_DESK_PW"}
    assert not set(s1.values()) & set(s2.values())
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "check", str(ROOT / "config" / "ringmaster.yaml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "8 secret(s) still end in -change-me" in out.stderr and "agents.alice.softphone.password" in out.stderr
    # the files: made once, private, printed once; a second run leaves them alone and prints nothing
    args = ["--out", str(tmp_path / "demo.yaml"), "--secrets", str(tmp_path / "demo-secrets.env"),
            "--config", str(ROOT / "config" / "ringmaster.yaml")]
    first = subprocess.run([sys.executable, "-m", "ringmaster.demo", *args], capture_output=True, text=True, timeout=30)
    assert first.returncode == 0 and "ALICE_SIP_PW=" in first.stdout
    made = (tmp_path / "demo.yaml").read_text()
    assert (tmp_path / "demo.yaml").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "demo-secrets.env").stat().st_mode & 0o777 == 0o600
    again = subprocess.run([sys.executable, "-m", "ringmaster.demo", *args], capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and again.stdout == "" and (tmp_path / "demo.yaml").read_text() == made
