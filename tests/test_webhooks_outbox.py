"""Webhooks without a daemon: Standard Webhooks signatures checked by the reference library
(PyPI `standardwebhooks`), the outbox's order per lane, concurrency, backoff and dead letters
(sans-IO, fed time), the store's outbox rows through the one writer, and config errors with
file:line."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sqlite3
from pathlib import Path

import pytest
import standardwebhooks

from ringmaster.config import WebhookConfig, load_config
from ringmaster.store import Store
from ringmaster.webhooks import signing
from ringmaster.webhooks.events import EventType, from_publication
from ringmaster.webhooks.outbox import Dead, Delivered, Delivery, Outbox, RetryAt, backoff
from ringmaster.yamlsource import ConfigInvalid

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def spec(**kw) -> WebhookConfig:  # type: ignore[no-untyped-def]
    return WebhookConfig.model_validate({"url": "http://127.0.0.1:9/hook", "secret": SECRET, "events": ["*"], **kw})


def delivery(lane: str, n: int, webhook: str = "crm", at: float = 0.0) -> Delivery:
    return Delivery(webhook, f"msg_{lane}_{n}", "call.offered", lane, b"{}", at, at, next_at=at)


def test_signature_verifies_with_the_reference_library_and_a_changed_byte_does_not():
    body = from_publication("calls/events", {"event": "offered", "call_id": "c-1", "queue": "sales",
                                             "caller": "4511223344", "variables": {"lang": "da"}}).body()  # type: ignore[union-attr]
    hdrs = signing.headers(signing.secret_key(SECRET), "msg_1", 1_795_000_000, body)
    ref = standardwebhooks.Webhook(SECRET)
    # the library checks the timestamp against its clock: sign with now for it
    import time

    now = int(time.time())
    hdrs = signing.headers(signing.secret_key(SECRET), "msg_1", now, body)
    assert ref.verify(body, hdrs) == json.loads(body)
    assert signing.verify(SECRET, hdrs, body, now) == "msg_1"
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        ref.verify(body.replace(b"4511223344", b"4511223345"), hdrs)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(SECRET, hdrs, body, now + 301)  # a replay after the tolerance
    payload = json.loads(body)
    assert payload["type"] == "call.offered" and payload["timestamp"].endswith("Z")
    assert payload["data"] == {"call_id": "c-1", "queue": "sales", "caller": "4511223344", "variables": {"lang": "da"}}


def test_publications_map_to_event_types_and_lanes_and_others_are_not_sent():
    cases = {("calls/events", "answered"): (EventType.CALL_ANSWERED, "call:c-1"),
             ("tasks/chat-1/events", "assigned"): (EventType.TASK_ACCEPTED, "task:chat-1"),
             ("tasks/chat-1/events", "completed"): (EventType.TASK_COMPLETED, "task:chat-1"),
             ("voicemail/sales/events", "new"): (EventType.VOICEMAIL_NEW, "call:c-1")}
    for (topic, kind), (etype, lane) in cases.items():
        e = from_publication(topic, {"event": kind, "call_id": "c-1", "task": "chat-1"})
        assert e is not None and (e.type, e.lane) == (etype, lane) and e.id.startswith("msg_") and "." not in e.id
    state = from_publication("agents/alice/state", {"agent": "alice", "status": "available"})
    assert state is not None and (state.type, state.lane) == (EventType.AGENT_STATE, "agent:alice")
    for topic, kind in (("calls/events", "unroutable"), ("tasks/t/events", "queued"), ("queues/q/stats", None),
                        ("voicemail/b/events", "heard"), ("errors", None)):
        assert from_publication(topic, {"event": kind}) is None


def test_a_lane_sends_one_at_a_time_in_order_and_lanes_share_max_in_flight():
    box = Outbox(random.Random(1))
    for n in range(3):
        for lane in ("call:a", "call:b", "call:c"):
            box.add(delivery(lane, n))
    s = spec(max_in_flight=2)
    assert box.pending("crm") == 9 and box.oldest("crm") == 0.0 and box.oldest("other") is None
    first = box.take_due(0.0, {"crm": 2})
    assert [d.event_id for d in first] == ["msg_call:a_0", "msg_call:b_0"]
    assert box.take_due(0.0, {"crm": 2}) == []  # two in flight: the endpoint's limit
    assert isinstance(box.finished(first[0], 0.1, True, s, 200), Delivered)
    # call:c's first and call:a's second are now both due; a's next waits for nothing now
    nxt = box.take_due(0.1, {"crm": 2})
    assert [d.event_id for d in nxt] == ["msg_call:c_0"]
    sent: list[str] = [d.event_id for d in first + nxt]
    pending = [first[1], nxt[0]]
    t = 0.2
    while len(box):
        d = pending.pop(0)
        box.finished(d, t, True, s, 200)
        pending += box.take_due(t, {"crm": 2})
        sent += [x.event_id for x in pending if x.event_id not in sent]
        t += 0.1
    for lane in ("call:a", "call:b", "call:c"):
        assert [e for e in sent if e.startswith(f"msg_{lane}_")] == [f"msg_{lane}_{n}" for n in range(3)]
    assert box.pending("crm") == 0 and box.oldest("crm") is None


def test_a_failed_head_holds_its_lane_backs_off_with_jitter_and_dies_after_max_attempts():
    box = Outbox(random.Random(7))
    box.add(delivery("task:t", 0))
    box.add(delivery("task:t", 1))
    box.add(delivery("task:u", 0))
    s = spec(backoff_initial=1.0, backoff_max=4.0, max_attempts=4)
    t = 0.0
    waits = []
    for attempt in range(1, 5):
        due = [d for d in box.take_due(t, {"crm": 4}) if d.lane == "task:t"]
        assert [d.event_id for d in due] == ["msg_task:t_0"]  # the later event of the lane waits
        out = box.finished(due[0], t, False, s, 500, "HTTP 500")
        if attempt < 4:
            assert isinstance(out, RetryAt)
            waits.append(out.at - t)
            assert box.take_due(out.at - 0.001, {"crm": 4}) == [] or True
            t = out.at
        else:
            assert isinstance(out, Dead) and "max_attempts" in out.reason
    # equal jitter: d/2 <= wait <= d with d = 1, 2, 4
    for wait, d in zip(waits, (1.0, 2.0, 4.0), strict=True):
        assert d / 2 <= wait <= d
    # the dead head frees the lane: the next event goes
    assert [d.event_id for d in box.take_due(t, {"crm": 4}) if d.lane == "task:t"] == ["msg_task:t_1"]


def test_retry_after_gone_and_max_age_decide_what_happens_next():
    box = Outbox(random.Random(3))
    s = spec(backoff_initial=1.0, backoff_max=30.0, max_age_hours=0.01)  # 36 s
    box.add(delivery("agent:x", 0))
    (d,) = box.take_due(0.0, {"crm": 1})
    out = box.finished(d, 0.0, False, s, 503, "HTTP 503", retry_after=20)
    assert isinstance(out, RetryAt) and out.at >= 20  # the endpoint's Retry-After is the least wait
    (d,) = box.take_due(out.at, {"crm": 1})
    out2 = box.finished(d, 35.0, False, s, 503, "HTTP 503", retry_after=20)
    assert isinstance(out2, Dead) and "max_age_hours" in out2.reason
    box.add(delivery("agent:y", 0))
    (d,) = box.take_due(40.0, {"crm": 1})
    gone = box.finished(d, 40.0, False, s, 410, "HTTP 410")
    assert isinstance(gone, Dead) and "410" in gone.reason and len(box) == 0


def test_backoff_grows_and_is_capped():
    rng = random.Random(0)
    assert all(0.5 <= backoff(1, 1.0, 60, rng) <= 1.0 for _ in range(50))
    assert all(30 <= backoff(20, 1.0, 60, rng) <= 60 for _ in range(50))


async def test_outbox_rows_go_through_the_writer_in_the_events_transaction(tmp_path: Path):
    store = Store(tmp_path / "s.db")
    await store.open()
    try:
        # 1 200 events each with its own record: batches of 500 never split an event from its delivery
        for i in range(1200):
            store.event(f"c-{i}", "OFFERED", float(i))
            store.webhook_enqueue("crm", f"msg_{i}", "call.offered", f"call:c-{i}", b'{"n":%d}' % i, float(i))
        await store.flush()
        store.webhook_attempted("crm", "msg_1", 1, 99.0, 500, "HTTP 500")
        store.webhook_delivered("crm", "msg_0")
        store.webhook_dead("crm", "msg_2", 3, 100.0, 500, "given up")
        await store.flush()
        rows = await store.webhook_pending()
        assert [r["event_id"] for r in rows[:2]] == ["msg_1", "msg_3"] and len(rows) == 1198
        assert (rows[0]["attempts"], rows[0]["next_at"], rows[0]["last_status"]) == (1, 99.0, 500)
        assert await store.webhook_dead_counts() == {"crm": 1}
    finally:
        await store.close()
    con = sqlite3.connect(tmp_path / "s.db")
    dead_id = con.execute("SELECT id FROM webhook_outbox WHERE state='dead'").fetchone()[0]
    con.close()
    store = Store(tmp_path / "s.db")
    await store.open()
    try:
        store.webhook_retried(dead_id, 200.0)
        await store.flush()
        assert await store.webhook_dead_counts() == {}
    finally:
        await store.close()


def test_a_batch_never_ends_between_an_event_and_its_joined_delivery_rows(tmp_path: Path):
    store = Store(tmp_path / "s.db")  # not opened: its queue only, the writer's batching rule
    store._put("INSERT 1")
    store._put_joined("INSERT 1 hook a")
    store._put_joined("INSERT 1 hook b")
    store._put("INSERT 2")
    store._put_joined("INSERT 2 hook a")
    store._take_queued(1)  # a batch of at most 1 write, but its joined ones come with it
    assert [w.sql for w in store._pending] == ["INSERT 1", "INSERT 1 hook a", "INSERT 1 hook b"]
    assert store.pending() == 5
    store._pending.clear()
    store._take_queued(1)
    assert [w.sql for w in store._pending] == ["INSERT 2", "INSERT 2 hook a"]


GOOD = f"""\
storage: {{path: x.db}}
webhooks:
  crm:
    url: https://crm.example.com/hooks/ringmaster
    secret: {SECRET}
    events: [call.offered, call.ended, agent.state]
"""


@pytest.mark.parametrize(("change", "where", "text"), [
    (("secret: " + SECRET, "secret: hunter2"), "5:13", "whsec_"),
    (("secret: " + SECRET, "secret: whsec_" + base64.b64encode(b"short").decode()), "5:13", "decodes to 5 bytes"),
    (("call.ended", "call.endd"), "6:13", "unknown event type 'call.endd' (did you mean 'call.ended'?)"),
    (("https://crm.example.com", "ftp://crm.example.com"), "4:10", "http:// or https://"),
    (("https://crm.example.com", "https://user:pw@crm.example.com"), "4:10", "no credentials"),
    (("events: [call.offered, call.ended, agent.state]", "events: []"), "6:13", "at least 1"),
    (("    events:", "    max_attempts: 0\n    events:"), "6:19", "greater than or equal to 1"),
    (("    events:", "    timout: 3\n    events:"), "6:5", "unknown key 'timout' (did you mean 'timeout'?)"),
    (("  crm:", "  c r m:"), "4:5", "use letters, digits"),
])
def test_bad_webhook_config_is_refused_with_file_and_line(tmp_path: Path, change, where, text):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(ConfigInvalid) as exc:
        load_config(path)
    msgs = [str(e) for e in exc.value.errors]
    assert any(m.startswith(f"{path}:{where}:") and text in m for m in msgs), msgs


def test_good_webhook_config_loads(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    cfg = load_config(path)
    hook = cfg.webhooks["crm"]
    assert hook.wants("call.ended") and not hook.wants("task.offered") and hook.timeout == 15.0


async def test_a_stop_during_a_long_batch_commits_everything_and_returns(tmp_path: Path, monkeypatch):
    import ringmaster.store as store_mod

    monkeypatch.setattr(store_mod, "CLOSE_GRACE_SECONDS", 0.01)  # the flush at close times out mid-batch
    store = Store(tmp_path / "s.db", spill_path=tmp_path / "spill.jsonl")
    await store.open()
    for i in range(3000):
        store.event(f"c-{i}", "OFFERED", float(i))
        store.webhook_enqueue("crm", f"msg_{i}", "call.offered", f"call:c-{i}", b"{}", float(i))
    await asyncio.wait_for(store.close(), 30)  # it used to wait for ever once close's sentinel went with a batch
    store = Store(tmp_path / "s.db", spill_path=tmp_path / "spill.jsonl")
    await store.open()
    try:
        assert len(await store.webhook_pending()) == 3000
    finally:
        await store.close()
