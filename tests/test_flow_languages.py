"""Speaking the caller's language, without SIP: prompts resolved per language with a
fallback, the language set by a menu choice, an entry point or a lookup, `say` texts with
spoken formats, `check` errors with file:line, `simulate`, and real espeak-ng speech."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import wave
from pathlib import Path

import pytest
import yaml

from ringmaster.config import Config, TtsConfig
from ringmaster.flows.actions import DigitsEntered, HangUp, HttpAnswered, PlayPrompts, PromptsDone, Speak
from ringmaster.flows.dialplan import DialPlan, check_flows, node_context
from ringmaster.flows.interpreter import FlowRun
from ringmaster.flows.simulate import simulate
from ringmaster.flows.spoken import render
from ringmaster.tts import Speech, SpeechFailed
from ringmaster.yamlsource import loads
from tests.helpers.audio import read_wav, rms, write_tone

LANGS = {"supported": ["en", "da"], "fallback": "en"}


def prompts(tmp_path: Path, da: tuple[str, ...] = ("welcome", "menu", "invalid", "timeout")) -> Path:
    """English prompts in the prompts dir itself (the fallback's), Danish ones under da/."""
    d = tmp_path / "p"
    (d / "da").mkdir(parents=True, exist_ok=True)
    for name in ("welcome", "menu", "invalid", "timeout", "sales"):
        write_tone(d / f"{name}.wav", 400, 0.05)
    for name in da:
        write_tone(d / "da" / f"{name}.wav", 500, 0.05)
    return d


def plan(tmp_path: Path, flows: dict, da: tuple[str, ...] = ("welcome", "menu", "invalid", "timeout"),
         **extra) -> DialPlan:  # type: ignore[no-untyped-def]
    d = prompts(tmp_path, da)
    cfg = Config.model_validate({"flows": flows, "paths": {"prompts": str(d)}, "languages": LANGS,
                                 "entry_points": [{"number": "100", "flow": next(iter(flows))}], **extra})
    return DialPlan(cfg)


def rel(action: PlayPrompts, base: Path) -> list[str]:
    return [str(Path(f).relative_to(base / "p")) for f in action.files]


CHOOSE = {"main": [{"menu": {"greeting": "menu", "options": {1: "en", 2: "da"}}},
                   {"id": "en", "set": {"language": "en"}}, {"goto": "hello"},
                   {"id": "da", "set": {"language": "da"}},
                   {"id": "hello", "play": ["welcome", "${language}/welcome"]},
                   "hangup"]}


def test_danish_choice_in_the_menu_plays_the_danish_prompts_and_english_plays_the_fallback(tmp_path: Path):
    p = plan(tmp_path, CHOOSE)
    run = FlowRun(p, p.flows["main"])
    first = run.start()
    assert rel(first[1], tmp_path) == ["menu.wav"]  # no language yet: the fallback's, from the prompts dir
    acts = run.feed(DigitsEntered("2", "max_digits"))
    assert rel(acts[0], tmp_path) == ["da/welcome.wav", "da/welcome.wav"]  # plain name and ${language}/ alike
    run2 = FlowRun(p, p.flows["main"])
    run2.start()
    assert rel(run2.feed(DigitsEntered("1", "max_digits"))[0], tmp_path) == ["welcome.wav", "welcome.wav"]


def test_the_fallback_language_may_keep_its_prompts_in_its_own_folder(tmp_path: Path):
    d = prompts(tmp_path)
    (d / "en").mkdir()
    write_tone(d / "en" / "welcome.wav", 600, 0.05)
    cfg = Config.model_validate({"flows": {"f": [{"play": "welcome"}]}, "paths": {"prompts": str(d)},
                                 "languages": LANGS, "entry_points": [{"number": "1", "flow": "f"}]})
    p = DialPlan(cfg)
    assert rel(FlowRun(p, p.flows["f"]).start()[1], tmp_path) == ["en/welcome.wav"]


@pytest.mark.parametrize("value, heard", [("da", "da/welcome.wav"), ("DA-dk", "da/welcome.wav"),
                                          ("da_DK", "da/welcome.wav"), ("fr", "welcome.wav"),
                                          ("../../etc", "welcome.wav"), (None, "welcome.wav")])
def test_a_language_from_outside_is_normalised_and_an_unsupported_one_hears_the_fallback(tmp_path: Path, value, heard):
    p = plan(tmp_path, {"f": [{"play": "welcome"}, "hangup"]})
    variables = {} if value is None else {"language": value}
    run = FlowRun(p, p.flows["f"], variables=variables)
    assert rel(run.start()[1], tmp_path) == [heard]


def test_an_entry_point_sets_the_language_of_its_calls(tmp_path: Path):
    d = prompts(tmp_path)
    cfg = Config.model_validate({"flows": {"f": [{"play": "welcome"}]}, "paths": {"prompts": str(d)},
                                 "languages": LANGS,
                                 "entry_points": [{"number": "4500", "flow": "f", "variables": {"language": "da"}},
                                                  {"prefix": "44", "flow": "f"}]})
    p = DialPlan(cfg)
    route = p.route("4500")
    assert dict(route.variables) == {"language": "da"}
    assert p.route("4401").variables == ()
    run = FlowRun(p, route.flow, variables=dict(route.variables))  # type: ignore[arg-type]
    assert rel(run.start()[1], tmp_path) == ["da/welcome.wav"]


def test_a_lookup_answer_sets_the_language(tmp_path: Path):
    flows = {"f": [{"http": {"endpoint": "crm", "map": {"language": "customer.lang"}}}, {"play": "welcome"}, "hangup"]}
    p = plan(tmp_path, flows, http_endpoints={"crm": {"url": "http://127.0.0.1:9/x"}})
    run = FlowRun(p, p.flows["f"])
    run.start()
    acts = run.feed(HttpAnswered("ok", 200, {"customer": {"lang": "da"}}))
    assert rel(acts[1], tmp_path) == ["da/welcome.wav"]


def test_say_expands_variables_in_the_calls_language_with_its_voice(tmp_path: Path):
    flows = {"f": [{"say": {"text": {"en": "You are number ${position}. Account ${acct:digits}. "
                                           "Balance ${bal:amount:DKK}, due ${due:date}.",
                                     "da": "Du er nummer ${position}. Konto ${acct:digits}. "
                                           "Saldo ${bal:amount:DKK}, forfalder ${due:date}."}}},
                   "hangup"]}
    p = plan(tmp_path, flows, tts={"voices": {"en": "en-us"}})
    vars_ = {"position": 3, "acct": "4512", "bal": "1234.5", "due": "2026-12-24"}
    run = FlowRun(p, p.flows["f"], variables={**vars_, "language": "da"})
    acts = run.start()
    assert acts[1] == Speak("Du er nummer 3. Konto 4 5 1 2. Saldo 1234,50 danske kroner, forfalder 24. december 2026.",
                            "da", "da")
    assert isinstance(run.feed(PromptsDone())[0], HangUp)  # the speech played: the next step
    en = FlowRun(p, p.flows["f"], variables=vars_).start()[1]
    assert en == Speak("You are number 3. Account 4 5 1 2. Balance 1234.50 Danish kroner, due December 24, 2026.",
                       "en", "en-us")


def test_say_leaves_out_an_unset_or_unfit_value_and_says_the_rest(tmp_path: Path):
    text, problems = render("Wait ${w:minutes}, due ${d:date}, for ${who}.", {"w": "150", "d": "soon"}, "da")
    assert text == "Wait 3 minutter, due , for ."
    assert problems == ["${d}: 'soon' is not a date: Invalid isoformat string: 'soon'", "${who} is not set"]


def _check(tmp_path: Path, yaml_text: str) -> list[str]:
    d = prompts(tmp_path)
    src = loads(yaml_text, "plan.yaml")
    cfg = Config.model_validate({**src.data, "paths": {"prompts": str(d)}})
    return [str(e) for e in check_flows(cfg.flows, [], node_context(cfg), src)]


def test_check_names_the_line_and_language_of_a_missing_prompt(tmp_path: Path):
    errs = _check(tmp_path, "languages: {supported: [en, da], fallback: en}\n"
                            "flows:\n  f:\n    - play: welcome\n    - play: sales\n    - play: '${language}/ment'\n")
    d = tmp_path / "p"
    assert errs == [f"plan.yaml:5:13: play: prompt 'sales' for language 'da': file not found: {d}/da/sales.wav",
                    f"plan.yaml:6:13: play: prompt '${{language}}/ment' for language 'en': file not found: {d}/en/ment.wav",
                    f"plan.yaml:6:13: play: prompt '${{language}}/ment' for language 'da': file not found: {d}/da/ment.wav"]


def test_check_refuses_other_variables_in_prompt_names_and_language_without_languages(tmp_path: Path):
    errs = _check(tmp_path, "languages: {supported: [en], fallback: en}\n"
                            "flows:\n  f:\n    - play: '${account}/x'\n")
    assert len(errs) == 1 and errs[0].startswith("plan.yaml:4:13: play: not a prompt file name: ${account}: "
                                                 "only ${language} may appear in a prompt name")
    errs = _check(tmp_path, "flows:\n  f:\n    - menu: {greeting: '${language}/menu', options: {1: x}}\n"
                            "    - id: x\n      hangup:\n")
    assert len(errs) == 1 and errs[0].startswith("plan.yaml:3:13: menu: not a prompt file name: "
                                                 "'${language}/menu' uses ${language} but the config has no "
                                                 "`languages:` section")


def test_check_wants_a_say_text_for_every_supported_language_and_known_formats(tmp_path: Path):
    errs = _check(tmp_path, "languages: {supported: [en, da], fallback: en}\n"
                            "flows:\n  f:\n    - say:\n        text: {en: 'Hello'}\n"
                            "    - say: 'Due ${d:dat}'\n")
    assert errs[0] == "plan.yaml:5:9: say: no text for language(s) da (languages.supported: en, da)"
    assert errs[1] == ("plan.yaml:6:12: say: text: ${d:dat}: unknown format 'dat'; formats: digits, number, amount, "
                       "date, time, minutes (got 'Due ${d:dat}')")
    assert len(errs) == 2


def test_languages_section_is_checked(tmp_path: Path):
    from ringmaster.yamlsource import ConfigInvalid

    path = tmp_path / "c.yaml"
    prompts(tmp_path)
    path.write_text(yaml.safe_dump({"paths": {"prompts": "p"}, "languages": {"supported": ["en", "Danish"],
                                                                             "fallback": "de"}}))
    from ringmaster.config import load_config

    with pytest.raises(ConfigInvalid) as exc:
        load_config(path)
    text = "\n".join(str(e) for e in exc.value.errors)
    assert "c.yaml:5:5: languages.supported.1: String should match pattern" in text


def test_simulate_shows_what_would_be_said_and_in_which_language(tmp_path: Path):
    flows = {"main": [{"menu": {"greeting": "menu", "options": {1: "en", 2: "da"}}},
                      {"id": "en", "set": {"language": "en"}}, {"goto": "hello"},
                      {"id": "da", "set": {"language": "da"}},
                      {"id": "hello", "play": "welcome"},
                      {"say": {"text": {"en": "Your account is ${caller:digits}", "da": "Din konto er ${caller:digits}"}}},
                      "hangup"]}
    sim = simulate(plan(tmp_path, flows), "main", ["2"], caller="4512")
    text = "\n".join(sim.lines)
    assert "say [da, voice da] 'Din konto er 4 5 1 2'" in text, text
    assert sim.variables["language"] == "da"


def test_check_and_simulate_on_the_command_line(tmp_path: Path):
    prompts(tmp_path, da=("welcome",))
    cfg = {"paths": {"prompts": "p"}, "languages": LANGS,
           "flows": {"f": [{"play": "welcome"}, {"play": "menu"}, "hangup"]},
           "entry_points": [{"number": "4500", "flow": "f", "variables": {"language": "da"}}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cli = [sys.executable, "-m", "ringmaster.cli"]
    out = subprocess.run(cli + ["check", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"c.yaml:11:11: play: prompt 'menu' for language 'da': file not found: {tmp_path}/p/da/menu.wav" in out.stderr
    write_tone(tmp_path / "p" / "da" / "menu.wav", 500, 0.05)
    out = subprocess.run(cli + ["check", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(cli + ["simulate", "f", "--called", "4500", "-c", str(path)], capture_output=True, text=True)
    assert "play da/welcome" in out.stdout and '"language": "da"' in out.stdout, out.stdout


# ---------------------------------------------------------------- speech (real espeak-ng + sox)


def _duration(path: Path) -> tuple[float, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate(), w.getframerate(), w.getnchannels()


async def test_espeak_speech_is_8khz_mono_non_silent_and_cached_by_language_voice_and_text(tmp_path: Path):
    speech = Speech(TtsConfig(), tmp_path / "tts")
    da = await speech.render("Du er nummer 3 i køen.", "da", "da")
    seconds, rate, channels = _duration(da)
    assert (rate, channels) == (8000, 1)
    assert 0.8 < seconds < 4.0, seconds
    samples, _ = read_wav(da)
    assert rms(samples) > 1000  # speech normalised to -3 dBFS, not silence
    assert speech.rendered == 1
    again = await speech.render("Du er nummer 3 i køen.", "da", "da")
    assert again == da and speech.rendered == 1  # from the cache
    en = await speech.render("Du er nummer 3 i køen.", "en", "en-us")
    assert en != da and speech.rendered == 2
    # a fresh Speech (a restart) finds the file on disk
    assert await Speech(TtsConfig(), tmp_path / "tts").render("Du er nummer 3 i køen.", "da", "da") == da


async def test_the_same_text_asked_for_at_once_is_rendered_once(tmp_path: Path):
    speech = Speech(TtsConfig(), tmp_path / "tts")
    paths = await asyncio.gather(*(speech.render("Please hold.", "en", "en-us") for _ in range(5)))
    assert len(set(paths)) == 1 and speech.rendered == 1


async def test_a_longer_text_is_longer_speech(tmp_path: Path):
    speech = Speech(TtsConfig(), tmp_path / "tts")
    short = _duration(await speech.render("Tre.", "da", "da"))[0]
    long = _duration(await speech.render("Du er nummer tre i køen. Den forventede ventetid er fem minutter.", "da", "da"))[0]
    assert long > 2 * short


async def test_an_unknown_voice_or_a_missing_engine_is_a_clear_failure(tmp_path: Path):
    speech = Speech(TtsConfig(), tmp_path / "tts")
    with pytest.raises(SpeechFailed, match="voice does not exist"):
        await speech.render("x", "xx", "nosuchvoice")
    broken = Speech(TtsConfig(command="/nonexistent/espeak-ng"), tmp_path / "tts")
    with pytest.raises(SpeechFailed, match="could not run"):
        await broken.render("x", "en", "en")
    assert not list((tmp_path / "tts").glob("*.tmp.wav")) and not list((tmp_path / "tts").glob("*.raw.wav"))


async def test_text_starting_with_a_dash_is_spoken_not_taken_as_an_option(tmp_path: Path):
    speech = Speech(TtsConfig(), tmp_path / "tts")
    elsewhere = tmp_path / "elsewhere.wav"
    path = await speech.render(f"--version -w {elsewhere}", "en", "en")
    samples, _ = read_wav(path)
    assert rms(samples) > 1000 and _duration(path)[0] > 1.5  # the words, spoken
    assert not elsewhere.exists()


def test_check_refuses_a_language_no_one_supports_where_the_plan_sets_one(tmp_path: Path):
    errs = _check(tmp_path, "languages: {supported: [en, da], fallback: en}\n"
                            "flows:\n  f:\n    - set: {language: danish}\n    - set: {language: da-DK}\n"
                            "    - set: {language: '${lang}'}\n    - hangup\n")
    assert errs == ["plan.yaml:4:12: set: language 'danish' is not supported (languages.supported: en, da)"]


def test_config_refuses_an_entry_point_language_or_a_spoken_announcement_missing_a_language(tmp_path: Path):
    from ringmaster.config import load_config
    from ringmaster.yamlsource import ConfigInvalid

    prompts(tmp_path)
    write_tone(tmp_path / "p" / "hold.wav", 440, 0.1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "paths": {"prompts": "p"}, "languages": LANGS,
        "queues": {"q": {"moh": "hold", "announce": {"say": {"position": {"en": "You are number ${position}."}}}}},
        "flows": {"f": [{"queue": "q"}]},
        "entry_points": [{"number": "1", "flow": "f", "variables": {"language": "de"}}]}, sort_keys=False))
    with pytest.raises(ConfigInvalid) as exc:
        load_config(path)
    errs = [str(e).removeprefix(str(path)) for e in exc.value.errors]
    assert errs == [":14:11: no text for language(s) da (languages.supported: en, da)",
                    ":22:15: language 'de' is not supported (languages.supported: en, da)"], errs


def test_check_reports_a_voice_espeak_ng_does_not_have(tmp_path: Path):
    prompts(tmp_path)
    cfg = {"paths": {"prompts": "p"}, "languages": LANGS, "tts": {"voices": {"da": "dansk"}},
           "flows": {"f": [{"say": {"text": {"en": "Hello", "da": "Hej"}}},
                           {"say": {"text": "Hi", "voice": "en-us+f3"}}, "hangup"]},
           "entry_points": [{"number": "1", "flow": "f"}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cli = [sys.executable, "-m", "ringmaster.cli", "check", str(path)]
    out = subprocess.run(cli, capture_output=True, text=True)
    assert out.returncode == 1
    assert (f"{path}: error: languages (da): espeak-ng has no voice 'dansk' for language 'da' (set tts.voices; "
            "`espeak-ng --voices` lists them)") in out.stderr, out.stderr
    assert "en-us" not in out.stderr  # en-us+f3: a voice and a variant, both known
    cfg["tts"] = {"voices": {"da": "gmq/da"}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = subprocess.run(cli, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
