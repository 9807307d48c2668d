"""Every value from outside is checked where it enters the controller (issue 17, item 6): DTMF
signals a flow must never see, caller IDs that would steer a recording out of its folder or
past the file-name limit, MQTT payloads with the wrong types or an infinite due time, HTTP
bodies nested deep enough to break the JSON parser. Real daemon, Kamailio, pjsua2 workers,
SIPp callers and the embedded mosquitto; fuzz tests (hypothesis) of the two JSON parsers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringmaster import inputs
from ringmaster import protocol as p
from ringmaster.acd.config import Recording
from ringmaster.mqtt.payloads import AgentCommand, BadPayload, NewTask, TaskCommand, parse
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.helpers.sipp import sipp_args
from tests.test_acd_calls import acd_config, register, wait_agent
from tests.test_api import TOKENS, http
from tests.test_presence_mqtt import integration, mqtt_config, rows


async def _sipp(d, caller: str, service: str, scenario: str = "uac_prompt.xml", port: int = 0,  # type: ignore[no-untyped-def]
                extra: list[str] | None = None) -> tuple[int, str]:
    args = sipp_args(scenario, d.edge, port or d.ports.caller(2), service=service, caller=caller,
                     rtp_sink=d.ports.sink(0), timeout=40, extra=extra)
    proc = await asyncio.create_subprocess_exec(*args, cwd=d.dir, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(errors="replace")[-3000:]


def _digit_events(d, call_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        return [json.loads(r[0])["digit"] for r in
                con.execute("SELECT data FROM call_events WHERE call_id=? AND event='DIGIT' ORDER BY id", (call_id,))]
    finally:
        con.close()


# ------------------------------------------------------------------ DTMF


async def test_info_signals_outside_rfc4733_never_reach_a_flow(daemon_factory):
    """SIP INFO `Signal=Z` (and lowercase junk) never becomes a digit: the edge refuses such an
    INFO (400), the worker and the controller would drop it too: the DIGIT events and a collect
    step's variable hold only 0-9 * # A-D."""
    d = daemon_factory(workers=1, start=False)
    d.config["flows"]["collect"] = [{"collect": {"var": "acct", "min": 1, "max": 2, "timeout": 4,
                                                 "invalid_prompt": "other"}},
                                    {"play": "long"}, "hangup"]
    d.config["entry_points"].append({"number": "201", "flow": "collect"})
    d.start()
    signals = ["-key", "signal0", "Z", "-key", "signal1", "1", "-key", "signal2", "z", "-key", "signal3", "2"]
    for service in ("200", "201"):  # hold music (single digits), then a collect step
        code, out = await _sipp(d, "4511111111", service, "uac_info_dtmf.xml", extra=signals)
        assert code == 0, out
    ended = d.wait_calls_ended(2)
    by_called = {c["called"]: c for c in ended}
    for c in ended:
        got = _digit_events(d, c["call_id"])
        assert got and set(got) <= inputs.DTMF_DIGITS, got
    assert _digit_events(d, by_called["200"]["call_id"]) == ["1", "2"]
    variables = json.loads(by_called["201"]["variables"])
    assert variables.get("acct") == "12", variables  # never 'Z1' or 'Z1z'
    assert d.proc.poll() is None


# ------------------------------------------------------------------ recordings


async def test_hostile_caller_ids_never_move_a_recording_out_of_its_folder(daemon_factory):
    """`{caller}` in a recording template: '../../evil' used to write beside the config, a
    230-character caller ID made the file name too long and the recording silently failed."""
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"],
                   "record": {"template": "{queue}/{caller}-{call_id}.wav"}})
    d.start()
    recordings = (d.dir / "recordings").resolve()
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    callers = ["../../evil", "7" * 230]
    rings: list[dict[str, str]] = []
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        for caller in callers:
            mark = len(agent.events)
            call = asyncio.create_task(_sipp(d, caller, "500"))
            inc = await agent.wait(p.Incoming, timeout=15, after=mark)
            rings.append(dict(inc.headers))
            agent.send(p.Answer(leg=inc.leg))
            await asyncio.sleep(1.5)
            agent.send(p.Hangup(leg=inc.leg))
            code, out = await call
            assert code == 0, out
            wait_agent(d, "alice", "available")
    finally:
        await agent.stop()
    ended = d.wait_calls_ended(2)
    assert len(ended) == 2
    for row in ended:
        rec = Path(row["recording"])
        assert rec.resolve().is_relative_to(recordings), rec
        assert rec.is_file() and rec.stat().st_size > 1000, rec
        assert len(rec.name) <= 255
    assert all(f.resolve().is_relative_to(recordings) for f in d.dir.parent.glob("**/*evil*"))
    assert not d.events("acd.recording_refused")
    # the agent's phone learns the caller ID as the call record keeps it (bounded where it enters)
    assert rings[0].get("X-Ringmaster-Var-caller") == "../../evil", rings[0]
    assert rings[1].get("X-Ringmaster-Var-caller") == "7" * inputs.PARTY_ID_MAX, rings[1]
    assert {r["caller"] for r in ended} == {"../../evil", "7" * inputs.PARTY_ID_MAX}
    assert all(v.isprintable() and len(v) <= 200 for r in rings for k, v in r.items() if k.startswith("X-Ringmaster-Var-"))


def test_recording_template_is_a_relative_path_of_plain_fields():
    for bad in ["/etc/{caller}.wav", "../{call_id}.wav", "{caller.__class__}.wav", "{caller!r}.wav",
                "{caller:>300}.wav", "{nope}.wav", "{call_id}.sh", "{", "x" * 300 + ".wav"]:
        with pytest.raises(ValueError):
            Recording(template=bad)
    assert Recording(template="{queue}/{date}/{caller}-{call_id}.wav").template


def test_file_name_part_and_containment():
    assert inputs.file_name_part("../../etc/passwd") == "_._.._etc_passwd"
    assert inputs.file_name_part("") == "unknown"
    assert len(inputs.file_name_part("9" * 230)) == inputs.FILE_NAME_MAX
    root = Path("/tmp/ringmaster-recordings-test")
    assert inputs.contained(root, "q/a.wav") == root.resolve() / "q" / "a.wav"
    for bad in ["../x.wav", "/etc/x.wav", "q/../../x.wav", "", "x" * 256 + ".wav"]:
        with pytest.raises(inputs.InputRefused):
            inputs.contained(root, bad)


def test_header_values_with_control_characters_or_too_long_are_left_out():
    assert inputs.header_value("gold customer") == "gold customer"
    for bad in ["a\r\nVia: evil", "a\x00b", "a\x7f", "x" * 201, "tab\there"]:
        assert inputs.header_value(bad) is None, bad
    assert not inputs.header_name_ok("a b") and not inputs.header_name_ok("a:b") and inputs.header_name_ok("acct")


# ------------------------------------------------------------------ MQTT

MQTT_BAD: list[tuple[str, bytes, str, str]] = [
    ("agents/ann/commands", b'{"version": "1", "command": "login"}', "version", "valid integer"),
    ("agents/ann/commands", b'{"version": true, "command": "login"}', "version", "valid integer"),
    ("tasks/new", b'{"version": 1, "channel": "chat", "queue": "chat", "priority": "7"}', "priority", "valid integer"),
    ("tasks/new", b'{"version": 1, "channel": "chat", "queue": "chat", "priority": true}', "priority", "valid integer"),
    ("tasks/new", b'{"version": 1, "channel": "email", "queue": "chat", "due": 1e999}', "payload", "out of range"),
    ("tasks/new", b'{"version": 1, "channel": "email", "queue": "chat", "due": Infinity}', "payload", "not a JSON number"),
    ("tasks/new", b'{"version": 1, "channel": "email", "queue": "chat", "due": 1e300}', "due", "between 1970 and 2100"),
    ("tasks/new", b'{"version": 1, "channel": "email", "queue": "chat", "due": "9999-12-31T23:59:59-23:59"}', "due",
     "between 1970 and 2100"),
    ("tasks/new", b'{"version": 1, "channel": "chat", "queue": "chat", "data": ' + b"[" * 3000 + b"]" * 3000 + b"}",
     "payload", "nested"),
    ("tasks/new", b'{"version": 1, "channel": "chat", "queue": "chat", "priority": 1' + b"0" * 5000 + b"}",
     "payload", "too large"),
    ("tasks/new", b'{"version": 1, "channel": "chat", "queue": "chat", "skills": {"en": true}}', "skills.en", "valid integer"),
    ("tasks/new", b'{"version": 1, "channel": "chat", "queue": "chat", "skills": {"a/b": 1}}', "skills", "not plain"),
    ("agents/ann/commands", b'{"version": 1, "command": "pause", "reason": "x\\u0000y"}', "reason", "pattern"),
    ("tasks/new", b'{"version": 1, "channel": "chat", "queue": "chat/../x"}', "queue", "pattern"),
]


def test_bad_mqtt_payloads_are_answered_on_errors_with_the_field_and_change_nothing(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    mqtt_config(d, {"ann": {"auto_login": False}})
    d.start()
    chat = integration(d)
    ann = Client(d.ports.base + 8, "ann", "ann-mqtt-pw", client_id="desk-ann")
    try:
        time.sleep(0.3)
        before = (rows(d, "SELECT * FROM tasks"), rows(d, "SELECT * FROM task_log"),
                  rows(d, "SELECT * FROM agent_presence"))
        for i, (topic, payload, field, reason) in enumerate(MQTT_BAD):
            (ann if topic.startswith("agents/") else chat).publish(topic, payload, raw=True)
            deadline = time.monotonic() + 5
            while len(chat.received("errors")) <= i and time.monotonic() < deadline:
                time.sleep(0.02)
            err = chat.received("errors")[i]
            assert err["topic"] == "ringmaster/" + topic, err
            assert err["field"] == field and reason in err["error"], (err, field, reason)
            assert "internal error" not in err["error"], err
        time.sleep(0.3)
        after = (rows(d, "SELECT * FROM tasks"), rows(d, "SELECT * FROM task_log"),
                 rows(d, "SELECT * FROM agent_presence"))
        assert after == before
        assert not d.events("tasks.message_failed")
        assert d.proc.poll() is None
        # a good one still works afterwards
        chat.publish("tasks/new", {"version": 1, "id": "ok-1", "channel": "email", "queue": "chat",
                                   "due": "2030-01-01T00:00:00Z"})
        chat.wait_for("tasks/ok-1/events", lambda m: m["event"] == "queued")
    finally:
        chat.close()
        ann.close()


# ------------------------------------------------------------------ HTTP


def test_hostile_http_bodies_are_400_with_the_reason_never_5xx(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": "sup", "token": TOKENS["supervisor"], "role": "supervisor"}]}
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.start()
    cases: list[tuple[bytes, str]] = [
        (b"[" * 20_000 + b"]" * 20_000, "too large"),  # 40 kB: over the body limit, 413
        (b"[" * 5_000 + b"]" * 5_000, "nested"),
        (b'{"action": {"a": {"b": {"c": {"d": 1}}}}}', "nested"),
        (b'{"action": "pause", "reason": 1' + b"0" * 5000 + b"}", "too large"),
        (b'{"action": "pause", "reason": NaN}', "not a JSON number"),
        (b'{"action": ["pause"]}', "action"),
        (b'{"action": "pause", "reason": "a\\u0000b"}', "reason"),
        (b'{"action": "pause", "extra": 1}', "unknown field"),
        (b"\xff\xfe", "invalid JSON"),
        (b"", "invalid JSON"),
    ]
    for body, reason in cases:
        code, _, out = http(d, "POST", "/api/agents/alice", "supervisor", body)
        assert code in (400, 413), (code, body[:60], out[:200])
        if code == 400:
            assert reason in json.loads(out)["error"], (body[:60], out)
    code, _, out = http(d, "POST", "/api/calls/nosuch/recording", "supervisor", b"{" * 3000)
    assert code == 400, out
    for query in ("since=0001-01-01", "limit=" + "9" * 5000, "min_wait=x", "disposition=%00"):
        code, _, out = http(d, "GET", f"/api/calls?{query}", "supervisor")
        assert code == 400, (query, code, out[:200])

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=_json_like)
    def fuzz(body: bytes) -> None:
        code, _, out = http(d, "POST", "/api/agents/alice", "supervisor", body)
        assert code < 500, (code, body[:80], out[:200])
        if code == 400:
            assert json.loads(out)["error"], out

    fuzz()

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(path=st.sampled_from(["/api/calls", "/api/tasks"]),
           params=st.dictionaries(st.sampled_from(["since", "until", "queue", "agent", "caller", "channel", "state",
                                                   "disposition", "min_wait", "limit"]),
                                  st.one_of(st.text(max_size=30), st.sampled_from(
                                      ["0", "-1", "1e999", "nan", "9" * 400, "0001-01-01", "9999-12-31", "15m",
                                       "99999999999d", "%", "'; DROP TABLE calls; --"])), max_size=4))
    def fuzz_query(path: str, params: dict[str, str]) -> None:
        code, _, out = http(d, "GET", f"{path}?{urllib.parse.urlencode(params)}", "supervisor")
        assert code in (200, 400), (code, params, out[:200])

    fuzz_query()
    assert d.proc.poll() is None
    assert not [line for line in d.log_text().splitlines() if "Traceback" in line or "Error handling request" in line]


# ------------------------------------------------------------------ fuzz of the parsers

_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20)
_FIELDS = ["version", "command", "id", "channel", "queue", "priority", "skills", "due", "data", "reason", "task", "action"]


@st.composite
def _payload(draw: st.DrawFn) -> bytes:
    """A JSON object with the payloads' own field names and hostile values, or broken bytes."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=80))
    if kind == 1:  # deep nesting or a giant number, spliced into a field
        n = draw(st.integers(1, 4000))
        inner = draw(st.sampled_from([b"[" * n + b"]" * n, b"1" * n, b"-" + b"9" * n, b"1e" + str(n).encode(),
                                      b"NaN", b"-Infinity", b'"' + b"x" * n + b'"']))
        return b'{"version": 1, "' + draw(st.sampled_from(_FIELDS)).encode() + b'": ' + inner + b"}"
    obj: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=7)):
        obj[name] = draw(st.one_of(_json_value, st.sampled_from(
            [1, "1", True, 1.0, -1, 10**30, "chat", "email", "login", "pause", "sales", "2026-01-01T00:00:00Z",
             "x" * 100, "a/b", "+", "#", "\u0000", 1e308])))
    text = json.dumps(obj, allow_nan=True)
    return text.encode() if kind != 5 else text.encode()[: draw(st.integers(0, len(text)))]


_json_like = _payload()


@settings(max_examples=400, deadline=None)
@given(raw=_payload(), model=st.sampled_from([NewTask, AgentCommand, TaskCommand]))
def test_fuzz_mqtt_payloads_give_a_model_or_bad_payload_naming_its_field(raw: bytes, model: Any):
    try:
        msg = parse(model, raw)
    except BadPayload as exc:
        assert exc.reason and len(str(exc)) < 2000, exc
        assert exc.field, exc  # the payload as a whole is "payload"
        assert str(exc).startswith(exc.field.split(".")[0]) or exc.field == "payload", (exc.field, str(exc))
        return
    # accepted: strictly typed and in range
    assert type(msg.version) is int and msg.version == 1
    if isinstance(msg, NewTask):
        assert type(msg.priority) is int and -100 <= msg.priority <= 100
        assert msg.due is None or (isinstance(msg.due, float) and 0 <= msg.due <= 4_102_444_800)
        assert all(type(v) is int for v in msg.skills.values())


@settings(max_examples=400, deadline=None)
@given(raw=_payload(), depth=st.integers(1, 20))
def test_fuzz_json_object_raises_only_input_refused(raw: bytes, depth: int):
    try:
        data = inputs.json_object(raw, max_bytes=8192, max_depth=depth)
    except inputs.InputRefused as exc:
        assert exc.reason
        return
    assert isinstance(data, dict) and inputs.json_depth(raw) <= depth
