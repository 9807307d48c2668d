"""LegAudit (legaudit.py): the controller's legs per worker against the worker's own report."""

from __future__ import annotations

from ringmaster.legaudit import HiddenSlots, LegAudit, MissingLeg, UnknownLeg


def test_a_difference_shorter_than_the_grace_is_a_leg_coming_or_going() -> None:
    audit = LegAudit(grace=15)
    assert audit.check("w1", {"a"}, {"a", "b"}, 2, now=0.0) == []
    assert audit.check("w1", {"a"}, {"a", "b"}, 2, now=10.0) == []
    assert audit.check("w1", {"a", "b"}, {"a", "b"}, 2, now=14.0) == []  # the controller caught up
    assert audit.check("w1", {"a"}, {"a", "b"}, 2, now=20.0) == []  # a new difference: new clock
    assert audit.findings_total == 0


def test_lasting_differences_are_reported_once_each() -> None:
    audit = LegAudit(grace=15, hidden_grace=60)
    audit.check("w1", {"a", "gone"}, {"a", "stray"}, 4, now=0.0)
    found = audit.check("w1", {"a", "gone"}, {"a", "stray"}, 4, now=15.0)
    assert set(found) == {UnknownLeg("w1", "stray"), MissingLeg("w1", "gone")}
    assert audit.check("w1", {"a", "gone"}, {"a", "stray"}, 4, now=30.0) == []  # not again
    # slots no leg owns drain the worker: that waits longer
    assert audit.check("w1", {"a", "gone"}, {"a", "stray"}, 4, now=60.0) == [HiddenSlots("w1", 4, 2)]
    assert audit.findings_total == 3


def test_workers_are_audited_apart_and_a_gone_worker_is_forgotten() -> None:
    audit = LegAudit(grace=5)
    audit.check("w1", set(), {"x"}, 1, now=0.0)
    audit.check("w2", set(), set(), 0, now=0.0)
    assert audit.check("w2", set(), set(), 0, now=10.0) == []
    assert audit.check("w1", set(), {"x"}, 1, now=10.0) == [UnknownLeg("w1", "x")]
    audit.forget("w1")
    assert audit.since == {} and audit.reported == set()


def test_slots_pjsua_counts_beyond_the_legs_are_hidden_slots() -> None:
    # pjsua holds 3 slots, the worker knows 1 leg: 2 slots nobody can use or free
    audit = LegAudit(grace=1, hidden_grace=1)
    audit.check("w1", {"a"}, {"a"}, 3, now=0.0)
    assert audit.check("w1", {"a"}, {"a"}, 3, now=1.0) == [HiddenSlots("w1", 3, 1)]
