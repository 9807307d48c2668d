"""The call core (ringmaster.call.core) without SIP: one call's phases, legs, dispositions,
ring-all races, holds, recordings, transfers, voicemail deadlines, worker death and illegal
events, fed as the call adapter feeds it (times are monotonic seconds passed in)."""

from __future__ import annotations

from typing import Any

import pytest

from ringmaster import protocol as p
from ringmaster.call import records as r
from ringmaster.call.core import (
    CallCore,
    EndSupervision,
    FeedFlow,
    IllegalEvent,
    LegState,
    Phase,
    QueueExit,
    TransferResult,
)
from ringmaster.flows.actions import Answered, Connect, ConnectEnded, HangUp, MessageRecorded
from ringmaster.store import Disposition

CALLER = "w1-l1"
RING_A = "c1-q1"
RING_B = "c1-q2"


def of(out: list[Any], kind: type) -> list[Any]:
    return [o for o in out if isinstance(o, kind)]


def ended(out: list[Any]) -> r.CallEnded:
    (end,) = of(out, r.CallEnded)
    return end


def answered_core(now: float = 100.0) -> CallCore:
    core = CallCore("c1", CALLER)
    out = core.caller_state("connecting", 0, "", now)
    assert of(out, r.CallAnswered) == [r.CallAnswered(now)]
    assert of(out, FeedFlow) == [FeedFlow(Answered())]
    assert core.phase is Phase.IN_FLOW
    return core


def queued_core(now: float = 100.0) -> CallCore:
    core = answered_core(now)
    core.enqueued("support", ("moh.wav",))
    assert core.phase is Phase.QUEUED
    return core


def connected_core(recording: str | None = None, now: float = 110.0) -> tuple[CallCore, list[Any]]:
    """A queued call whose agent on RING_A answered and was joined by the worker."""
    core = queued_core()
    core.leg_dialled(RING_A, ("alice",))
    assert core.phase is Phase.OFFERING
    core.other_leg_state(RING_A, "early", 180, now - 2)
    core.other_leg_state(RING_A, "confirmed", 200, now)
    won, out = core.ring_answered(RING_A)
    assert won and out == []
    out = core.agent_bridging(RING_A, recording, now)
    assert core.phase is Phase.CONNECTING
    assert core.bridged(RING_A)
    assert core.phase is Phase.BRIDGED
    return core, out


# ------------------------------------------------------------ dispositions


def test_caller_who_hangs_up_after_the_ivr_served_him_is_completed_by_caller():
    core = answered_core()
    end = ended(core.caller_state("disconnected", 200, "BYE", 130.0))
    assert (end.disposition, end.cause, end.by, end.code, end.at) == ("completed", "caller_hangup", "caller", 200, 130.0)
    assert core.phase is Phase.ENDED and core.leg_state(CALLER) is LegState.ENDED


def test_caller_who_hangs_up_before_the_answer_is_abandoned():
    core = CallCore("c1", CALLER)
    end = ended(core.caller_state("disconnected", 487, "CANCEL", 101.0))
    assert (end.disposition, end.by) == ("abandoned", "caller")


def test_no_route_is_rejected_with_the_plans_code():
    core = CallCore("c1", CALLER)
    assert core.reject(404, "no_route") == [p.Reject(leg=CALLER, code=404)]
    assert core.phase is Phase.ENDING
    end = ended(core.caller_state("disconnected", 404, "", 101.0))
    assert (end.disposition, end.cause, end.by) == ("rejected", "no_route", "ringmaster")


def test_a_flow_that_hangs_up_unanswered_rejects_with_480_not_a_2xx():
    core = CallCore("c1", CALLER)
    assert core.hang_up(HangUp(200, cause="closed"), 100.0) == [p.Reject(leg=CALLER, code=480)]
    assert ended(core.caller_state("disconnected", 480, "", 100.1)).disposition == "rejected"


def test_a_flow_that_hangs_up_after_the_answer_sends_bye_and_is_completed():
    core = answered_core()
    assert core.hang_up(HangUp(200, cause="flow_end"), 120.0) == [p.Hangup(leg=CALLER)]
    end = ended(core.caller_state("disconnected", 200, "", 120.1))
    assert (end.disposition, end.cause, end.by) == ("completed", "flow_end", "ringmaster")


def test_caller_who_leaves_while_waiting_is_abandoned_and_the_queue_hears_abandon():
    core = queued_core()
    out = core.caller_state("disconnected", 200, "", 150.0)
    assert QueueExit("waiting") in out
    assert ended(out).disposition == "abandoned"
    assert out.index(QueueExit("waiting")) < out.index(ended(out))  # ABANDON before the record closes


@pytest.mark.parametrize("reason", ["EXITEMPTY", "EXITWITHTIMEOUT", "FULL", "JOINEMPTY"])
def test_caller_turned_out_of_a_queue_unserved_is_abandoned_whoever_hangs_up(reason: str):
    core = queued_core()
    assert core.left_queue(reason) == [p.StopPlay(leg=CALLER)]
    assert core.phase is Phase.IN_FLOW
    # the flow plays a goodbye and hangs up, or the caller hangs up first: abandoned either way
    core.hang_up(HangUp(200, cause="flow_end"), 140.0)
    assert ended(core.caller_state("disconnected", 200, "", 140.1)).disposition == "abandoned"

    other = queued_core()
    other.left_queue(reason)
    assert ended(other.caller_state("disconnected", 200, "", 140.0)).disposition == "abandoned"


def test_the_exit_key_is_the_callers_choice_not_an_unserved_exit():
    core = queued_core()
    core.left_queue("key")
    assert ended(core.caller_state("disconnected", 200, "", 140.0)).disposition == "completed"


def test_a_message_left_after_exitempty_serves_the_caller():
    core = queued_core()
    core.left_queue("EXITEMPTY")
    core.start_message("sales", "4511", "/vm/sales/c1.wav", 60.0, 140.0)
    out = core.caller_state("disconnected", 200, "", 150.0)
    (vm,) = of(out, r.VoicemailFinished)
    assert vm.seconds == pytest.approx(10.0)
    assert ended(out).disposition == "completed"


def test_a_callback_taken_serves_the_caller():
    core = queued_core()
    core.left_queue("EXITWITHTIMEOUT")
    core.served()
    core.hang_up(HangUp(200, cause="callback_requested"), 150.0)
    assert ended(core.caller_state("disconnected", 200, "", 150.1)).disposition == "completed"


def test_agent_who_hangs_up_completes_the_call_by_agent():
    core, _ = connected_core()
    out = core.other_leg_state(RING_A, "disconnected", 200, 200.0)
    assert out == [r.LegEnded(RING_A, "agent", 200, charged=True)]
    out = core.agent_hung_up("agent_hangup", 200.0)
    assert EndSupervision("agent_hangup") in out and p.Hangup(leg=CALLER) in out
    end = ended(core.caller_state("disconnected", 200, "", 200.1))
    assert (end.disposition, end.cause, end.by) == ("completed", "agent_hangup", "agent")


def test_caller_who_hangs_up_on_the_agent_completes_by_caller_and_the_queue_hears_completecaller():
    core, _ = connected_core()
    out = core.caller_state("disconnected", 200, "", 200.0)
    assert QueueExit("connected") in out
    end = ended(out)
    assert (end.disposition, end.by) == ("completed", "caller")
    assert not core.abandoned_in_queue


def test_a_bye_that_crosses_the_agents_200_is_abandoned_not_answered():
    core = queued_core()
    core.leg_dialled(RING_A, ("alice",))
    core.other_leg_state(RING_A, "confirmed", 200, 110.0)
    assert core.ring_answered(RING_A)[0]
    core.agent_bridging(RING_A, None, 110.0)
    # the caller's BYE arrives 12 ms later, before the worker's Bridged
    out = core.caller_state("disconnected", 200, "", 110.012)
    assert QueueExit("connected") in out
    assert ended(out).disposition == "abandoned"
    assert core.abandoned_in_queue
    assert not core.bridged(RING_A)  # a Bridged that arrives now is no news


def test_every_disposition_an_inbound_call_can_have_is_reached():
    """completed, rejected, abandoned, failed: the inbound ones of store.Disposition (no_answer,
    busy and refused are outbound calls', outbound.py)."""
    seen = set()
    core = answered_core()
    seen.add(ended(core.caller_state("disconnected", 200, "", 1.0)).disposition)
    core = CallCore("c", CALLER)
    core.reject(403, "refused")
    seen.add(ended(core.caller_state("disconnected", 403, "", 1.0)).disposition)
    core = queued_core()
    seen.add(ended(core.caller_state("disconnected", 200, "", 1.0)).disposition)
    core = answered_core()
    seen.add(ended(core.worker_lost("worker_died", 1.0)).disposition)
    inbound = {d.value for d in Disposition} - {"in_progress", "no_answer", "busy", "refused"}
    assert seen == inbound


# ------------------------------------------------------------ ring-all race


def test_two_agents_answer_one_wins_and_the_others_leg_is_hung_up_and_never_charged():
    core = queued_core()
    core.leg_dialled(RING_A, ("alice",))
    core.leg_dialled(RING_B, ("bob",))
    core.other_leg_state(RING_A, "confirmed", 200, 110.0)
    core.other_leg_state(RING_B, "confirmed", 200, 110.004)
    assert core.ring_answered(RING_A) == (True, [])
    core.agent_bridging(RING_A, None, 110.0)
    won, out = core.ring_answered(RING_B)
    assert not won
    assert out == [p.Hangup(leg=RING_B, code=200)]
    assert core.leg_state(RING_B) is LegState.ENDING
    assert core.other_leg_state(RING_B, "disconnected", 200, 110.2) == [r.LegEnded(RING_B, "agent", 200, charged=False)]
    assert core.agent_leg == RING_A
    assert core.bridged(RING_A) and core.phase is Phase.BRIDGED


def test_an_answer_after_the_caller_left_loses_the_race():
    core = queued_core()
    core.leg_dialled(RING_A, ("alice",))
    core.caller_state("disconnected", 200, "", 110.0)
    core.other_leg_state(RING_A, "confirmed", 200, 110.01)
    won, out = core.ring_answered(RING_A)
    assert not won and out == [p.Hangup(leg=RING_A, code=200)]


def test_an_answer_that_crosses_our_cancel_gets_a_bye_and_cannot_take_the_call():
    core = queued_core()
    core.leg_dialled(RING_A, ("alice",))
    core.caller_state("disconnected", 200, "", 110.0)  # the caller leaves: the ring is withdrawn
    assert core.end_leg(RING_A, 487) == [p.Hangup(leg=RING_A, code=487)]
    # her phone's 200 was already on its way: the leg is up, only a BYE ends it
    assert core.other_leg_state(RING_A, "confirmed", 200, 110.01) == [p.Hangup(leg=RING_A, code=200)]
    assert core.ring_answered(RING_A) == (False, [])
    assert core.other_leg_state(RING_A, "disconnected", 200, 110.05) == [r.LegEnded(RING_A, "agent", 200, charged=False)]


def test_a_withdrawn_ring_is_cancelled_once_and_the_phase_falls_back_to_queued():
    core = queued_core()
    core.leg_dialled(RING_A, ("alice", "bob"))
    assert core.end_leg(RING_A, 487) == [p.Hangup(leg=RING_A, code=487)]
    (bad,) = core.end_leg(RING_A, 487)
    assert isinstance(bad, IllegalEvent) and bad.event == "end_leg" and bad.leg_state == "ending"
    assert core.phase is Phase.OFFERING
    core.other_leg_state(RING_A, "disconnected", 487, 111.0)
    assert core.phase is Phase.QUEUED


# ------------------------------------------------------------ recordings and holds


def test_a_recorded_bridge_starts_the_recording_and_says_so():
    core, out = connected_core(recording="/rec/c1.wav")
    (start,) = of(out, p.RecordStart)
    assert start.legs == (CALLER, RING_A) and start.path == "/rec/c1.wav"
    assert r.RecordingStarted("/rec/c1.wav") in out
    assert of(out, p.Bridge) == [p.Bridge(leg_a=CALLER, leg_b=RING_A, direct_media=False)]


def test_a_failed_recording_start_is_taken_off_the_record_and_not_paused_on_hold():
    core, _ = connected_core(recording="/rec/c1.wav")
    out = core.worker_error("record_start", "cannot open file")
    assert out == [r.RecordingFailed("cannot open file"), r.WorkerError("record_start", "cannot open file")]
    assert core.recording is None
    out = core.hold_changed(CALLER, True, "sendonly", 120.0)
    assert not of(out, p.RecordPause)
    assert of(out, r.HoldStarted)[0].recording_offset is None
    assert core.set_recording(True) == ("this call is not being recorded", [])


def test_hold_and_resume_cut_the_bridge_play_music_to_the_other_party_and_count_the_stretch():
    core, _ = connected_core(recording="/rec/c1.wav", now=110.0)
    rec_id = core.rec_id
    out = core.hold_changed(RING_A, True, "sendonly", 120.0)
    assert out[0] == r.HoldStarted(120.0, "agent", "sendonly", 10.0)
    assert p.Unbridge(leg_a=CALLER, leg_b=RING_A) in out
    assert p.RecordPause(rec_id=rec_id) in out
    (music,) = of(out, p.Play)
    assert music.leg == CALLER and music.files == ("moh.wav",) and music.loop
    assert core.phase is Phase.HELD and core.leg_state(RING_A) is LegState.HELD
    out = core.hold_changed(RING_A, False, "sendrecv", 135.5)
    assert out[0] == r.HoldEnded(135.5, "agent", 15.5, "resumed", 25.5, 15.5, 1)
    assert p.StopPlay(leg=CALLER) in out and p.RecordResume(rec_id=rec_id) in out
    assert p.Bridge(leg_a=CALLER, leg_b=RING_A, direct_media=False) in out
    assert core.phase is Phase.BRIDGED and core.leg_state(RING_A) is LegState.ANSWERED


def test_the_call_ending_on_hold_closes_the_stretch_before_the_record():
    core, _ = connected_core()
    core.hold_changed(CALLER, True, "inactive", 120.0)
    out = core.caller_state("disconnected", 200, "", 130.0)
    (held,) = of(out, r.HoldEnded)
    assert (held.how, held.seconds, held.party) == ("caller_hangup", 10.0, "caller")
    assert out.index(held) < out.index(ended(out))


def test_an_operator_pause_on_hold_is_kept_as_a_mark_and_the_resume_leaves_it_paused():
    core, _ = connected_core(recording="/rec/c1.wav")
    core.hold_changed(CALLER, True, "sendonly", 120.0)
    assert core.set_recording(True) == (None, [r.RecordingPaused(True, on_hold=True)])
    out = core.hold_changed(CALLER, False, "sendrecv", 125.0)
    assert not of(out, p.RecordResume)


def test_a_hold_outside_a_conversation_changes_nothing():
    core = queued_core()
    assert core.hold_changed(CALLER, True, "sendonly", 120.0) == []
    assert core.hold_seconds == 0 and core.phase is Phase.QUEUED


# ------------------------------------------------------------ worker death


def test_worker_death_mid_call_closes_it_failed_and_frees_the_agent():
    core, _ = connected_core(recording="/rec/c1.wav")
    core.hold_changed(CALLER, True, "sendonly", 120.0)
    out = core.worker_lost("worker_died", 125.0)
    assert EndSupervision("failed") in out and QueueExit("connected") in out
    assert of(out, r.HoldEnded)[0].how == "caller_hangup"
    end = ended(out)
    assert (end.disposition, end.cause, end.code, end.by) == ("failed", "worker_died", 0, "ringmaster")
    assert core.phase is Phase.ENDED
    # the queue runtime then hangs the agent's leg up (heard by a worker that is only stopping)
    assert core.end_leg(RING_A) == [p.Hangup(leg=RING_A, code=200)]
    # nothing of that worker is believed after: a late end, a second death
    (bad,) = core.caller_state("disconnected", 200, "", 126.0)
    assert isinstance(bad, IllegalEvent) and bad.event == "caller_disconnected" and bad.phase == "ended"
    assert isinstance(core.worker_lost("worker_died", 127.0)[0], IllegalEvent)


def test_worker_death_while_a_message_is_recorded_keeps_the_message():
    core = answered_core()
    core.start_message("sales", "4511", "/vm/c1.wav", 120.0, 100.0)
    out = core.worker_lost("worker_died", 130.0)
    (vm,) = of(out, r.VoicemailFinished)
    assert vm.seconds == 30.0 and not of(out, FeedFlow)
    assert core.next_deadline() is None


# ------------------------------------------------------------ transfers and deadlines


def test_a_flow_transfer_nobody_answers_is_cancelled_at_its_deadline_and_the_flow_hears_no_answer():
    core = answered_core()
    out = core.connect(Connect("sip:200@pbx", record=False, ring_timeout=20.0), "/rec/c1.wav", 100.0)
    (dial,) = of(out, p.Dial)
    assert out[0] == r.TransferDialled("sip:200@pbx") and dial.uri == "sip:200@pbx"
    assert core.phase is Phase.TRANSFERRING and core.next_deadline() == 120.0
    assert core.tick(119.9) == []
    assert core.tick(120.0) == [p.Hangup(leg=dial.leg, code=487)]
    assert core.next_deadline() is None
    out = core.transfer_state(dial.leg, "disconnected", 487, 120.1)
    assert r.TransferFailed(487, "no_answer", dial.leg) in out
    assert out[-1] == FeedFlow(ConnectEnded("no_answer", 487))
    assert core.phase is Phase.IN_FLOW and core.b_leg == ""


@pytest.mark.parametrize(("code", "result"), [(486, "busy"), (404, "not_found"), (603, "declined"), (500, "failed")])
def test_an_agents_blind_transfer_out_that_fails_goes_back_to_the_queue(code: int, result: str):
    core, _ = connected_core()
    core.transferred_away(RING_A)
    out = core.transfer_out("sip:+4599@edge", 30.0, "", 130.0)
    (dial,) = of(out, p.Dial)
    out = core.transfer_state(dial.leg, "disconnected", code, 131.0)
    assert out[-1] == TransferResult(result)


def test_an_answered_transfer_is_bridged_recorded_and_its_hang_up_ends_the_call_by_target():
    core = answered_core()
    (dial,) = of(core.connect(Connect("sip:200@pbx", record=True, ring_timeout=20.0), "/rec/c1.wav", 100.0), p.Dial)
    out = core.transfer_state(dial.leg, "confirmed", 200, 105.0)
    assert out[0] == r.TransferAnswered("sip:200@pbx")
    assert p.Bridge(leg_a=CALLER, leg_b=dial.leg, direct_media=False) in out
    assert r.RecordingStarted("/rec/c1.wav") in out
    assert core.next_deadline() is None and core.phase is Phase.BRIDGED
    out = core.transfer_state(dial.leg, "disconnected", 200, 160.0)
    assert of(out, p.RecordStop) and r.TransferEnded("target") in out and p.Hangup(leg=CALLER) in out
    end = ended(core.caller_state("disconnected", 200, "", 160.1))
    assert (end.disposition, end.cause, end.by) == ("completed", "transfer_target_hangup", "target")


def test_the_caller_hanging_up_during_a_transfer_cancels_the_target():
    core = answered_core()
    (dial,) = of(core.connect(Connect("sip:200@pbx", ring_timeout=20.0), None, 100.0), p.Dial)
    out = core.caller_state("disconnected", 200, "", 104.0)
    assert p.Hangup(leg=dial.leg, code=200) in out
    assert core.next_deadline() is None


def test_a_voicemail_message_stops_at_its_maximum_length_and_the_flow_hears_it():
    core = answered_core()
    out = core.start_message("sales", "4511", "/vm/c1.wav", 90.0, 100.0)
    (start,) = of(out, p.RecordStart)
    assert out[0] == r.VoicemailStarted(100.0, "sales", "4511", "/vm/c1.wav")
    assert core.next_deadline() == 190.0
    out = core.tick(190.0)
    assert out[0] == p.RecordStop(rec_id=start.rec_id)
    assert out[-1] == FeedFlow(MessageRecorded("/vm/c1.wav", 90.0))
    assert core.stop_message(191.0, feed=True) == []  # the # key after the end: nothing to stop


def test_the_next_deadline_is_the_earliest_of_a_transfer_ring_and_a_message():
    core = answered_core()
    core.start_message("sales", "4511", "/vm/c1.wav", 50.0, 100.0)
    core.connect(Connect("sip:200@pbx", ring_timeout=20.0), None, 101.0)
    assert core.next_deadline() == 121.0


# ------------------------------------------------------------ continue, consult


def test_continue_after_agent_keeps_the_caller_in_a_survey_and_ends_completed():
    core, _ = connected_core()
    out = core.continue_after_agent("survey", 200.0)
    assert r.FlowContinued("survey", "agent_hangup") in out and core.phase is Phase.IN_FLOW
    assert core.agent_leg == ""
    core.hang_up(HangUp(200, cause="flow_end"), 230.0)
    assert ended(core.caller_state("disconnected", 200, "", 230.1)).disposition == "completed"


def test_an_attended_transfer_to_an_outside_party_makes_its_leg_the_calls_transfer_leg():
    core, _ = connected_core()
    core.leg_dialled("c1-x1")
    out = core.consult_started(RING_A, ())
    assert p.Unbridge(leg_a=CALLER, leg_b=RING_A) in out and core.consulting
    assert core.hold_changed(CALLER, True, "sendonly", 130.0) == []  # consulting: the music is on already
    out = core.consult_completed(RING_A, "c1-x1", "sip:+4599@edge", 140.0)
    assert p.Hangup(leg=RING_A, code=200) in out and p.Bridge(leg_a=CALLER, leg_b="c1-x1", direct_media=False) in out
    assert core.b_leg == "c1-x1" and core.agent_leg == ""
    out = core.transfer_state("c1-x1", "disconnected", 200, 170.0)
    assert p.Hangup(leg=CALLER) in out
    assert ended(core.caller_state("disconnected", 200, "", 170.1)).by == "target"


# ------------------------------------------------------------ illegal events


def test_illegal_events_are_reported_not_ignored():
    core = answered_core()
    core.hang_up(HangUp(200, cause="flow_end"), 120.0)
    (again,) = core.hang_up(HangUp(200, cause="again"), 120.1)
    assert isinstance(again, IllegalEvent) and again.event == "hang_up" and again.phase == "ending"
    core.caller_state("disconnected", 200, "", 120.2)
    (late,) = core.caller_state("confirmed", 200, "", 120.3)
    assert isinstance(late, IllegalEvent) and late.phase == "ended"
    (unknown,) = core.transfer_state("c1-b9", "confirmed", 200, 121.0)
    assert isinstance(unknown, IllegalEvent) and unknown.event == "transfer_confirmed"
    won, out = core.ring_answered("c1-q9")
    assert not won and isinstance(out[0], IllegalEvent)


def test_an_event_of_a_leg_that_ended_is_illegal_and_changes_nothing():
    core = queued_core()
    core.leg_dialled(RING_A, ("alice",))
    core.other_leg_state(RING_A, "disconnected", 487, 110.0)
    (bad,) = core.other_leg_state(RING_A, "confirmed", 200, 110.5)
    assert isinstance(bad, IllegalEvent) and bad.leg == RING_A and bad.leg_state == "ended"
    assert core.leg_state(RING_A) is LegState.ENDED
    (dup,) = core.leg_dialled(RING_A, ("alice",))
    assert isinstance(dup, IllegalEvent) and dup.detail == "leg id used twice"


def test_the_illegal_event_counter_is_exposed_on_metrics():
    from prometheus_client.parser import text_string_to_metric_families

    from ringmaster.acd.engine import QueueEngine
    from ringmaster.metrics import ILLEGAL_CALL_EVENTS, Metrics
    from tests.test_metrics import _state

    before = ILLEGAL_CALL_EVENTS.labels(event="hang_up", phase="ending")._value.get()
    ILLEGAL_CALL_EVENTS.labels(event="hang_up", phase="ending").inc()
    body, _ = Metrics(lambda: _state(QueueEngine({}, {}), 1.0, {})).render()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    key = ("ringmaster_call_illegal_events_total", (("event", "hang_up"), ("phase", "ending")))
    assert samples[key] == before + 1


# ------------------------------------------------------------ the record writer (a real SQLite file)


def test_the_record_writer_stores_what_the_core_decided(tmp_path):
    """A BYE that crosses the agent's answer, then a held and recorded call that the worker's
    death ends: the rows say what the core decided, with wall-clock times."""
    import asyncio
    import json
    import sqlite3
    import time as clock

    from ringmaster.call.records import RecordWriter
    from ringmaster.store import Store

    async def run() -> None:
        store = Store(str(tmp_path / "calls.db"))
        await store.open()
        mono, wall = clock.monotonic(), clock.time()
        # 1: the caller's BYE crossed the agent's 200
        store.call_arrived("c1", "sip-1", "4511", "500", "sip:500@edge", "w1", wall)
        core = queued_core(mono)
        core.leg_dialled(RING_A, ("alice",))
        core.other_leg_state(RING_A, "confirmed", 200, mono + 1)
        core.ring_answered(RING_A)
        core.agent_bridging(RING_A, None, mono + 1)
        out = core.caller_state("disconnected", 200, "", mono + 1.01)
        writer = RecordWriter(store, "c1", lambda: (["main", "queue"], {"lang": "da"}))
        for o in out:
            if isinstance(o, r.RECORDS):
                writer.apply(o)
        writer.apply(r.CallAnswered(mono))
        # 2: recorded, held, then the worker died
        store.call_arrived("c2", "sip-2", "4512", "500", "sip:500@edge", "w1", wall)
        core2, out2 = connected_core(recording="/rec/c2.wav", now=mono)
        out2 += core2.hold_changed(CALLER, True, "sendonly", mono + 5)
        out2 += core2.worker_lost("worker_died", mono + 8)
        w2 = RecordWriter(store, "c2")
        for o in out2:
            if isinstance(o, r.RECORDS):
                w2.apply(o)
        await store.close()

    asyncio.run(run())
    db = sqlite3.connect(tmp_path / "calls.db")
    db.row_factory = sqlite3.Row
    c1 = db.execute("SELECT * FROM calls WHERE call_id='c1'").fetchone()
    assert (c1["disposition"], c1["hangup_by"], c1["hangup_cause"]) == ("abandoned", "caller", "caller_hangup")
    assert json.loads(c1["ivr_path"]) == ["main", "queue"] and json.loads(c1["variables"]) == {"lang": "da"}
    assert abs(c1["ended_at"] - clock.time()) < 60
    c2 = db.execute("SELECT * FROM calls WHERE call_id='c2'").fetchone()
    assert (c2["disposition"], c2["hangup_cause"], c2["hangup_code"]) == ("failed", "worker_died", 0)
    assert c2["recording"] == "/rec/c2.wav" and c2["holds"] == 1 and c2["hold_seconds"] == 3.0
    events = [(e["event"], json.loads(e["data"])) for e in db.execute(
        "SELECT event, data FROM call_events WHERE call_id='c2' ORDER BY id")]
    names = [e for e, _ in events]
    assert names[-3:] == ["HOLD", "UNHOLD", "ENDED"], names
    assert events[-2][1]["how"] == "caller_hangup" and events[-2][1]["recording_offset"] == 8.0


def test_the_call_adapter_logs_and_counts_an_illegal_event(tmp_path):
    """CallSession hands the core's IllegalEvent to structlog (call_id bound) and the counter;
    the worker here is unreachable (send answers False), so only the refusal is seen."""
    from structlog.testing import capture_logs

    from ringmaster.calls import CallSession
    from ringmaster.metrics import ILLEGAL_CALL_EVENTS
    from ringmaster.store import Store

    session = CallSession(call_id="c7", worker="w1", leg=CALLER, caller="4511", called="500",
                          send=lambda worker, msg: False, store=Store(tmp_path / "unused.db"))
    counter = ILLEGAL_CALL_EVENTS.labels(event="end_leg", phase="ringing_in")
    before = counter._value.get()
    with capture_logs() as logs:
        session.hangup_leg("c7-q9")  # no such leg
    illegal = [e for e in logs if e["event"] == "call.illegal_event"]
    assert illegal and illegal[0]["refused"] == "end_leg" and illegal[0]["event_leg"] == "c7-q9"
    assert illegal[0]["log_level"] == "warning" and illegal[0]["call_id"] == "c7"
    assert counter._value.get() == before + 1


# ------------------------------------------------------------ layers


SRC = __import__("pathlib").Path(__file__).resolve().parent.parent / "src"
LAYERED = ("ringmaster.calls", "ringmaster.acd.runtime", "ringmaster.tasks", "ringmaster.controller",
           "ringmaster.call.core", "ringmaster.call.records", "ringmaster.call.ports", "ringmaster.acd.ports",
           "ringmaster.acd.presence_store", "ringmaster.callbacks")


def _imports(module: str) -> set[str]:
    """Every ringmaster module `module` imports: at the top, under TYPE_CHECKING or inside a function."""
    import ast

    path = SRC / (module.replace(".", "/") + ".py")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("ringmaster")}


def test_calls_the_queue_runtime_the_task_router_and_the_controller_import_one_way():
    """No import cycle among them, counting TYPE_CHECKING and function-level imports: the
    controller on top, then the task router, the call adapter, the queue runtime, the ports
    and the call core."""
    graph = {m: _imports(m) & set(LAYERED) for m in LAYERED}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(m: str, path: list[str]) -> None:
        seen[m] = 1
        for n in sorted(graph[m]):
            assert seen.get(n) != 1, "import cycle: " + " -> ".join([*path, m, n])
            if n not in seen:
                walk(n, [*path, m])
        seen[m] = 2

    for m in LAYERED:
        if m not in seen:
            walk(m, [])
    assert "ringmaster.acd.runtime" not in _imports("ringmaster.calls")
    assert "ringmaster.tasks" not in _imports("ringmaster.acd.runtime")
    assert "ringmaster.callbacks" not in _imports("ringmaster.acd.runtime")  # acd/ports.QueueCallbacks


def test_the_call_core_does_no_io():
    """call/core.py reads no clock and imports no asyncio, store, worker or adapter module."""
    core = (SRC / "ringmaster/call/core.py").read_text()
    for banned in ("import asyncio", "import time", "pjsua2", "ringmaster.store", "ringmaster.calls",
                   "ringmaster.acd.runtime", "ringmaster.controller", "structlog"):
        assert banned not in core, banned
    modules = {m for m in _imports("ringmaster.call.core")
               if (SRC / m.replace(".", "/")).is_dir() or (SRC / (m.replace(".", "/") + ".py")).is_file()}
    assert modules <= {"ringmaster", "ringmaster.protocol", "ringmaster.call", "ringmaster.call.records",
                       "ringmaster.flows.actions"}, modules
