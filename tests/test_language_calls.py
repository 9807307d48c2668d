"""The caller's language with real calls: pjsua2 test phones dial the edge, choose a language
in the menu and record what they hear. Prompts are pure tones (a different one per language),
so the tones heard prove which language's files played; `say` steps and the queue's spoken
announcements are real espeak-ng speech, found in the recording as sound that is no tone."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import numpy as np

from ringmaster import protocol as p
from tests.helpers.audio import read_wav, rms, write_tone
from tests.helpers.phone import Phone

TONES = {"menu": 500, "welcome_en": 700, "welcome_da": 900, "hold": 440}


def label_audio(samples: np.ndarray, rate: int = 8000, window: float = 0.05) -> list[tuple[str, float]]:
    """What was heard, in order: known tones by name, "speech" for loud sound whose energy is
    not in one narrow peak (a prompt tone keeps >60 % of it within +-30 Hz; voice does not).
    Silences do not split what they lie in (pauses between words, the hold music's loop)."""
    n = int(rate * window)
    labels = []
    for i in range(0, len(samples) - n + 1, n):
        chunk = samples[i:i + n].astype(np.float64)
        if rms(chunk) < 300:
            labels.append("")
            continue
        spec = np.abs(np.fft.rfft(chunk * np.hanning(n), 8 * n)) ** 2
        freqs = np.fft.rfftfreq(8 * n, 1 / rate)
        k = int(spec.argmax())
        peak = spec[(freqs > freqs[k] - 30) & (freqs < freqs[k] + 30)].sum() / spec.sum()
        name = min(TONES, key=lambda t: abs(TONES[t] - freqs[k]))
        labels.append(name if peak > 0.6 and abs(TONES[name] - freqs[k]) < 25 else "speech")
    runs: list[list] = []
    for lab in labels:
        if runs and runs[-1][0] == lab:
            runs[-1][1] += window
        else:
            runs.append([lab, window])
    # silences are pauses between words or loops of the music; tone edges and the music's
    # loop point make short blips
    kept: list[list] = []
    for lab, secs in runs:
        if lab == "":
            continue
        if secs < (0.3 if lab == "speech" else 0.15):
            continue
        if kept and kept[-1][0] == lab:
            kept[-1][1] += secs
        else:
            kept.append([lab, secs])
    return [(lab, round(secs, 2)) for lab, secs in kept]


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        return w.getnframes() / w.getframerate()


def language_config(d) -> None:  # type: ignore[no-untyped-def]
    prompts = d.dir / "prompts"
    (prompts / "da").mkdir(parents=True, exist_ok=True)
    # English (the fallback) in the prompts dir itself, Danish in da/: each language its own tone
    write_tone(prompts / "menu.wav", TONES["menu"], 2.5)
    write_tone(prompts / "da" / "menu.wav", TONES["menu"], 2.5)  # the menu plays before a choice: same tone
    write_tone(prompts / "welcome.wav", TONES["welcome_en"], 0.8)
    write_tone(prompts / "da" / "welcome.wav", TONES["welcome_da"], 0.8)
    for name in ("invalid", "timeout"):
        write_tone(prompts / f"{name}.wav", 1500, 0.3)
        write_tone(prompts / "da" / f"{name}.wav", 1500, 0.3)
    write_tone(prompts / "hold.wav", TONES["hold"], 3.0)
    d.config["languages"] = {"supported": ["en", "da"], "fallback": "en"}
    d.config["tts"] = {"voices": {"en": "en-us", "da": "da"}}
    d.config["queues"] = {"support": {
        "moh": "hold",
        "announce": {"every": 5, "wait_time": False,
                     "say": {"position": {"en": "You are number ${position} in line.",
                                          "da": "Du er nummer ${position} i køen."}}}}}
    d.config["flows"] = {"main": [
        {"menu": {"greeting": "menu", "options": {1: "en", 2: "da"}, "timeout": 3}},
        {"id": "en", "set": {"language": "en"}}, {"goto": "hello"},
        {"id": "da", "set": {"language": "da"}},
        {"id": "hello", "play": "${language}/welcome"},
        {"say": {"text": {"en": "You are calling from ${caller:digits}.",
                          "da": "Du ringer fra ${caller:digits}."}}},
        {"queue": "support"}]}
    d.config["entry_points"] = [{"number": "100", "flow": "main"}]


async def _call(d, phone: Phone, digit: str, seconds: float, path: Path) -> None:  # type: ignore[no-untyped-def]
    leg = await phone.call(f"sip:100@{d.edge}")
    phone.send(p.RecordStart(rec_id=leg, legs=(leg,), path=str(path)))
    await asyncio.sleep(1.0)
    phone.send(p.SendDtmf(leg=leg, digits=digit))
    await asyncio.sleep(seconds - 1.0)
    phone.send(p.RecordStop(rec_id=leg))
    await phone.wait(p.RecordingDone, lambda m: m.rec_id == leg)
    await phone.hangup(leg)


async def test_danish_caller_hears_danish_prompts_and_a_danish_say_of_their_queue_position(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    language_config(d)
    d.start()
    english = await Phone("4511112222", d.ports.caller(0), d.ports.base + 80).start()
    danish = await Phone("4533334444", d.ports.caller(1), d.ports.base + 96).start()
    try:
        en_task = asyncio.create_task(_call(d, english, "1", 15.0, tmp_path / "en.wav"))
        await asyncio.sleep(0.5)  # the English caller joins the queue first: position 1, the Danish one 2
        await _call(d, danish, "2", 15.0, tmp_path / "da.wav")
        await en_task
    finally:
        await english.stop()
        await danish.stop()

    heard_da = label_audio(read_wav(tmp_path / "da.wav")[0])
    heard_en = label_audio(read_wav(tmp_path / "en.wav")[0])
    names_da = [n for n, _ in heard_da]
    names_en = [n for n, _ in heard_en]
    # the menu (the fallback's: no language yet), then Danish prompts only, speech, hold music,
    # the spoken announcement, hold music again
    assert names_da[:6] == ["menu", "welcome_da", "speech", "hold", "speech", "hold"], heard_da
    assert "welcome_en" not in names_da, heard_da
    assert names_en[:6] == ["menu", "welcome_en", "speech", "hold", "speech", "hold"], heard_en
    assert "welcome_da" not in names_en, heard_en

    # what was said: Danish texts in Danish voices, the position of each caller
    said = {(e["language"], e["position"]): e["file"] for e in d.events("acd.announce_said")}
    assert set(said) == {("en", 1), ("da", 2)}, said
    flow_said = {e["language"]: e["file"] for e in d.events("call.say")}
    assert set(flow_said) == {"en", "da"}
    rendered = {(e["language"], e["voice"]) for e in d.events("tts.rendered")}
    assert rendered == {("en", "en-us"), ("da", "da")}
    # each speech file: the workers' format, non-silent, as long as its sentence needs; heard in full
    # "Du er nummer 2 i køen." and "Du ringer fra 4 5 3 3 3 3 4 4 4 4." at 150 words a minute
    for file, low, high in ((said[("da", 2)], 1.0, 3.0), (flow_said["da"], 2.5, 6.0)):
        seconds = wav_seconds(Path(file))
        assert low < seconds < high, (file, seconds)
        assert rms(read_wav(Path(file))[0]) > 1000
        assert Path(file).parent == d.dir / "run" / "tts"
    speech_da = [s for n, s in heard_da if n == "speech"]
    assert abs(speech_da[1] - wav_seconds(Path(said[("da", 2)]))) < 0.8, (speech_da, said)
    row = {r["caller"]: r for r in d.calls()}
    assert json.loads(row["4533334444"]["variables"])["language"] == "da"


async def test_a_danish_number_announces_the_position_with_danish_recordings_and_fallback_digits(daemon_factory,
                                                                                               tmp_path: Path):
    from tests.helpers.audio import tone_sequence

    d = daemon_factory(workers=1, start=False)
    prompts = d.dir / "prompts"
    (prompts / "da").mkdir(parents=True, exist_ok=True)
    (prompts / "digits").mkdir(parents=True, exist_ok=True)
    tones = {"hold": 440, "you_en": 1000, "you_da": 1200, "one": 1600, "inline_en": 1800, "inline_da": 1900}
    write_tone(prompts / "hold.wav", tones["hold"], 3.0)
    write_tone(prompts / "you-are-caller.wav", tones["you_en"], 0.4)
    write_tone(prompts / "da" / "you-are-caller.wav", tones["you_da"], 0.4)
    write_tone(prompts / "digits" / "1.wav", tones["one"], 0.4)  # no Danish recording: the fallback's
    write_tone(prompts / "in-line.wav", tones["inline_en"], 0.4)
    write_tone(prompts / "da" / "in-line.wav", tones["inline_da"], 0.4)
    d.config["languages"] = {"supported": ["en", "da"], "fallback": "en"}
    d.config["queues"] = {"support": {"moh": "hold", "announce": {"every": 5, "wait_time": False}}}
    d.config["flows"] = {"main": [{"queue": "support"}]}
    d.config["entry_points"] = [{"number": "4500", "flow": "main", "variables": {"language": "da"}}]
    d.start()
    phone = await Phone("4533334444", d.ports.caller(0), d.ports.base + 80).start()
    try:
        leg = await phone.call(f"sip:4500@{d.edge}")
        phone.send(p.RecordStart(rec_id="r", legs=(leg,), path=str(tmp_path / "heard.wav")))
        await asyncio.sleep(7.0)
        phone.send(p.RecordStop(rec_id="r"))
        await phone.wait(p.RecordingDone)
        await phone.hangup(leg)
    finally:
        await phone.stop()
    heard = [n for n, _ in tone_sequence(read_wav(tmp_path / "heard.wav")[0], tones)]
    assert heard == ["hold", "you_da", "one", "inline_da", "hold"], heard
