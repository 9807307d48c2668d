"""The admin's tools on the example plan and on broken plans: check, simulate, graph, schema."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "ringmaster.yaml"
CLI = [sys.executable, "-m", "ringmaster.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.fixture(scope="module", autouse=True)
def prompts() -> None:
    if not (ROOT / "prompts" / "main-menu.wav").exists():
        subprocess.run([str(ROOT / "scripts" / "make-prompts")], check=True, capture_output=True)


def test_simulate_after_hours_call_goes_to_voicemail():
    out = run("simulate", "main", "-c", str(EXAMPLE), "--caller", "+4512345678", "--at", "2026-11-23T20:00+01:00")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "office closed (outside hours (mon 20:00 Europe/Copenhagen))" in text
    assert "record a message for box general" in text
    assert text.index("play closed") < text.index("record a message") < text.index("play goodbye")
    assert "end: hang up" in text


def test_simulate_walks_menu_with_digits_and_prints_each_step():
    out = run("simulate", "main", "-c", str(EXAMPLE), "--digits", "7,9,1", "--at", "2026-11-23T10:00+01:00")
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert "main:menu          caller presses 7 -> 7 (max_digits)".split() == lines[5].split()
    assert any("invalid '7' 1/3" in line for line in lines)
    assert any(line.startswith("main:sales") and "play sales" in line for line in lines)
    variables = json.loads(out.stdout.split("variables: ", 1)[1])
    assert variables["menu_menu"] == "1" and variables["schedule_office"] == "open"


def test_simulate_on_a_holiday_and_with_an_override():
    closed = run("simulate", "main", "-c", str(EXAMPLE), "--at", "2026-12-24T10:00+01:00")
    assert "holiday 2026-12-24" in closed.stdout
    forced = run("simulate", "main", "-c", str(EXAMPLE), "--at", "2026-12-24T10:00+01:00", "--override", "office=open")
    assert "forced open" in forced.stdout and "play main-menu" in forced.stdout


def test_simulate_unknown_flow_is_a_clear_error():
    out = run("simulate", "nope", "-c", str(EXAMPLE))
    assert out.returncode == 2 and "unknown flow 'nope'" in out.stderr and "main" in out.stderr


def test_graph_prints_mermaid_with_every_step_and_labelled_jumps(tmp_path: Path):
    out = run("graph", "main", "-c", str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("flowchart TD")
    assert 'main__menu["menu: menu main-menu"]' in text
    assert "main__menu -->|1| main__sales" in text and "main__menu -->|on_max_failures| main__goodbye" in text
    assert "main__1 -->|closed| main__closed" in text
    assert "-->|go| FLOW__message" in text and 'FLOW__message(["flow message"])' in text
    files = run("graph", "main", "-c", str(EXAMPLE), "-o", str(tmp_path / "main"))
    assert files.returncode == 0, files.stderr
    assert (tmp_path / "main.mmd").read_text() == text
    if shutil.which("dot"):
        assert (tmp_path / "main.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_schema_validates_the_example_and_rejects_a_typo():
    out = run("schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    data = yaml.safe_load(EXAMPLE.read_text())
    jsonschema.validate(data, schema)
    data["flows"]["main"][2]["menu"]["greting"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
    bad = yaml.safe_load(EXAMPLE.read_text())
    bad["flows"]["demo"].append({"hangpu": None})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_check_reports_every_error_class_of_a_broken_plan(tmp_path: Path):
    text = EXAMPLE.read_text().replace("../prompts", str(ROOT / "prompts"))
    text = text.replace("on_max_failures: goodbye", "on_max_failures: goodby")     # unknown jump target
    text = text.replace("schedule: {name: office,", "schedule: {name: ofice,")      # unknown schedule
    text = text.replace("greeting: main-menu\n", "greeting: main-menu\n        grating: x\n")  # unknown key
    text = text.replace("play: support", "play: suport")                            # missing prompt
    text = text.replace("    - play: welcome\n    - hangup\n", "    - play: welcome\n    - hangup\n    - play: goodbye\n", 1)
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    out = run("check", str(broken))
    assert out.returncode == 1
    errs = out.stderr
    assert "unknown schedule 'ofice' (did you mean 'office'?)" in errs
    assert "unknown key 'grating' (did you mean 'greeting'?)" in errs
    assert "prompt file not found" in errs and "suport.wav" in errs
    for line in errs.splitlines()[:-1]:
        assert line.startswith(f"{broken}:"), line
    # once those are fixed, the graph errors come out: unknown jump and unreachable step
    text = text.replace("ofice", "office").replace("        grating: x\n", "").replace("suport", "support")
    broken.write_text(text)
    out = run("check", str(broken))
    assert "unknown step 'goodby' in flow 'main' (did you mean 'goodbye'?)" in out.stderr, out.stderr


def test_check_finds_an_unreachable_step_and_an_endless_loop(tmp_path: Path):
    base = EXAMPLE.read_text().replace("../prompts", str(ROOT / "prompts"))
    unreachable = base.replace("    - play: welcome\n    - hangup\n", "    - play: welcome\n    - hangup\n    - play: goodbye\n", 1)
    (tmp_path / "u.yaml").write_text(unreachable)
    out = run("check", str(tmp_path / "u.yaml"))
    assert out.returncode == 1 and "can never be reached" in out.stderr, out.stderr
    loop = base.replace("    - play: welcome\n    - hangup\n", "    - id: again\n      play: welcome\n    - goto: again\n", 1)
    (tmp_path / "l.yaml").write_text(loop)
    out = run("check", str(tmp_path / "l.yaml"))
    assert out.returncode == 1 and "loop that never waits for the caller's input: demo:again -> demo:1 -> demo:again" in out.stderr
