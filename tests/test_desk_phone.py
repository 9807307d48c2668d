"""The desk's WebRTC phone in a real headless Chromium: JsSIP registers at the edge over WSS,
a caller presses 1 and the page rings with the caller's number, alice answers by clicking,
the media goes Chromium (DTLS-SRTP, ICE) <-> rtpengine <-> the worker (plain RTP, G.711): the
caller hears alice's tone (her fake microphone) and the page hears the caller's tone (WebAudio
analyser). Screenshots in /tmp/desk-shots."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from ringmaster import protocol as p
from ringmaster.edge.rtpengine import ng_ping
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, read_wav, rms, write_tone
from tests.helpers.browser import Browser
from tests.helpers.phone import Phone
from tests.test_acd_calls import HOLD, acd_config, agents_up, wait_agent
from tests.test_api import http
from tests.test_desk import CHROMIUM_TLS, SHOTS, desk_config
from tests.test_supervision import _ours, _wait

CALLER, AGENT = 700.0, 1300.0


def media_flags(mic: Path) -> tuple[str, ...]:
    """Chromium's fake microphone playing `mic` (a WAV), no permission prompt, audio plays
    without a gesture (headless has no speakers: the analyser listens)."""
    return (*CHROMIUM_TLS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required")


async def record(phone: Phone, leg: str, path: Path, seconds: float) -> None:
    phone.send(p.RecordStart(rec_id=path.stem, legs=(leg,), path=str(path)))
    await asyncio.sleep(seconds)
    phone.send(p.RecordStop(rec_id=path.stem))
    await phone.wait(p.RecordingDone, lambda m: m.rec_id == path.stem)


def webrtc_config(d: Any) -> None:
    d.config["sip"]["webrtc"] = {"listen": f"127.0.0.1:{d.ports.wss}", "control_port": d.ports.rtpengine_ng,
                                 "rtp_ports": d.ports.rtpengine}


async def sign_in(browser: Browser, agent: str, password: str) -> None:
    await browser.until("!document.getElementById('signin').hidden")
    await browser.js(f"document.getElementById('agent').value={agent!r};"
                     f"document.getElementById('password').value={password!r};"
                     "document.getElementById('signin-btn').click()")
    await browser.until("!document.getElementById('desk').hidden")


@pytest.mark.timeout(120)
async def test_caller_presses_1_page_rings_alice_answers_by_click_and_both_hear_each_other(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.config["agents"]["alice"]["name"] = "Alice"
    d.config["flows"]["main"] = [{"menu": {"greeting": "welcome", "options": {1: "sales"}, "timeout": 5.0,
                                           "invalid_prompt": "other", "timeout_prompt": "other"}}, "hangup",
                                 {"id": "sales", "set": {"topic": "billing"}}, {"queue": "sales"}, "hangup"]
    base = desk_config(d)
    webrtc_config(d)
    d.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    write_tone(tmp_path / "alice-mic.wav", AGENT, 60, rate=48000)
    write_tone(tmp_path / "caller.wav", CALLER, 30)
    browser = await Browser(d.ports.base + 7).open(f"{base}/desk", args=media_flags(tmp_path / "alice-mic.wav"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        await sign_in(browser, "alice", "alice-secret")
        await browser.until("window.deskPhone.registered", timeout=10)
        wait_agent(d, "alice", "available")  # the edge told the controller: her browser is her phone
        await browser.screenshot(SHOTS / "10-phone-registered.png")

        a = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(1.0)
        caller.send(p.SendDtmf(leg=a, digits="1"))
        who = await browser.until("window.deskPhone.state === 'ringing' && document.getElementById('call-who').textContent",
                                  timeout=10)
        assert "4511223344" in who, who
        # the customer card pops with the ring: the caller and what the IVR set
        assert await browser.until("document.querySelector('#card [data-field=topic]')?.textContent === 'billing'")
        assert await browser.js("document.querySelector('#card [data-field=Caller]').textContent") == "4511223344"
        wait_agent(d, "alice", "ringing")
        await browser.screenshot(SHOTS / "11-ringing.png")
        await browser.js("document.getElementById('answer').click()")
        await browser.until("window.deskPhone.state === 'talking' && window.deskPhone.analyser !== null", timeout=10)
        wait_agent(d, "alice", "on-call")
        await browser.screenshot(SHOTS / "12-talking.png")

        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        caller.send(p.RecordStart(rec_id="talk", legs=(a,), path=str(tmp_path / "caller_heard.wav")))
        await asyncio.sleep(2.5)
        peaks = []
        for _ in range(10):
            peaks.append(await browser.js("JSON.stringify(window.deskPhone.peak())"))
            await asyncio.sleep(0.1)
        caller.send(p.RecordStop(rec_id="talk"))
        await caller.wait(p.RecordingDone, lambda m: m.rec_id == "talk")

        # hold from the page: the caller hears the queue's hold music instead of alice
        await browser.js("document.getElementById('hold').click()")
        await browser.until("document.getElementById('hold').getAttribute('aria-pressed') === 'true'")
        d.wait_event("call.hold")
        await asyncio.sleep(0.5)
        await record(caller, a, tmp_path / "held.wav", 1.5)
        await browser.screenshot(SHOTS / "13-on-hold.png")
        await browser.js("document.getElementById('hold').click()")
        await browser.until("document.getElementById('hold').getAttribute('aria-pressed') === 'false'")
        d.wait_event("call.unhold")
        await asyncio.sleep(0.5)
        await record(caller, a, tmp_path / "resumed.wav", 1.5)
        # mute: alice's microphone sends silence; unmute brings her back
        await browser.js("document.getElementById('mute').click()")
        await browser.until("document.getElementById('mute').getAttribute('aria-pressed') === 'true'")
        await asyncio.sleep(0.5)
        await record(caller, a, tmp_path / "muted.wav", 1.5)
        await browser.screenshot(SHOTS / "14-muted.png")
        await browser.js("document.getElementById('mute').click()")
        await browser.until("document.getElementById('mute').getAttribute('aria-pressed') === 'false'")
        # the keypad: RFC 4733 events in the call's RTP (Chromium's RTCDTMFSender)
        for key in "5#":
            await browser.js(f"document.querySelector('[data-dtmf=\"{key}\"]').click()")
            await asyncio.sleep(0.4)
        assert await browser.until("window.deskPhone.tonesSent.join('') === '5#'")

        await browser.js("document.getElementById('hangup').click()")
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        await browser.until("window.deskPhone.state === 'idle'")

        # paused for lunch at the state button: the next caller waits, the page does not ring
        await browser.js("document.getElementById('state').click()")
        await browser.js("document.querySelector('[data-state-option=pause][data-reason=lunch]').click()")
        await browser.until("document.getElementById('state-label').textContent === 'Paused: lunch'")
        wait_agent(d, "alice", "paused:lunch")
        b = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(1.0)
        caller.send(p.SendDtmf(leg=b, digits="1"))
        await asyncio.sleep(3.0)
        assert await browser.js("window.deskPhone.state") == "idle"
        assert json.loads(http(d, "GET", "/api/queues", "operator")[2])["queues"]["sales"]["waiting"] == 1
        await browser.screenshot(SHOTS / "15-paused-caller-waits.png")
        await caller.hangup(b)
    finally:
        await browser.close()
        await caller.stop()
    heard = [json.loads(x) for x in peaks if x and x != "null"]
    assert heard, peaks
    assert sum(abs(h["freq"] - CALLER) < 20 and h["db"] > -70 for h in heard) >= 7, heard  # the page hears the caller
    samples, _ = read_wav(tmp_path / "caller_heard.wav")
    assert has_tone(samples, AGENT, tol=TONES_TOL), dominant_frequencies(samples)  # the caller hears alice
    held, _ = read_wav(tmp_path / "held.wav")
    assert has_tone(held, HOLD, tol=TONES_TOL) and not has_tone(held, AGENT, tol=TONES_TOL, min_share=0.2), \
        dominant_frequencies(held)
    resumed, _ = read_wav(tmp_path / "resumed.wav")
    assert has_tone(resumed, AGENT, tol=TONES_TOL), dominant_frequencies(resumed)
    muted, _ = read_wav(tmp_path / "muted.wav")
    tail = muted[len(muted) // 3:]  # what was still in flight when the button was pressed is over
    assert rms(tail) < 0.02 * rms(resumed), (rms(tail), rms(resumed))  # silence, not her tone
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed" and row["hangup_by"] == "agent", row


async def test_rtpengine_is_restarted_when_killed_and_stopped_with_the_daemon(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    desk_config(d)
    webrtc_config(d)
    d.start()

    def rtpengines() -> list[int]:
        return [pid for pid, cmd in _ours(d.dir) if "rtpengine" in cmd and f"--listen-ng=127.0.0.1:{d.ports.rtpengine_ng}" in cmd]

    (first,) = rtpengines()
    assert await ng_ping(d.ports.rtpengine_ng)
    os.kill(first, signal.SIGKILL)
    (second,) = _wait(lambda: [pid for pid in rtpengines() if pid != first], 10, "rtpengine restarted")
    assert d.wait_event("rtpengine.died") and second != first
    for _ in range(50):
        if await ng_ping(d.ports.rtpengine_ng):
            break
        await asyncio.sleep(0.1)
    assert await ng_ping(d.ports.rtpengine_ng)
    assert d.stop() == 0
    assert rtpengines() == [], "rtpengine left running after SIGTERM"


BOB = 1700.0


@pytest.mark.timeout(120)
async def test_alice_transfers_from_the_page_to_bob_who_answers_and_the_caller_hears_bob(daemon_factory,
                                                                                          tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare
    acd_config(d, {"strategy": "linear", "members": ["alice"], "wrapup": 5}, agents=("alice", "bob"))
    d.config["queues"]["support"] = {"moh": "hold", "strategy": "linear", "members": ["bob"]}
    base = desk_config(d)
    webrtc_config(d)
    d.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    write_tone(tmp_path / "alice-mic.wav", AGENT, 60, rate=48000)
    write_tone(tmp_path / "bob.wav", BOB, 30)
    browser = await Browser(d.ports.base + 7).open(f"{base}/desk", args=media_flags(tmp_path / "alice-mic.wav"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    (bob,) = await agents_up(d, ("bob",))
    try:
        await sign_in(browser, "alice", "alice-secret")
        await browser.until("window.deskPhone.registered", timeout=10)
        wait_agent(d, "alice", "available")
        assert await browser.js("document.getElementById('transfer').hidden")  # no call: no Transfer
        a = await caller.call(f"sip:500@{d.edge}")
        await browser.until("window.deskPhone.state === 'ringing'", timeout=10)
        await browser.js("document.getElementById('answer').click()")
        await browser.until("window.deskPhone.state === 'talking'", timeout=10)
        wait_agent(d, "alice", "on-call")

        # the control offers what the server lists for the call in hand
        await browser.js("document.getElementById('transfer').click()")
        await browser.js("const k = document.getElementById('transfer-kind'); k.value = 'agent';"
                         "k.dispatchEvent(new Event('change'))")
        names = await browser.until("[...document.querySelectorAll('#transfer-targets option')].map(o => o.value)"
                                    ".join(',') || false")
        assert names == "bob", names
        await browser.js("document.getElementById('transfer-kind').value = 'queue';"
                         "document.getElementById('transfer-kind').dispatchEvent(new Event('change'))")
        assert await browser.until("[...document.querySelectorAll('#transfer-targets option')].map(o => o.value)"
                                   ".join(',') || false") == "sales,support"
        # an unknown agent: refused by the plan's rules, the reason in the page, the call stays
        await browser.js("document.getElementById('transfer-kind').value = 'agent';"
                         "document.getElementById('transfer-target').value = 'nobody';"
                         "document.getElementById('transfer-go').click()")
        refused = await browser.until("document.getElementById('transfer-error').textContent || false")
        assert "unknown agent 'nobody'" in refused, refused
        assert await browser.js("window.deskPhone.state") == "talking"
        d.wait_event("acd.transfer_refused")
        await browser.screenshot(SHOTS / "16-transfer-refused.png")

        await browser.js("document.getElementById('transfer-target').value = 'bob';"
                         "document.getElementById('transfer-go').click()")
        inc = await bob.wait(p.Incoming, timeout=10)  # bob rings, alone
        done = d.wait_event("acd.blind_transfer")[0]  # the API's code path, by the desk
        assert (done["agent"], done["kind"], done["target"], done["via"]) == ("alice", "agent", "bob", "desk"), done
        await browser.until("window.deskPhone.state === 'idle'", timeout=10)  # alice's leg was hung up
        wait_agent(d, "bob", "ringing")
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        wait_agent(d, "bob", "on-call")
        label = await browser.until("document.getElementById('state-label').textContent === 'Wrap-up' && "
                                    "document.getElementById('state-label').textContent")
        assert label == "Wrap-up", label
        assert await browser.js("document.getElementById('call').hidden")
        await browser.screenshot(SHOTS / "16-transfer.png")
        await asyncio.sleep(0.5)
        await record(caller, a, tmp_path / "caller_heard_bob.wav", 1.5)
        bob.send(p.Hangup(leg=inc.leg))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
    finally:
        await browser.close()
        await caller.stop()
        await bob.stop()
    heard, _ = read_wav(tmp_path / "caller_heard_bob.wav")
    assert has_tone(heard, BOB, tol=TONES_TOL) and not has_tone(heard, AGENT, tol=TONES_TOL, min_share=0.2), \
        dominant_frequencies(heard)
    rows = d.wait_calls_ended(1)
    assert any(r["agent"] == "bob" and r["disposition"] == "completed" for r in rows), rows
