"""Direct media after bridge (sip.direct_media, worker/directmedia.py, route DIRECTMEDIA of the
edge): once the queue bridges caller and agent, both are re-INVITEd so that their RTP flows
between them and the worker keeps only the signalling.

The proof that the media left the worker: the worker process is frozen (SIGSTOP) while the
parties talk, and each still hears the other's tone. A recorded queue keeps its media in the
worker (the recorder needs both voices there)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from ringmaster import protocol as p
from ringmaster.worker.directmedia import audio_section, first_offer, offer_for, origin_of, with_origin
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, read_wav, write_tone
from tests.helpers.phone import Phone
from tests.helpers.sipp import agent_scenario, run_sipp
from tests.test_acd_calls import acd_config, register, wait_agent
from tests.test_leg_slots import queue_config, start_agents, wait_slots_free

CALLER, AGENT = 700.0, 1300.0

PJSUA_ANSWER = ("v=0\r\no=- 3950000001 3950000002 IN IP4 127.0.0.1\r\ns=pjmedia\r\n"
                "b=AS:84\r\nt=0 0\r\na=X-nat:0\r\nm=audio 20010 RTP/AVP 0 101\r\n"
                "c=IN IP4 127.0.0.1\r\nb=TIAS:64000\r\na=rtcp:20011 IN IP4 127.0.0.1\r\n"
                "a=sendrecv\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                "a=fmtp:101 0-16\r\n")
AGENT_ANSWER = ("v=0\r\no=agent 53655765 2353687637 IN IP4 192.0.2.7\r\ns=-\r\n"
                "c=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\n"
                "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                "a=sendonly\r\n")


def test_offer_carries_the_peer_media_under_our_origin_at_the_next_version() -> None:
    made = offer_for(PJSUA_ANSWER, AGENT_ANSWER)
    assert made is not None
    body, origin = made
    lines = body.split("\r\n")
    assert lines[1] == "o=- 3950000001 3950000003 IN IP4 127.0.0.1" == origin.line()
    assert "c=IN IP4 192.0.2.7" in lines and "m=audio 6000 RTP/AVP 0 8 101" in lines
    assert "a=sendonly" in lines  # the peer's direction, as the peer wrote it (RFC 3264 5.1)
    assert not any(line.startswith("a=X-nat") or "20010" in line for line in lines)
    assert body.endswith("\r\n") and "\n\n" not in body
    # pjsua's own offer is made to carry the same o= line
    assert origin_of(with_origin(PJSUA_ANSWER, origin)) == origin


@pytest.mark.parametrize("peer", [
    "v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n",
    "v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n",
    "v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
    "v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n",
    "",
])
def test_no_offer_from_an_sdp_without_plain_rtp_audio(peer: str) -> None:
    # refused stream, SRTP, no connection address, no audio, nothing: the media stays anchored
    assert offer_for(PJSUA_ANSWER, peer) is None
    assert audio_section(peer) is None


def test_no_offer_without_our_own_origin() -> None:
    assert offer_for("v=0\r\ns=-\r\n", AGENT_ANSWER) is None


def test_a_first_offer_carries_the_caller_media_under_a_fresh_origin_of_ours() -> None:
    made = first_offer(AGENT_ANSWER, "127.0.0.1")
    assert made is not None
    body, origin = made
    lines = body.split("\r\n")
    assert lines[1] == origin.line() and origin.user == "-" and origin.version == 1
    assert origin.rest == "IN IP4 127.0.0.1" and origin.session.isdigit()
    assert "c=IN IP4 192.0.2.7" in lines and "m=audio 6000 RTP/AVP 0 8 101" in lines
    assert first_offer(AGENT_ANSWER, "::1")[1].rest == "IN IP6 ::1"  # type: ignore[index]
    assert first_offer("v=0\r\ns=-\r\nm=audio 0 RTP/AVP 0\r\n", "127.0.0.1") is None


def _worker_pids(d) -> list[int]:  # type: ignore[no-untyped-def]
    st = d.status()
    return [w["pid"] for w in st["workers"] if w.get("pid")]


async def _talk(d, tmp_path: Path, record: bool) -> tuple[Path, Path, list[int]]:  # type: ignore[no-untyped-def]
    write_tone(tmp_path / "caller.wav", CALLER, 30)
    write_tone(tmp_path / "agent.wav", AGENT, 30)
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    frozen: list[int] = []
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await agent.wait(p.Incoming, timeout=10)
        agent.send(p.Answer(leg=inc.leg))
        await agent.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        if not record:
            await asyncio.to_thread(d.wait_event, "call.media_direct", 1, 10.0)
        else:
            await asyncio.sleep(1.0)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        agent.send(p.Play(leg=inc.leg, files=(str(tmp_path / "agent.wav"),), loop=True))
        await asyncio.sleep(0.3)
        if not record:
            frozen = _worker_pids(d)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)  # the worker can relay nothing now
        caller.send(p.RecordStart(rec_id="talk", legs=(a,), path=str(tmp_path / "caller_heard.wav")))
        agent.send(p.RecordStart(rec_id="talk", legs=(inc.leg,), path=str(tmp_path / "agent_heard.wav")))
        await asyncio.sleep(1.5)
        caller.send(p.RecordStop(rec_id="talk"))
        agent.send(p.RecordStop(rec_id="talk"))
        await caller.wait(p.RecordingDone, lambda m: m.rec_id == "talk")
        await agent.wait(p.RecordingDone, lambda m: m.rec_id == "talk")
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        caller.send(p.Hangup(leg=a))
        await agent.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=8)
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        await caller.stop()
        await agent.stop()
    return tmp_path / "caller_heard.wav", tmp_path / "agent_heard.wav", frozen


async def test_bridged_parties_talk_directly_while_the_worker_is_frozen(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.config["sip"]["direct_media"] = True
    d.start()
    caller_heard, agent_heard, frozen = await _talk(d, tmp_path, record=False)
    assert frozen
    heard_by_caller, _ = read_wav(caller_heard)
    heard_by_agent, _ = read_wav(agent_heard)
    assert has_tone(heard_by_caller, AGENT, tol=TONES_TOL), dominant_frequencies(heard_by_caller)
    assert has_tone(heard_by_agent, CALLER, tol=TONES_TOL), dominant_frequencies(heard_by_agent)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed" and row["hangup_by"] == "caller"
    st = d.status()
    assert st["calls"]["media_paths"] == {"direct": 1, "anchored": 0}
    for _ in range(70):  # the edge's counters are read every 5 s
        if "direct_media" in st["edge"]["counters"]:
            break
        await asyncio.sleep(0.1)
        st = d.status()
    assert st["edge"]["counters"]["direct_media"] == 2  # one re-INVITE per leg, body set by the edge
    assert all(w["slots_used"] == 0 for w in st["workers"])  # both legs ended in the worker too


async def test_a_recorded_queue_keeps_the_media_in_the_worker(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "record": {"template": "{queue}/{call_id}.wav"}})
    d.config["sip"]["direct_media"] = True
    d.start()
    caller_heard, agent_heard, _ = await _talk(d, tmp_path, record=True)
    heard_by_caller, _ = read_wav(caller_heard)
    assert has_tone(heard_by_caller, AGENT, tol=TONES_TOL), dominant_frequencies(heard_by_caller)
    row = d.wait_calls_ended(1)[0]
    mixed, _ = read_wav(Path(row["recording"]))
    assert has_tone(mixed, CALLER, tol=TONES_TOL) and has_tone(mixed, AGENT, tol=TONES_TOL)
    st = d.status()
    assert st["calls"]["media_paths"] == {"direct": 0, "anchored": 0}  # never asked to leave


def _sipp_queue(d, take_reinvite: bool):  # type: ignore[no-untyped-def]
    trunk = d.ports.caller(20)
    queue_config(d, trunk)
    d.config["sip"]["direct_media"] = True
    d.start()
    return start_agents(d, agent_scenario(d.dir, copy_record_route=False, take_reinvite=take_reinvite), trunk)


def test_sipp_agents_that_omit_record_route_take_direct_media_and_free_their_slots(daemon_factory):
    # the agent's re-INVITE still reaches it through the edge (the edge Record-Routes the
    # agent leg's 2xx itself), where the body is set
    d = daemon_factory(workers=1, start=False)
    agents = _sipp_queue(d, take_reinvite=True)
    try:
        for i in range(3):
            r = run_sipp("uac_hold_reinvite.xml", d.edge, d.ports.caller(0), d.dir, service="500",
                         hold_ms=1000, timeout=20)
            assert (r.successful, r.failed) == (1, 0), f"call {i + 1}: {r.output}"
        rows = d.wait_calls_ended(3)
        assert [r["disposition"] for r in rows] == ["completed"] * 3 and all(r["agent"] for r in rows)
        assert d.status()["calls"]["media_paths"] == {"direct": 3, "anchored": 0}
        wait_slots_free(d, timeout=5)
    finally:
        agents.kill()
        agents.wait()


def test_an_agent_that_refuses_reinvites_gets_direct_media_from_its_first_invite(daemon_factory):
    # the agent's INVITE offered the caller's media (Dial.offer_media_of): only the caller is
    # re-INVITEd, so an agent that answers every re-INVITE 488 still talks to the caller direct
    d = daemon_factory(workers=1, start=False)
    agents = _sipp_queue(d, take_reinvite=False)
    try:
        r = run_sipp("uac_hold_reinvite.xml", d.edge, d.ports.caller(0), d.dir, service="500",
                     hold_ms=1000, timeout=20)
        assert (r.successful, r.failed) == (1, 0), r.output
        row = d.wait_calls_ended(1)[0]
        assert row["disposition"] == "completed" and row["agent"] and row["hangup_by"] == "caller"
        assert d.status()["calls"]["media_paths"] == {"direct": 1, "anchored": 0}
        wait_slots_free(d, timeout=5)
    finally:
        agents.kill()
        agents.wait()


def test_a_caller_that_refuses_the_reinvite_gets_the_agent_media_back_in_the_worker(daemon_factory):
    # the agent leg was dialled with the caller's media; the caller's re-INVITE fails (488), so
    # the agent leg is re-INVITEd with the worker's own media and the bridge stays anchored
    d = daemon_factory(workers=1, start=False)
    agents = _sipp_queue(d, take_reinvite=True)
    try:
        r = run_sipp("uac_refuse_reinvite.xml", d.edge, d.ports.caller(0), d.dir, service="500",
                     hold_ms=1500, timeout=20)
        assert (r.successful, r.failed) == (1, 0), r.output
        row = d.wait_calls_ended(1)[0]
        assert row["disposition"] == "completed" and row["agent"] and row["hangup_by"] == "caller"
        assert d.status()["calls"]["media_paths"] == {"direct": 0, "anchored": 1}
        assert "488" in d.events("call.media_anchored")[0]["reason"]
        wait_slots_free(d, timeout=5)
    finally:
        agents.kill()
        agents.wait()
