"""Customer keys, history reads and wrap-up rules, on a real SQLite store (no daemon).

The whole path with real calls and chats is tests/test_customer_calls.py."""

from __future__ import annotations

import sqlite3
import time

import pytest

from ringmaster.config import CustomersConfig
from ringmaster.customers import CustomerBook, CustomerContext, KeyRefused, caller_key, parse_key
from ringmaster.reports import customers as reads
from ringmaster.store import Store


@pytest.mark.parametrize(("raw", "key"), [
    ("20123456", "+4520123456"),        # national, with the default country
    ("4520123456", "+4520123456"),      # international without its +
    ("004520123456", "+4520123456"),    # the international prefix
    ("+46 8 123 456 78", "+46812345678"),
    ("anonymous", None), ("1001", None), ("", None), ("+4512", None), ("9" * 60, None),
])
def test_caller_ids_become_e164_numbers_or_no_customer(raw, key):
    assert caller_key(raw, "DK") == key


def test_task_keys_are_numbers_addresses_or_ids_and_bad_ones_say_why():
    assert parse_key("+45 20 12 34 56", "DK") == ("+4520123456", "phone")
    assert parse_key("tel:20123456", "DK") == ("+4520123456", "phone")
    assert parse_key("Dana@Example.COM", "DK") == ("dana@example.com", "email")
    assert parse_key("ACME-4711", "DK") == ("ACME-4711", "id")
    for raw, reason in (("+45 1", "not a valid phone number"), ("tel:20123456", r"give it as \+CC"),
                        ("a@b", "not an email address"), ("two words", "an id is letters"),
                        ("x" * 300, "at most 254"), ("ab\x00c", "control characters"), (42, "a customer key"),
                        ("", "a customer key")):
        with pytest.raises(KeyRefused, match=reason):
            parse_key(raw, None if raw == "tel:20123456" else "DK")


def test_screen_pop_headers_stay_within_their_budget_and_carry_no_notes():
    history = tuple({"at": 1_764_500_000 + i, "channel": "voice", "queue": "sales", "agent": "alice",
                     "disposition": "completed", "code": "sale", "notes": "secret\r\nX-Evil: 1"} for i in range(50))
    ctx = CustomerContext("+4520123456", "c-1", "Dana\r\nX-Evil: 1", "gold", history)
    headers = dict(ctx.headers(200))
    assert headers["X-Ringmaster-Customer"] == "+4520123456"
    assert headers["X-Ringmaster-Customer-Tier"] == "gold"
    assert "X-Ringmaster-Customer-Name" not in headers  # a CR/LF in a name never reaches SIP
    assert len(headers["X-Ringmaster-Customer-History"]) <= 200
    assert "secret" not in headers["X-Ringmaster-Customer-History"]
    assert headers["X-Ringmaster-Customer-History"].startswith("2025-11-30T")


async def _store(tmp_path) -> Store:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "rm.db")
    await store.open()
    return store


async def test_history_spans_calls_tasks_and_voicemail_and_a_merge_moves_it_all(tmp_path):
    store = await _store(tmp_path)
    t0 = time.time() - 100
    try:
        store.call_arrived("call-1", "sip-1", "20123456", "500", "sip:500@x", "w1", t0)
        store.customer_seen("+4520123456", "phone", t0)
        store.call_customer("call-1", "+4520123456")
        store.call_queued("call-1", "sales")
        store.call_agent("call-1", "alice", 4.0)
        store.call_talk("call-1", 30.0)
        store.call_ended("call-1", t0 + 40, "completed", "caller_hangup", 200, "caller", [], {})
        store.wrapup("call", "call-1", "alice", "sale", None, t0 + 41)
        store.wrapup("call", "call-1", "alice", None, "wants gold", t0 + 42)  # notes later: the code stays
        store.voicemail_started("call-1", "sales", "20123456", "/x.wav", t0 + 20)
        store.task_created("chat-1", "chat", "sales", 0, {}, None, {}, t0 + 50)
        store.customer_seen("dana@example.com", "email", t0 + 50)
        store.task_customer("chat-1", "dana@example.com")
        store.customer_details("+4520123456", "Dana", None, t0 + 60)
        store.customer_details("dana@example.com", "Dana J", "gold", t0 + 60)
        await store.flush()
        con = sqlite3.connect(f"file:{tmp_path / 'rm.db'}?mode=ro", uri=True)
        phone = reads.customer(con, "+4520123456")
        assert phone is not None and phone["name"] == "Dana" and phone["tier"] is None
        assert [(h["channel"], h["code"], h["notes"]) for h in phone["history"]] == [
            ("voicemail", None, None), ("voice", "sale", "wants gold")]  # newest first
        assert phone["history"][1]["talk"] == 30.0 and phone["history"][1]["wait"] == 4.0
        assert reads.customer(con, "+4520123456", exclude="call-1")["history"] == []  # the call and its message
        email_id = reads.customer_id(con, "dana@example.com")
        store.customers_merged(email_id, phone["id"], t0 + 70, "test")
        await store.flush()
        merged = reads.customer(con, "dana@example.com")
        assert merged["id"] == phone["id"] and merged["tier"] == "gold" and merged["name"] == "Dana"
        assert {k["key"] for k in merged["keys"]} == {"+4520123456", "dana@example.com"}
        assert [h["channel"] for h in merged["history"]] == ["chat", "voicemail", "voice"]
        assert reads.customer(con, "+4520999999") is None
        assert con.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 1
        # a key seen again after the merge makes no new customer
        store.customer_seen("dana@example.com", "email", t0 + 80)
        await store.flush()
        assert con.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 1
        con.close()
    finally:
        await store.close()


async def test_wrapup_takes_configured_codes_of_the_agents_own_tasks_only(tmp_path):
    store = await _store(tmp_path)
    cfg = CustomersConfig(default_country="DK", notes_max=50,
                          wrapup_codes={"sale": {"digits": "1"}, "complaint": {"digits": "22"}})
    book = CustomerBook(cfg, store, str(tmp_path / "rm.db"))
    await book.start()
    try:
        with pytest.raises(KeyRefused, match="has no task to wrap up"):
            book.wrapup("alice", None, "sale", None, "api")
        book.assigned("alice", "call-1", "voice")
        book.assigned("alice", "chat-1", "chat")
        for args, reason in (((None, "nope", None), "unknown wrap-up code 'nope'; codes: complaint, sale"),
                             ((None, None, "x" * 51), "notes are at most 50 characters, not 51"),
                             ((None, None, "a\x1b[2Jb"), "no control characters"),
                             (("call-9", "sale", None), "not one of agent 'alice'"),
                             ((None, None, None), "needs a code, notes or both")):
            with pytest.raises(KeyRefused, match=reason.replace("(", r"\(")):
                book.wrapup("alice", *args, "api")  # type: ignore[arg-type]
        with pytest.raises(KeyRefused, match="not one of agent 'bob'"):
            book.wrapup("bob", "call-1", "sale", None, "api")
        heard = []
        book.listeners.append(heard.append)
        w = book.wrapup("alice", None, "complaint", "line 1\nline 2", "api")  # the latest: the chat
        assert (w.kind, w.ref, w.channel, w.code) == ("task", "chat-1", "chat", "complaint")
        assert heard == [w]
        await store.flush()
        con = sqlite3.connect(tmp_path / "rm.db")
        assert con.execute("SELECT kind, ref, agent, code, notes FROM wrapups").fetchall() == [
            ("task", "chat-1", "alice", "complaint", "line 1\nline 2")]
        con.close()
    finally:
        await book.stop()
        await store.close()


def test_codes_with_the_same_digits_and_unknown_countries_are_config_errors():
    with pytest.raises(ValueError, match="same digits 1"):
        CustomersConfig(wrapup_codes={"a": {"digits": "1"}, "b": {"digits": "1"}})
    with pytest.raises(ValueError, match="not a country"):
        CustomersConfig(default_country="XX")


def test_check_names_the_missing_wrapup_prompt_and_codes_without_digits(tmp_path):
    from ringmaster.config import load_config
    from ringmaster.yamlsource import ConfigInvalid

    (tmp_path / "prompts").mkdir()
    f = tmp_path / "ringmaster.yaml"
    f.write_text("customers:\n  wrapup_dtmf: true\n  wrapup_codes:\n    callback: {}\n")
    with pytest.raises(ConfigInvalid) as exc:
        load_config(f)
    text = "\n".join(str(e) for e in exc.value.errors)
    assert "ringmaster.yaml:2:16: wrapup_dtmf: no wrap-up code has `digits` to key" in text
    assert f"wrapup_prompt: file not found: {tmp_path / 'prompts' / 'wrapup-code.wav'}" in text
    f.write_text("customers:\n  default_country: dk\n")
    with pytest.raises(ConfigInvalid, match=r"ringmaster.yaml:2:20: customers.default_country"):
        load_config(f)
