"""Unit tests of the sans-IO core: protocol wire format, flow interpreter, entry-point
routing, registration retry policy. No SIP, no processes: milliseconds each."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringmaster import protocol as p
from ringmaster.calls import sip_user
from ringmaster.config import Config, UpstreamRegistration
from ringmaster.flows.actions import AnswerCall, Answered, Connect, ConnectEnded, HangUp, PlayPrompts, PromptsDone
from ringmaster.flows.dialplan import DialPlan
from ringmaster.flows.interpreter import FlowRun
from ringmaster.registrations import AUTH_FAILED_RETRY, RegistrationState
from tests.helpers.audio import write_tone


@pytest.mark.parametrize("msg", [
    p.Play(leg="w1-in1", files=("/a.wav", "/b.wav"), play_id="x", barge_in=True),
    p.Dial(leg="c-b1", uri="sip:a@b", extra_headers=(("X-Ring", "sip:1@x, sip:2@x"),)),
    p.CollectDigits(leg="l", collect_id="c", max_digits=4, terminators="#"),
    p.Incoming(leg="l", sip_call_id="abc", request_uri="sip:100@x", from_uri="<sip:1@x>", to_uri="<sip:100@x>"),
    p.RegState(reg_id="pbx", code=401, reason="Unauthorized", expires=0, registered=False, auth_failed=True),
])
def test_every_message_survives_the_wire(msg):
    assert p.decode(p.encode(msg)) == msg


@pytest.mark.parametrize("line, why", [
    (b"not json", "not JSON"), (b"[1,2]", "JSON object"), (b'{"type":"nope"}', "unknown message type"),
    (b'{"type":"answer"}', "answer:"), (b'{"type":"answer","leg":"x","evil":1}', "unknown fields"),
])
def test_bad_wire_lines_raise_protocol_error_with_reason(line, why):
    with pytest.raises(p.ProtocolError, match=why):
        p.decode(line)


def _plan(tmp_path: Path, flows: dict, entry_points: list, unknown: dict | None = None) -> DialPlan:
    (tmp_path / "prompts").mkdir(exist_ok=True)
    for name in ("welcome", "bye"):
        write_tone(tmp_path / "prompts" / f"{name}.wav", 440, 0.1)
    cfg = Config.model_validate({"flows": flows, "entry_points": entry_points,
                                 "paths": {"prompts": str(tmp_path / "prompts")},
                                 **({"unknown_number": unknown} if unknown else {})})
    return DialPlan(cfg)


def test_flow_answers_before_first_prompt_then_plays_in_order_and_hangs_up(tmp_path: Path):
    plan = _plan(tmp_path, {"demo": [{"play": "welcome"}, {"play": ["bye", "welcome"]}, "hangup"]},
                 [{"number": "100", "flow": "demo"}])
    run = FlowRun(plan, plan.route("100").flow)
    first = run.start()
    assert isinstance(first[0], AnswerCall) and isinstance(first[1], PlayPrompts)
    assert first[1].files[0].endswith("welcome.wav")
    assert run.feed(Answered()) == []
    second = run.feed(PromptsDone())
    assert [Path(f).name for f in second[0].files] == ["bye.wav", "welcome.wav"]
    assert run.feed(PromptsDone()) == [HangUp(200, cause="flow_hangup")]
    assert run.finished and run.path == ["demo:0:play", "demo:1:play", "demo:2:hangup"]
    assert run.feed(PromptsDone()) == []  # nothing after the end


def test_flow_that_runs_off_its_end_hangs_up(tmp_path: Path):
    plan = _plan(tmp_path, {"f": [{"play": "welcome"}]}, [{"number": "1", "flow": "f"}])
    run = FlowRun(plan, plan.route("1").flow)
    run.start()
    assert run.feed(PromptsDone()) == [HangUp(200, cause="flow_end")]


def test_transfer_that_fails_continues_with_next_step(tmp_path: Path):
    plan = _plan(tmp_path, {"t": [{"transfer": "sip:op@127.0.0.1"}, {"play": "bye"}]}, [{"number": "1", "flow": "t"}])
    run = FlowRun(plan, plan.route("1").flow)
    acts = run.start()
    assert isinstance(acts[0], AnswerCall) and acts[1] == Connect("sip:op@127.0.0.1")
    nxt = run.feed(ConnectEnded("busy", 486))
    assert isinstance(nxt[0], PlayPrompts) and run.variables["transfer_result"] == "busy"


def test_entry_points_exact_beats_longest_prefix_beats_pattern_and_unknown_is_rejected(tmp_path: Path):
    flows = {n: [{"play": "welcome"}] for n in ("exact", "short", "long", "rx")}
    plan = _plan(tmp_path, flows, [{"pattern": r"\d{4}", "flow": "rx"}, {"prefix": "45", "flow": "short"},
                                   {"prefix": "4570", "flow": "long"}, {"number": "4570", "flow": "exact"}])
    assert plan.route("4570").flow.name == "exact"
    assert plan.route("45701234").flow.name == "long"
    assert plan.route("4511").flow.name == "short"
    assert plan.route("1234").flow.name == "rx"
    miss = plan.route("12345")
    assert miss.flow is None and miss.reject == 404


def test_unknown_number_can_go_to_a_flow(tmp_path: Path):
    plan = _plan(tmp_path, {"f": [{"play": "welcome"}]}, [], unknown={"flow": "f"})
    assert plan.route("999").flow.name == "f"


@pytest.mark.parametrize("uri, user", [
    ('"Bob" <sip:+4512345678@pbx.example.com>;tag=a1', "+4512345678"),
    ("sip:100@127.0.0.1:5060", "100"), ("<sips:alice@h;transport=tls>", "alice"), ("sip:host.only", ""),
])
def test_sip_user_part(uri, user):
    assert sip_user(uri) == user


def test_registration_backs_off_exponentially_and_auth_failure_waits_long():
    reg = RegistrationState(UpstreamRegistration(name="pbx", registrar="sip:127.0.0.1:5070", username="u",
                                                 password="p"), contact="sip:u@127.0.0.1:5060")
    waits = []
    for _ in range(4):
        assert reg.on_result(503, "Service Unavailable", 0, False, False, now=0.0) == "registration.failed"
        waits.append(reg.retry_at)
    assert waits == [2.0, 4.0, 8.0, 16.0]
    assert reg.on_result(200, "OK", 300, True, False, now=0.0) == "registration.ok"
    assert reg.failures == 0 and reg.retry_at is None
    assert reg.on_result(401, "Unauthorized", 0, False, True, now=10.0) == "registration.auth_failed"
    assert reg.retry_at == 10.0 + AUTH_FAILED_RETRY and reg.state == "auth_failed"
    assert reg.spec.address_of_record == "sip:u@127.0.0.1"
