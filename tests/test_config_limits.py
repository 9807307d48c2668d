"""Hostile YAML: `ringmaster check` answers every file of the allowed size with either OK or
`FILE:LINE:COL: message` lines, within its limits (aliases, nesting, size, numbers, safe tags),
and never with a traceback or a hang. Issue 17, item 7."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringmaster import yamlsource
from ringmaster.config import validate
from ringmaster.yamlsource import ConfigInvalid
from tests.test_config_errors import GOOD, _write

ERROR_LINE = re.compile(r"^(?P<file>.+):(?P<line>[1-9]\d*):(?P<col>[1-9]\d*): \S.*$")

BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
               for p, a in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    # the timeout is a hang guard (a bomb used to run past 20 s), not a speed assertion
    return subprocess.run([sys.executable, "-m", "ringmaster.cli", "check", str(path)],
                          capture_output=True, text=True, timeout=20)


def _assert_refused_with_places(out: subprocess.CompletedProcess[str], path: Path, expected: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == f"{path}: {len(lines) - 1} error(s)", out.stderr
    for line in lines[:-1]:
        m = ERROR_LINE.match(line)
        assert m and m["file"] == str(path), line
    assert expected in out.stderr, out.stderr


@pytest.mark.parametrize("text, where, expected", [
    ("a: &a [*a]\n", "1:8", "alias *a refers to its own anchor"),
    ("a: &a {b: [1, {c: *a}]}\n", "1:19", "alias *a refers to its own anchor"),
    ("sip: !!python/object/apply:os.system [\"echo owned\"]\n", "1:6", "tag !!python/object/apply:os.system is not allowed"),
    ("sip:\n  listen: !!python/name:os.system\n", "2:11", "tag !!python/name:os.system is not allowed"),
    ("a: !custom x\n", "1:4", "tag !custom is not allowed"),
    ("workers:\n  count: " + "9" * 5000 + "\n", "2:10", "number of 5000 characters is too large"),
    ("workers:\n  count: 1.0e+999\n", "2:10", "number '1.0e+999' is not finite"),
    ("a: .nan\n", "1:4", "is not finite"),
    (BOMB, "5:", "values once aliases are expanded"),
    ("a: " + "[" * 60 + "]" * 60 + "\n", "1:53", "nested deeper than 50 levels"),
    ("a: &x " + "[" * 30 + "]" * 30 + "\nb: " + "[" * 25 + "*x" + "]" * 25 + "\n", "2:29", "nested deeper than 50 levels (aliases expanded)"),
    ("a: *nowhere\n", "1:4", "alias *nowhere has no anchor"),
    ("holidays: [2026-13-45]\n", "1:12", "not a valid timestamp"),
    ("a: \x01\n", "1:4", "control characters are not allowed"),
    ("? [1, 2]\n: x\n", "1:3", "a key must be a string"),
])
def test_hostile_yaml_is_refused_with_file_line_column(tmp_path: Path, text: str, where: str, expected: str):
    f = tmp_path / "hostile.yaml"
    f.write_text(text)
    out = _check(f)
    _assert_refused_with_places(out, f, expected)
    assert f"{f}:{where}" in out.stderr, out.stderr


def test_file_too_large_or_not_utf8_is_refused_with_a_place(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (yamlsource.MAX_BYTES // 10 + 1))
    _assert_refused_with_places(_check(big), big, f"larger than {yamlsource.MAX_BYTES} bytes")
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"sip:\n  name: caf\xe9\n")
    out = _check(latin)
    _assert_refused_with_places(out, latin, "not UTF-8 text")
    assert f"{latin}:2:" in out.stderr
    missing = tmp_path / "missing.yaml"
    _assert_refused_with_places(_check(missing), missing, "cannot read")


def test_many_errors_are_summarised_in_one_located_line(tmp_path: Path):
    f = tmp_path / "many.yaml"
    f.write_text("".join(f"k{i}: 1\n" for i in range(500)))
    out = _check(f)
    _assert_refused_with_places(out, f, "more errors")
    assert len(out.stderr.splitlines()) == yamlsource.MAX_ERRORS + 2


def test_a_plain_large_plan_within_the_limits_still_loads(tmp_path: Path):
    """The limits refuse bombs, not big contact centres: 2000 agents sharing one anchor."""
    agents = "".join(f"  a{i}: {{softphone: {{username: a{i}, password: pw-{i}-secret}}, skills: *sk}}\n"
                     for i in range(1, 2000))
    first = "  a0: {softphone: {username: a0, password: pw-0-secret}, skills: &sk {en: 5}}\n"
    f = _write(tmp_path, GOOD + "agents:\n" + first + agents)
    out = _check(f)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("change, expected", [
    # found by the demo-config fuzz below: each used to raise out of `check` with a traceback
    ({"schedules": "schedules:\n  office: {timezone: UTC, hours: {mon-fri: true}}\n"}, "a span like 09:00-17:00"),
    ({"play: welcome": 'play: ""'}, "not a prompt file name"),
    ({"play: welcome": "play: " + "x" * 300}, "not a prompt file"),
])
def test_odd_values_found_by_fuzzing_are_located_errors(tmp_path: Path, change: dict[str, str], expected: str):
    text = GOOD
    for old, new in change.items():
        text = text + new if old == "schedules" else text.replace(old, new)
    f = _write(tmp_path, text)
    _assert_refused_with_places(_check(f), f, expected)


def test_music_on_hold_with_an_impossible_name_is_a_located_error(tmp_path: Path):
    text = GOOD + ("agents:\n  alice: {softphone: {username: alice, password: alice-secret-pw}}\n"
                   "queues:\n  sales: {members: [alice], moh: " + "m" * 300 + "}\n")
    f = _write(tmp_path, text)
    _assert_refused_with_places(_check(f), f, "music on hold not found")


# ------------------------------------------------------------------ fuzz

_scalar = st.one_of(
    st.integers(min_value=-10**60, max_value=10**60).map(str),
    st.sampled_from(["1.0e+999", "-.inf", ".nan", "0x1F", "0o17", "1_000", "2026-02-30", "2026-01-01 10:00:00",
                     "yes", "~", "null", "''", '"\\u0000"', '"\\x85"', "!!python/name:os.system x", "!x y",
                     "!!binary aGk=", "!!set {a}", "!!str 5", "!!int x", "!!float y", "9" * 4400,
                     "127.0.0.1:5060", "sip:x@y", "welcome", "- a", "{", "]", "&", "*", "|", ">", "%x"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12).map(repr),
)
_key = st.one_of(st.sampled_from(["sip", "workers", "flows", "agents", "queues", "paths", "listen", "count",
                                  "play", "menu", "hangup", "<<", "? [1]", "1", "true", "null", "k"]),
                 st.text(alphabet="abcxyz_-0", min_size=1, max_size=6))


@st.composite
def _yaml(draw: st.DrawFn, depth: int = 0) -> str:
    """Random flow-style YAML with anchors, aliases (some before their anchor) and tags."""
    kind = draw(st.sampled_from(["scalar", "alias", "map", "seq"] if depth < 6 else ["scalar", "alias"]))
    anchor = f"&{draw(st.sampled_from('abc'))} " if draw(st.integers(0, 3)) == 0 else ""
    if kind == "scalar":
        return anchor + draw(_scalar)
    if kind == "alias":
        return "*" + draw(st.sampled_from("abc"))
    n = draw(st.integers(0, 4))
    if kind == "seq":
        return anchor + "[" + ", ".join(draw(_yaml(depth + 1)) for _ in range(n)) + "]"
    return anchor + "{" + ", ".join(f"{draw(_key)}: {draw(_yaml(depth + 1))}" for _ in range(n)) + "}"


def _assert_loads_or_refuses(text: str, base: Path) -> None:
    try:
        src = yamlsource.loads(text, "fuzz.yaml")
        validate(src, base)
    except ConfigInvalid as exc:
        assert exc.errors, text
        for e in exc.errors:
            assert ERROR_LINE.match(str(e)) and e.file == "fuzz.yaml", (str(e), text)
            assert e.line <= text.count("\n") + 2, (str(e), text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.lists(st.tuples(_key, _yaml()), max_size=6), bomb=st.integers(0, 3))
def test_fuzz_structured_yaml_never_raises_anything_but_located_errors(tmp_path_factory, doc, bomb):
    text = "".join(f"{k}: {v}\n" for k, v in doc)
    if bomb:  # sometimes prefix an alias bomb of random width, or a deep nest
        text = BOMB.replace("lol", "x") * (bomb == 1) + ("d: " + "[" * 55 + "]" * 55 + "\n") * (bomb == 2) + text
    _assert_loads_or_refuses(text, tmp_path_factory.getbasetemp())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{},&*!? \n\t'\"#|>%@`\\0123.e") + ["\x00", "\ufeff", "é"]),
                    max_size=200))
def test_fuzz_arbitrary_text_never_raises_anything_but_located_errors(tmp_path_factory, text):
    _assert_loads_or_refuses(text, tmp_path_factory.getbasetemp())


# ------------------------------------------------------------------ reload on a running daemon


def test_reload_of_hostile_yaml_is_refused_with_places_and_the_daemon_keeps_its_plan(daemon_factory):
    """A recursive alias used to reach the daemon as a bare RecursionError message, and a bomb
    held its event loop; now each is refused as FILE:LINE:COL and the old plan stays live."""
    d = daemon_factory(workers=1)
    good = d.config_path.read_text()
    for hostile, expected in [("x-bad: &a [*a]\n", "refers to its own anchor"),
                              (BOMB.replace("a: &a", "zz: &a"), "values once aliases are expanded"),
                              ("x-tag: !!python/name:os.system\n", "is not allowed")]:
        d.config_path.write_text(hostile + good)
        out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "reload", "-c", str(d.config_path)],
                             capture_output=True, text=True, timeout=20)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "Traceback" not in out.stderr and expected in out.stderr, out.stderr
        assert re.search(rf"{re.escape(str(d.config_path))}:\d+:\d+: ", out.stderr), out.stderr
    d.config_path.write_text(good)
    st = d.status()
    assert st is not None and st["ok"] and d.proc.poll() is None
    assert not [e for e in d.events("reload.rejected") if "error" in e and "Recursion" in str(e["error"])]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, prefix + (i,))
    return out


DEMO = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "ringmaster.yaml").read_text())
DEMO_PATHS = _paths(DEMO)[1:]
_hostile_value = st.one_of(
    st.sampled_from([None, True, -1, 0, 10**40, 1e308, -1e-308, "", " ", "\u202e", "../../etc/passwd", "x" * 5000,
                     "{caller.__class__}", "{", "%s%n", "sip:", "127.0.0.1:0", "999.1.1.1:5060", "09:00-08:00",
                     "2026-02-30", "Mars/Olympus", "\\", [], {}, [[[]]], {"a": {"b": {}}}, ["1", 2, None]]),
    st.text(max_size=20), st.integers(), st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from(DEMO_PATHS), _hostile_value), min_size=1, max_size=4))
def test_fuzz_the_demo_config_with_hostile_values_gives_located_errors_only(tmp_path_factory, changes):
    """The whole `check` path (every section's validation, flows, ACD, ports) on the annotated
    demo config with up to four values replaced by hostile ones."""
    data = copy.deepcopy(DEMO)
    for path, value in changes:
        node = data
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced this branch
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    _assert_loads_or_refuses(text, tmp_path_factory.getbasetemp())
