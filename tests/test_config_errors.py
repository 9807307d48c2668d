"""A broken config never starts the daemon: every error names file:line:column and what was
expected, and `ringmaster run` exits non-zero before binding anything."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ringmaster.config import load_config
from ringmaster.yamlsource import ConfigInvalid
from tests.helpers.audio import write_tone

GOOD = """\
sip:
  listen: 127.0.0.1:25060
  trusted:
    - {name: pbx, address: 127.0.0.1:25070}
workers:
  count: 1
  sip_port_base: 25100
  rtp_ports: 25200-25299
paths:
  prompts: prompts
  runtime: run
storage:
  path: x.db
flows:
  demo:
    - play: welcome
    - hangup
entry_points:
  - number: "100"
    flow: demo
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "prompts").mkdir(exist_ok=True)
    write_tone(tmp_path / "prompts" / "welcome.wav", 440, 0.2)
    f = tmp_path / "ringmaster.yaml"
    f.write_text(text)
    return f


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ringmaster.cli", *args], capture_output=True, text=True, timeout=30)


def _errors(tmp_path: Path, text: str) -> list[str]:
    f = _write(tmp_path, text)
    with pytest.raises(ConfigInvalid) as exc:
        load_config(f)
    return [str(e) for e in exc.value.errors]


def test_good_config_passes_check(tmp_path: Path):
    f = _write(tmp_path, GOOD)
    out = _run("check", str(f))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


@pytest.mark.parametrize("broken, line, col, expected", [
    # YAML syntax: an unclosed flow sequence
    (GOOD.replace("trusted:\n    - {name: pbx, address: 127.0.0.1:25070}", "trusted: [ {name: pbx"), 4, 8, "YAML syntax"),
    # unknown key with a did-you-mean
    (GOOD.replace("  count: 1", "  cuont: 1"), 6, 3, "unknown key 'cuont' (did you mean 'count'?)"),
    # missing prompt file
    (GOOD.replace("play: welcome", "play: welcom"), 16, 13, "prompt file not found"),
    # wrong type
    (GOOD.replace("count: 1", "count: many"), 6, 10, "valid integer"),
    # entry point to an unknown flow
    (GOOD.replace("    flow: demo", "    flow: dmeo"), 20, 11, "unknown flow 'dmeo' (did you mean 'demo'?)"),
    # unknown step type
    (GOOD.replace("    - hangup", "    - hangpu"), 17, 7, "unknown step type 'hangpu' (did you mean 'hangup'?)"),
    # duplicate key
    (GOOD.replace("storage:\n  path: x.db", "storage:\n  path: x.db\n  path: y.db"), 14, 3, "duplicate key 'path'"),
    # an address that is not an IP
    (GOOD.replace("listen: 127.0.0.1:25060", "listen: example.com:25060"), 2, 11, "expected an IP address"),
])
def test_each_error_class_names_file_line_column_and_expectation(tmp_path: Path, broken, line, col, expected):
    errors = _errors(tmp_path, broken)
    f = str(tmp_path / "ringmaster.yaml")
    assert any(e.startswith(f"{f}:{line}:{col}: ") and expected in e for e in errors), errors


def test_all_errors_are_reported_not_just_the_first(tmp_path: Path):
    broken = GOOD.replace("play: welcome", "play: nosuch").replace("    flow: demo", "    flow: nope")
    errors = _errors(tmp_path, broken)
    assert len(errors) == 2, errors


def test_run_with_broken_config_exits_nonzero_and_prints_positions(tmp_path: Path):
    f = _write(tmp_path, GOOD.replace("  count: 1", "  cuont: 1").replace("play: welcome", "play: gone"))
    out = _run("run", "-c", str(f))
    assert out.returncode != 0
    assert re.search(rf"{re.escape(str(f))}:6:3: unknown key 'cuont'", out.stderr), out.stderr
    assert re.search(rf"{re.escape(str(f))}:16:13: play: prompt file not found", out.stderr), out.stderr
    assert not (tmp_path / "run").exists()  # nothing was started


def test_overlapping_ports_are_rejected(tmp_path: Path):
    errors = _errors(tmp_path, GOOD.replace("rtp_ports: 25200-25299", "rtp_ports: 25000-25299"))
    assert any("overlap" in e for e in errors), errors


def test_example_config_is_valid():
    root = Path(__file__).resolve().parent.parent
    if not (root / "prompts" / "welcome.wav").exists():
        subprocess.run([str(root / "scripts" / "make-prompts")], check=True)
    out = _run("check", str(root / "config" / "ringmaster.yaml"))
    assert out.returncode == 0, out.stderr


ACD = GOOD + """\
agents:
  alice: {softphone: {username: alice, password: secret1}}
  bob: {mobile: "+4512345678"}
queues:
  sales:
    strategy: linear
    members: [alice, bob]
"""


def test_acd_config_is_valid(tmp_path: Path):
    f = _write(tmp_path, ACD)
    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 0.2)
    out = _run("check", str(f))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("broken, line, col, expected", [
    (ACD.replace("strategy: linear", "strategy: lienar"), 26, 15, "Input should be 'ring-all', 'linear'"),
    (ACD.replace("members: [alice, bob]", "members: [alice, bbo]"), 27, 22, "unknown agent 'bbo' (did you mean 'bob'?)"),
    (ACD.replace("  bob: {mobile: \"+4512345678\"}", "  bob: {}"), 23, 8, "exactly one of softphone"),
    (ACD + "    overflow: {queue: support}\n", 28, 23, "overflow to unknown queue 'support'"),
    (ACD.replace("    flow: demo", "    flow: demo\n  - number: \"200\"\n    flow: q").replace(
        "  demo:\n", "  q:\n    - queue: sale\n  demo:\n"), 16, 14, "unknown queue 'sale' (did you mean 'sales'?)"),
])
def test_bad_queue_config_names_file_line(tmp_path: Path, broken, line, col, expected):
    (tmp_path / "prompts").mkdir(exist_ok=True)
    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 0.2)
    errors = _errors(tmp_path, broken)
    f = str(tmp_path / "ringmaster.yaml")
    assert any(e.startswith(f"{f}:{line}:{col}: ") and expected in e for e in errors), errors


PRESENCE = ACD.replace("  bob: {mobile: \"+4512345678\"}", "  bob: {mobile: \"+4512345678\", profile: chat}") + """\
profiles:
  chat: {policy: concurrent, capacity: {chat: 3}}
mqtt:
  embedded: true
  listen: 127.0.0.1:1884
"""


def test_presence_and_mqtt_config_is_valid(tmp_path: Path):
    (tmp_path / "prompts").mkdir(exist_ok=True)
    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 0.2)
    out = _run("check", str(_write(tmp_path, PRESENCE)))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("broken, expected", [
    (PRESENCE.replace("profile: chat", "profile: chta"), "unknown profile 'chta' (did you mean 'chat'?)"),
    (PRESENCE.replace("capacity: {chat: 3}", "capacity: {voice: 2}"), "capacity is set for chat and email"),
    (PRESENCE.replace("policy: concurrent", "policy: sometimes"), "Input should be 'exclusive' or 'concurrent'"),
    (PRESENCE.replace("listen: 127.0.0.1:1884", "listen: 127.0.0.1"), "expected HOST:PORT"),
    (PRESENCE.replace("  embedded: true", "  embeded: true"), "embedded"),
    (PRESENCE.replace("  sales:\n", "  sales/eu:\n").replace("queue: sales", "queue: sales/eu"),
     "queue name 'sales/eu': use letters, digits"),
    (PRESENCE.replace("  bob: {", "  bob#1: {").replace("[alice, bob]", "[alice, 'bob#1']"),
     "agent name 'bob#1': use letters, digits"),
    (PRESENCE.replace("profile: chat}", 'profile: chat, mqtt_password: "pass\\nword-x"}'), "mqtt_password"),
])
def test_bad_presence_or_mqtt_config_names_the_place(tmp_path: Path, broken, expected):
    (tmp_path / "prompts").mkdir(exist_ok=True)
    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 0.2)
    errors = _errors(tmp_path, broken)
    f = str(tmp_path / "ringmaster.yaml")
    assert any(e.startswith(f"{f}:") and expected in e for e in errors), errors


def test_desk_supervisors_name_no_agent_and_known_queues_with_file_line(tmp_path: Path):
    (tmp_path / "prompts").mkdir(exist_ok=True)
    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 0.2)
    desk = """\
http:
  listen: 127.0.0.1:18080
  desk:
    listen: 127.0.0.1:18443
    certificate: cert.pem
    key: key.pem
    supervisors:
      sue: {password: sue-desk-pw, queues: [sales]}
"""
    f = str(tmp_path / "ringmaster.yaml")
    assert not [e for e in _errors_or_none(tmp_path, ACD + desk)]
    errors = _errors(tmp_path, ACD + desk.replace("queues: [sales]", "queues: [sales, slaes]")
                     + "      alice: {password: alice-sup-pw}\n")
    base = ACD.count("\n")
    assert any(e.startswith(f"{f}:{base + 8}:") and "unknown queue 'slaes' (did you mean 'sales'?)" in e
               for e in errors), errors
    assert any(e.startswith(f"{f}:{base + 9}:") and "supervisor 'alice' has the name of an agent" in e
               for e in errors), errors
    errors = _errors(tmp_path, ACD + desk + "      sam: {password: short}\n")
    assert any(e.startswith(f"{f}:{base + 9}:") and "at least 8 characters" in e for e in errors), errors


def _errors_or_none(tmp_path: Path, text: str) -> list[str]:
    try:
        load_config(_write(tmp_path, text))
    except ConfigInvalid as exc:
        return [str(e) for e in exc.errors]
    return []
