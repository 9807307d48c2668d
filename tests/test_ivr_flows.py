"""The IVR interpreter without SIP: menus, collect, branch, schedules, jumps, and the
plan's graph checks. Each test feeds events and checks the actions and the walk."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ringmaster.config import Config
from ringmaster.flows.actions import (
    AnswerCall,
    CallbackStored,
    CollectDigits,
    DigitsEntered,
    HangUp,
    PromptsDone,
    StoreCallback,
)
from ringmaster.flows.dialplan import DialPlan, check_flows, node_context
from ringmaster.flows.interpreter import FlowRun
from ringmaster.yamlsource import loads
from tests.helpers.audio import write_tone

PROMPTS = ("welcome", "menu", "short", "invalid", "timeout", "sales", "support", "closed", "bye", "vip", "account")
OFFICE = {"timezone": "Europe/Copenhagen", "hours": {"mon-fri": "09:00-17:00", "sat": ["10:00-12:00"]},
          "holidays": ["2026-12-24"]}


def plan(tmp_path: Path, flows: dict, schedules: dict | None = None, queues: dict | None = None) -> DialPlan:
    (tmp_path / "p").mkdir(exist_ok=True)
    for name in PROMPTS:
        write_tone(tmp_path / "p" / f"{name}.wav", 400, 0.05)
    cfg = Config.model_validate({"flows": flows, "schedules": schedules or {"office": OFFICE}, "queues": queues or {},
                                 "paths": {"prompts": str(tmp_path / "p")},
                                 "entry_points": [{"number": "100", "flow": next(iter(flows))}]})
    return DialPlan(cfg)


def names(action) -> list[str]:  # type: ignore[no-untyped-def]
    return [Path(f).stem for f in action.files]


MENU = {"menu": {"greeting": "menu", "short_greeting": "short", "options": {1: "sales", 2: {"flow": "support"}},
                 "max_failures": 2, "max_timeouts": 2, "on_max_failures": "bye", "on_max_timeouts": "closed"}}
FLOWS = {
    "main": [{"id": "top", **MENU},
             {"id": "sales", "play": "sales"}, "hangup",
             {"id": "bye", "play": "bye"}, "hangup",
             {"id": "closed", "play": "closed"}, "hangup"],
    "support": [{"play": "support"}, "hangup"],
}


def start(p: DialPlan, flow: str = "main", **variables) -> tuple[FlowRun, list]:  # type: ignore[no-untyped-def]
    run = FlowRun(p, p.flows[flow], variables=dict(variables))
    return run, run.start()


def test_menu_plays_greeting_with_barge_in_and_collects_flushing_stale_digits(tmp_path: Path):
    run, acts = start(plan(tmp_path, FLOWS))
    assert isinstance(acts[0], AnswerCall)
    assert names(acts[1]) == ["menu"] and acts[1].barge_in
    assert acts[2] == CollectDigits(max_digits=1, terminators="#", first_timeout=5.0, inter_digit_timeout=2.0, flush=True)
    assert run.feed(PromptsDone(interrupted=True)) == []  # barge-in: the menu keeps waiting for digits


def test_press_1_goes_to_sales_and_the_choice_is_a_variable(tmp_path: Path):
    run, _ = start(plan(tmp_path, FLOWS))
    acts = run.feed(DigitsEntered("1", "max_digits"))
    assert names(acts[0]) == ["sales"]
    assert run.variables["menu_top"] == "1"
    assert run.path == ["main:top:menu", "main:sales:play"]


def test_option_can_jump_to_another_flow(tmp_path: Path):
    run, _ = start(plan(tmp_path, FLOWS))
    acts = run.feed(DigitsEntered("2", "max_digits"))
    assert names(acts[0]) == ["support"] and run.flow.name == "support"


def test_press_9_plays_invalid_then_short_greeting_and_after_max_failures_the_configured_action(tmp_path: Path):
    run, _ = start(plan(tmp_path, FLOWS))
    acts = run.feed(DigitsEntered("9", "max_digits"))
    assert names(acts[0]) == ["invalid", "short"] and isinstance(acts[1], CollectDigits)
    acts = run.feed(DigitsEntered("7", "max_digits"))
    assert names(acts[0]) == ["bye"]  # max_failures 2 -> on_max_failures: bye
    assert run.path[-1] == "main:bye:play"


def test_no_input_plays_timeout_prompt_then_after_max_timeouts_the_configured_action(tmp_path: Path):
    run, _ = start(plan(tmp_path, FLOWS))
    acts = run.feed(DigitsEntered("", "timeout"))
    assert names(acts[0]) == ["timeout", "short"]
    acts = run.feed(DigitsEntered("", "timeout"))
    assert names(acts[0]) == ["closed"]


def test_failures_and_timeouts_count_separately(tmp_path: Path):
    run, _ = start(plan(tmp_path, FLOWS))
    run.feed(DigitsEntered("9", "max_digits"))
    acts = run.feed(DigitsEntered("", "timeout"))
    assert names(acts[0]) == ["timeout", "short"]  # one failure + one timeout: neither at its max


def test_multi_digit_options_collect_up_to_the_longest_and_terminator_ends_early(tmp_path: Path):
    flows = {"m": [{"menu": {"greeting": "menu", "options": {"1": "a", "12": "b"}, "inter_digit_timeout": 1.5}},
                   {"id": "a", "play": "sales"}, "hangup", {"id": "b", "play": "support"}, "hangup"]}
    run, acts = start(plan(tmp_path, flows), "m")
    assert acts[2].max_digits == 2 and acts[2].terminators == "#" and acts[2].inter_digit_timeout == 1.5
    assert names(run.feed(DigitsEntered("1", "terminator"))[0]) == ["sales"]
    run2, _ = start(plan(tmp_path, flows), "m")
    assert names(run2.feed(DigitsEntered("12", "max_digits"))[0]) == ["support"]


def test_collect_stores_digits_and_retries_when_too_short(tmp_path: Path):
    flows = {"c": [{"collect": {"var": "account", "prompt": "account", "min": 4, "max": 8, "max_attempts": 2,
                                "on_failure": "bye"}},
                   {"play": "sales"}, "hangup", {"id": "bye", "play": "bye"}, "hangup"]}
    run, acts = start(plan(tmp_path, flows), "c")
    assert names(acts[1]) == ["account"] and acts[2].max_digits == 8
    acts = run.feed(DigitsEntered("12", "terminator"))
    assert names(acts[0]) == ["invalid", "account"]
    acts = run.feed(DigitsEntered("123456", "terminator"))
    assert run.variables["account"] == "123456" and names(acts[0]) == ["sales"]
    run2, _ = start(plan(tmp_path, flows), "c")
    run2.feed(DigitsEntered("", "timeout"))
    assert names(run2.feed(DigitsEntered("", "timeout"))[0]) == ["bye"]


@pytest.mark.parametrize("caller, heard", [("4570001122", "vip"), ("4599887766", "vip"), ("4511111111", "sales"),
                                           ("0049301234", "support")])
def test_branch_on_caller_id(tmp_path: Path, caller: str, heard: str):
    flows = {"b": [{"branch": {"on": "caller", "cases": [{"prefix": "4570", "then": "vip"},
                                                         {"in": [4599887766], "then": "vip"},
                                                         {"regex": "^00", "then": "intl"}]}},
                   {"play": "sales"}, "hangup",
                   {"id": "vip", "play": "vip"}, "hangup",
                   {"id": "intl", "play": "support"}, "hangup"]}
    _, acts = start(plan(tmp_path, flows), "b", caller=caller)
    assert names(acts[1]) == [heard]


@pytest.mark.parametrize("at, override, heard", [
    ("2026-11-23T10:00+01:00", None, "sales"),    # Monday 10:00 Copenhagen: open
    ("2026-11-23T20:00+01:00", None, "closed"),   # Monday 20:00: closed
    ("2026-11-23T08:30+00:00", None, "sales"),    # 09:30 in Copenhagen (UTC+1): open
    ("2026-11-28T11:00+01:00", None, "sales"),    # Saturday 11:00: open
    ("2026-11-29T11:00+01:00", None, "closed"),   # Sunday: closed
    ("2026-12-24T10:00+01:00", None, "closed"),   # holiday
    ("2026-11-23T20:00+01:00", "open", "sales"),  # forced open at night
    ("2026-11-23T10:00+01:00", "closed", "closed"),
])
def test_schedule_branch_by_hours_time_zone_holidays_and_override(tmp_path: Path, at: str, override, heard: str):
    flows = {"s": [{"schedule": {"name": "office", "closed": "closed"}}, {"play": "sales"}, "hangup",
                   {"id": "closed", "play": "closed"}, {"callback": {"queue": "sales"}}, "hangup"]}
    p = plan(tmp_path, flows, queues={"sales": {}})
    run = FlowRun(p, p.flows["s"], variables={"caller": "4512"}, clock=lambda: datetime.fromisoformat(at),
                  overrides={"office": override} if override else {})
    acts = run.start()
    assert names(acts[1]) == [heard]
    if heard == "closed":
        assert run.feed(PromptsDone()) == [StoreCallback("4512", "sales")]  # waits for the callback's answer
        assert run.feed(CallbackStored("cb-x", 3, 2)) == [HangUp(200, cause="flow_hangup")]
        assert run.variables["callback_position"] == 3 and run.variables["callback_wait"] == 2


def test_goto_hangup_ends_the_call(tmp_path: Path):
    _, acts = start(plan(tmp_path, {"g": [{"set": {"x": "${caller}-1"}}, {"goto": "hangup"}]}), "g", caller="7")
    assert acts == [HangUp(200, cause="flow_hangup")]


def _check(tmp_path: Path, yaml_text: str) -> list[str]:
    (tmp_path / "p").mkdir(exist_ok=True)
    for name in PROMPTS:
        write_tone(tmp_path / "p" / f"{name}.wav", 400, 0.05)
    src = loads(yaml_text, "plan.yaml")
    cfg = Config.model_validate({**src.data, "paths": {"prompts": str(tmp_path / "p")}})
    return [str(e) for e in check_flows(cfg.flows, [], node_context(cfg), src)]


def test_check_reports_jump_to_unknown_step_with_position_and_did_you_mean(tmp_path: Path):
    errs = _check(tmp_path, "flows:\n  f:\n    - menu:\n        greeting: menu\n        options: {1: sales}\n"
                            "    - id: sale\n      play: sales\n")
    assert errs == ["plan.yaml:5:22: menu: unknown step 'sales' in flow 'f' (did you mean 'sale'?)"]


def test_check_reports_unreachable_step(tmp_path: Path):
    errs = _check(tmp_path, "flows:\n  f:\n    - play: welcome\n    - hangup\n    - play: bye\n")
    assert len(errs) == 1 and errs[0].startswith("plan.yaml:5:7: step '2' (play) of flow 'f' can never be reached")


def test_check_reports_loop_that_never_waits_for_input(tmp_path: Path):
    errs = _check(tmp_path, "flows:\n  f:\n    - id: a\n      play: welcome\n    - goto: a\n")
    assert len(errs) == 1 and "loop that never waits for the caller's input: f:a -> f:1 -> f:a" in errs[0]
    assert errs[0].startswith("plan.yaml:3:7:")


def test_check_accepts_a_loop_through_a_menu(tmp_path: Path):
    assert _check(tmp_path, "flows:\n  f:\n    - id: m\n      menu: {greeting: menu, options: {9: m, 1: out}}\n"
                            "    - goto: m\n    - id: out\n      play: bye\n") == []


def test_check_reports_unknown_schedule(tmp_path: Path):
    errs = _check(tmp_path, "schedules: {office: {hours: {mon: 09:00-17:00}}}\n"
                            "flows:\n  f:\n    - schedule: ofice\n    - hangup\n")
    assert errs == ["plan.yaml:4:17: schedule: unknown schedule 'ofice' (did you mean 'office'?)"]


def test_schedule_in_another_time_zone():
    from ringmaster.schedules import Schedule

    s = Schedule.model_validate({"timezone": "America/New_York", "hours": {"fri-mon": "22:00-23:30"}})
    assert s.is_open(datetime(2026, 11, 24, 3, 0, tzinfo=ZoneInfo("UTC")))[0]   # Mon 22:00 New York
    assert not s.is_open(datetime(2026, 11, 25, 3, 0, tzinfo=ZoneInfo("UTC")))[0]  # Tue 22:00


def test_queue_step_takes_skills_from_variables_chosen_in_the_ivr(tmp_path: Path):
    from ringmaster.flows.actions import EnqueueCall

    (tmp_path / "p").mkdir(exist_ok=True)
    for name in PROMPTS:
        write_tone(tmp_path / "p" / f"{name}.wav", 400, 0.05)
    cfg = Config.model_validate({
        "paths": {"prompts": str(tmp_path / "p")}, "agents": {"a": {"mobile": "+451"}},
        "queues": {"sales": {"members": ["a"], "moh": "menu"}},
        "flows": {"q": [{"menu": {"greeting": "menu", "options": {1: "en", 2: "fr"}, "var": "pick"}},
                        {"id": "en", "set": {"language": "en"}}, {"goto": "go"},
                        {"id": "fr", "set": {"language": "fr"}},
                        {"id": "go", "queue": {"name": "sales", "priority": 2, "skills": {"${language}": 3}}}]},
        "entry_points": [{"number": "1", "flow": "q"}]})
    dp = DialPlan(cfg)
    run = FlowRun(dp, dp.flows["q"])
    run.start()
    acts = run.feed(DigitsEntered("2", "max_digits"))
    assert acts == [EnqueueCall("sales", 2, (("fr", 3),))]
