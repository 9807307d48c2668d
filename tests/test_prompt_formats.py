"""Prompts and hold music the workers cannot join (a 16 kHz WAV beside 8 kHz ones, a file
that is no WAV at all): `check` names each with why, the daemon converts the one sox can read
(once, one warning) and leaves out the other (one warning), and callers hear every good file:
the hold music of a folder with a bad file, and a `play` list with bad files in it. Real
daemon, real pjsua2 caller, tones detected in what the caller received."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import wave
from pathlib import Path

from ringmaster import protocol as p
from tests.helpers.audio import read_wav, tone_sequence, write_tone
from tests.helpers.phone import Phone
from tests.test_acd_calls import acd_config

TONES = {"first": 500.0, "wide": 900.0, "last": 1300.0, "stereo": 1700.0, "new": 2100.0}


def _stereo_tone(path: Path, freq: float, seconds: float) -> None:
    mono = path.with_suffix(".mono.wav")
    write_tone(mono, freq, seconds)
    with wave.open(str(mono), "rb") as r:
        frames = r.readframes(r.getnframes())
    mono.unlink()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(frames[i:i + 2] * 2 for i in range(0, len(frames), 2)))


def _bad_files(folder: Path) -> None:
    """first/last: good 8 kHz; wide: a 16 kHz WAV; stereo: a 2-channel WAV; junk: not audio."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tone(folder / "1-first.wav", TONES["first"], 1.0)
    write_tone(folder / "2-wide.wav", TONES["wide"], 1.0, rate=16000)
    write_tone(folder / "4-last.wav", TONES["last"], 1.0)
    _stereo_tone(folder / "3-stereo.wav", TONES["stereo"], 1.0)
    (folder / "5-junk.wav").write_bytes(b"ID3\x03\x00 this is an mp3 tag, not a RIFF WAVE file" * 20)


def _check(d) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    d.write_config()
    return subprocess.run([sys.executable, "-m", "ringmaster.cli", "check", "-c", str(d.config_path)],
                          capture_output=True, text=True, timeout=60)


async def test_hold_music_folder_with_bad_files_plays_the_good_and_converted_ones(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"members": ["alice"]})  # alice never registers: callers wait with the music
    _bad_files(d.dir / "prompts" / "music")
    d.config["queues"]["sales"]["moh"] = "music"

    out = _check(d)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert any("queues.sales.moh: warning:" in ln and "2-wide.wav: 16000 Hz, not 8000 Hz mono 16-bit PCM WAV" in ln
               for ln in lines), lines
    assert any("3-stereo.wav: 2 channels" in ln and "converted" in ln for ln in lines), lines
    assert any("queues.sales.moh: error:" in ln and "5-junk.wav: not a PCM WAV file" in ln
               and "left out" in ln for ln in lines), lines
    assert not any("1-first.wav" in ln or "4-last.wav" in ln for ln in lines), lines

    d.start()
    converted = d.events("prompt.converted")
    assert sorted(Path(e["file"]).name for e in converted) == ["2-wide.wav", "3-stereo.wav"], converted
    assert [Path(e["file"]).name for e in d.events("prompt.skipped")] == ["5-junk.wav"]

    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()

    async def listen(seconds: float, n: int) -> list[str]:
        leg = await caller.call(f"sip:500@{d.edge}")
        heard = tmp_path / f"hold-{n}.wav"
        caller.send(p.RecordStart(rec_id=leg, legs=(leg,), path=str(heard)))
        await asyncio.sleep(seconds)
        caller.send(p.RecordStop(rec_id=leg))
        await caller.wait(p.RecordingDone, lambda m: m.rec_id == leg)
        await caller.hangup(leg)
        samples, _ = read_wav(heard)
        return [name for name, _ in tone_sequence(samples, TONES)]

    try:
        for n in range(2):
            got = await listen(4.6, n)  # one round of the 4 s folder and a bit
            # in the folder's order, the converted files in their place, the junk left out
            start = got.index("first")
            assert got[start:start + 4] == ["first", "wide", "stereo", "last"], got
        # converted once, at load: not again for each caller
        assert len(d.events("prompt.converted")) == 2 and len(d.events("prompt.skipped")) == 1
        # a 16 kHz file added while running: left out while sox converts it off the event loop
        # (the caller waiting then hears the others), played from the next caller on
        write_tone(d.dir / "prompts" / "music" / "6-new.wav", TONES["new"], 1.0, rate=16000)
        await listen(0.5, 2)
        d.wait_event("prompt.converted", 3, timeout=10)
        got = await listen(5.6, 3)
        start = got.index("first")
        assert got[start:start + 5] == ["first", "wide", "stereo", "last", "new"], got
    finally:
        await caller.stop()
    assert len(d.events("prompt.converted")) == 3 and len(d.events("prompt.skipped")) == 1


async def test_a_play_list_with_bad_files_plays_every_good_one(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    folder = d.dir / "prompts"
    _bad_files(folder)
    d.config["flows"]["list"] = [{"play": ["1-first", "2-wide", "5-junk", "3-stereo", "4-last"]}, "hangup"]
    d.config["entry_points"] = [{"number": "100", "flow": "list"}]

    out = _check(d)
    lines = out.stderr.splitlines()
    assert out.returncode == 1, out.stdout + out.stderr
    assert any("flows.list.0 (play): error:" in ln and "5-junk.wav: not a PCM WAV file" in ln for ln in lines), lines
    assert any("flows.list.0 (play): warning:" in ln and "2-wide.wav: 16000 Hz" in ln for ln in lines), lines

    d.start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        leg = await caller.call(f"sip:100@{d.edge}")
        heard_file = d.dir / "heard.wav"
        caller.send(p.RecordStart(rec_id=leg, legs=(leg,), path=str(heard_file)))
        await caller.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=20)
        caller.send(p.RecordStop(rec_id=leg))
        await caller.wait(p.RecordingDone, lambda m: m.rec_id == leg)
    finally:
        await caller.stop()
    samples, _ = read_wav(heard_file)
    got = [name for name, _ in tone_sequence(samples, TONES)]
    heard = [t for t in got if t in TONES]
    assert heard == ["first", "wide", "stereo", "last"], got
    rows = d.wait_calls_ended(1)
    assert rows[0]["disposition"] == "completed", rows
