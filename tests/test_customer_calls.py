"""One customer across a call and a chat, with the real daemon: pjsua2 caller and agent phones
through the Kamailio edge, chats and agents' desks over the embedded mosquitto, the HTTP API
and the CLI on the same SQLite file (docs/customers.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.parse

from ringmaster import protocol as p
from tests.helpers.audio import write_tone
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.test_acd_calls import agents_up, wait_agent
from tests.test_api import TOKENS, http
from tests.test_presence_mqtt import INTEGRATION, integration

ALICE_TOKEN = "alice-" + "x" * 20
NUMBER = "+4520123456"


def config(d) -> None:  # type: ignore[no-untyped-def]
    write_tone(d.dir / "prompts" / "hold.wav", 440.0, 3.0)
    write_tone(d.dir / "prompts" / "wrapup-code.wav", 1200.0, 1.0)
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": n, "token": t, "role": n} for n, t in TOKENS.items()]
                        + [{"name": "alice-desk", "token": ALICE_TOKEN, "role": "agent", "agent": "alice"}]}
    d.config["agents"] = {n: {"softphone": {"username": n, "password": f"{n}-secret"}, "mqtt_password": f"{n}-mqtt-pw",
                              "presence": {"wrapup": {"voice": 1, "chat": 1}}} for n in ("alice", "bob")}
    d.config["queues"] = {"sales": {"strategy": "linear", "members": ["alice", "bob"], "moh": "hold", "retry": 0.5}}
    # a lookup would set these; the flow sets them as a CRM's answer would
    d.config["flows"]["main"] = [{"set": {"tier": "gold", "cname": "Dana Jensen"}}, {"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.config["customers"] = {"default_country": "DK", "tier_var": "tier", "name_var": "cname", "notes_max": 500,
                             "wrapup_dtmf": True, "wrapup_seconds": 8,
                             "wrapup_codes": {"sale": {"digits": "1"}, "complaint": {"digits": "22"},
                                              "callback": {"description": "no digits: desk only"}}}


def desk(d, name: str) -> Client:  # type: ignore[no-untyped-def]
    c = Client(d.ports.base + 8, name, f"{name}-mqtt-pw", client_id=f"desk-{name}")
    c.subscribe(f"agents/{name}/offers")
    return c


def cli(d, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "ringmaster.cli", "customers", *args, "-c", str(d.config_path)],
                          capture_output=True, text=True, timeout=30)


def api_key(key: str) -> str:
    return "/api/customers/" + urllib.parse.quote(key, safe="")


async def test_a_call_with_alice_wrapped_up_by_keys_and_mqtt_is_in_the_history_of_bobs_chat_offer(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    config(d)
    d.start()
    chat = integration(d)
    alice_desk, bob_desk = desk(d, "alice"), desk(d, "bob")
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("20123456", d.ports.caller(1), d.ports.base + 90).start()  # a Danish national number
    try:
        leg = await caller.call(f"sip:500@{d.edge}")
        inc = await alice.wait(p.Incoming, timeout=8)
        headers = dict(inc.headers)
        assert headers["X-Ringmaster-Customer"] == NUMBER
        assert headers["X-Ringmaster-Customer-Tier"] == "gold"
        assert headers["X-Ringmaster-Customer-Name"] == "Dana Jensen"
        assert "X-Ringmaster-Customer-History" not in headers  # a first contact
        offered = await chat.until("calls/events", lambda m: m["event"] == "offered")
        assert offered["customer"]["key"] == NUMBER and offered["customer"]["history"] == []
        call_id = offered["call_id"]
        alice.events.remove(inc)
        alice.send(p.Answer(leg=inc.leg))
        await alice.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        await asyncio.sleep(0.5)
        await caller.hangup(leg)
        # the caller is gone; alice's line stays open for a code: a wrong one is refused and said so
        await asyncio.sleep(0.5)
        assert not [m for m in alice.events if isinstance(m, p.CallState) and m.leg == inc.leg
                    and m.state == "disconnected"]
        alice.send(p.SendDtmf(leg=inc.leg, digits="9#"))
        refused = await chat.until("errors", lambda m: m.get("topic") == "ringmaster/agents/alice/dtmf", timeout=8)
        assert "no wrap-up code has the digits 9" in refused["error"] and "1=sale" in refused["error"]
        alice.send(p.SendDtmf(leg=inc.leg, digits="1#"))
        keyed = await chat.until("calls/events", lambda m: m["event"] == "wrapup", timeout=8)
        assert (keyed["call_id"], keyed["agent"], keyed["code"], keyed["via"]) == (call_id, "alice", "sale", "dtmf")
        await alice.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        # notes from alice's desk: the code stays; hostile wrap-ups are refused with the reason
        for bad, field, reason in (
                ({"code": "nope"}, "code", "unknown wrap-up code 'nope'; codes: callback, complaint, sale"),
                ({"notes": "n" * 501}, "notes", "notes are at most 500 characters"),
                ({"notes": "a\u0007b"}, "notes", "no control characters"),
                ({"task": "t-not-mine", "code": "sale"}, "task", "is not one of agent 'alice'")):
            alice_desk.publish("agents/alice/commands", {"version": 1, "command": "wrapup", **bad})
            err = await chat.until("errors", lambda m, r=reason: r in m.get("error", ""))
            assert err["topic"].endswith("agents/alice/commands") and err["field"] == field
        alice_desk.publish("agents/alice/commands", {"version": 1, "command": "wrapup", "task": call_id,
                                                     "notes": "wants the gold plan"})
        await chat.until("calls/events", lambda m: m["event"] == "wrapup" and m["via"] == "mqtt")
        # the same customer chats (the number as the chat system has it): bob gets it, with the call
        chat.publish("agents/alice/commands", {"version": 1, "command": "pause", "reason": "lunch"})
        await chat.until("agents/alice/state", lambda s: s["status"] == "paused")
        for bad, reason in (("+45 1", "not a valid phone number"), ("two words", "an id is letters")):
            chat.publish("tasks/new", {"version": 1, "id": "bad-1", "channel": "chat", "queue": "sales",
                                       "customer": bad})
            err = await chat.until("errors", lambda m, r=reason: r in m.get("error", ""))
            assert err["field"] == "customer"
        chat.publish("tasks/new", {"version": 1, "id": "chat-1", "channel": "chat", "queue": "sales",
                                   "customer": "+45 20 12 34 56"})
        offer = await bob_desk.until("agents/bob/offers", lambda m: m["event"] == "offer" and m["task"] == "chat-1")
        customer = offer["customer"]
        assert (customer["key"], customer["tier"], customer["name"]) == (NUMBER, "gold", "Dana Jensen")
        last = customer["history"][0]
        assert (last["channel"], last["ref"], last["agent"], last["queue"], last["disposition"], last["code"],
                last["notes"]) == ("voice", call_id, "alice", "sales", "completed", "sale", "wants the gold plan")
        assert last["talk"] > 0.4
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "accept", "task": "chat-1"})
        await chat.until("tasks/chat-1/events", lambda m: m["event"] == "assigned")
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "complete", "task": "chat-1"})
        await chat.until("tasks/chat-1/events", lambda m: m["event"] == "completed")
        # the API: bob's wrap-up by a supervisor; an operator or another agent's token may not
        assert http(d, "POST", "/api/agents/bob/wrapup", "operator", {"code": "callback"})[0] == 403
        assert http(d, "POST", "/api/agents/bob/wrapup", token=ALICE_TOKEN, body={"code": "callback"})[0] == 403
        status, _, body = http(d, "POST", "/api/agents/bob/wrapup", "supervisor", {"code": "bogus"})
        assert status == 400 and "unknown wrap-up code 'bogus'" in json.loads(body)["error"]
        status, _, body = http(d, "POST", "/api/agents/bob/wrapup", "supervisor", {"code": "callback", "notes": "x"})
        assert status == 200, body
        assert json.loads(body)["wrapup"]["ref"] == "chat-1"  # bob's latest task
        await chat.until("tasks/chat-1/events", lambda m: m["event"] == "wrapup" and m["code"] == "callback")
        wait_agent(d, "bob", "available")
        # the whole history: by the number in any form, from the API and the CLI
        status, _, body = http(d, "GET", api_key("tel:20123456"), "operator")
        assert status == 200, body
        record = json.loads(body)
        assert [(h["channel"], h["agent"], h["code"]) for h in record["history"]] == [
            ("chat", "bob", "callback"), ("voice", "alice", "sale")]
        assert record["keys"] == [{"key": NUMBER, "kind": "phone", "added_at": record["keys"][0]["added_at"]}]
        shown = cli(d, "show", "+4520123456")
        assert shown.returncode == 0, shown.stderr
        assert "tier gold" in shown.stdout and "Dana Jensen" in shown.stdout
        lines = [ln for ln in shown.stdout.splitlines() if " chat " in ln or " voice " in ln]
        assert "bob" in lines[0] and "callback" in lines[0] and "alice" in lines[1] and "wants the gold plan" in lines[1]
        # hostile keys: clear errors, nothing changes
        for key, code, reason in (("+45 1", 400, "not a valid phone number"), ("a b", 400, "an id is letters"),
                                  ("+4520999999", 404, "no customer has the key"), ("x" * 300, 400, "at most 254")):
            status, _, body = http(d, "GET", api_key(key), "operator")
            assert status == code and reason in json.loads(body)["error"], (key, status, body)
        bad = cli(d, "show", "tel:123")
        assert bad.returncode == 2 and "not a valid phone number" in bad.stderr
        # an email from the same person is another customer until an admin merges them
        chat.publish("tasks/new", {"version": 1, "id": "mail-1", "channel": "email", "queue": "sales",
                                   "customer": "Dana@Example.com"})
        await chat.until("tasks/mail-1/events", lambda m: m["event"] == "queued")
        await asyncio.sleep(0.3)
        status, _, body = http(d, "GET", api_key("dana@example.com"), "operator")
        assert status == 200 and json.loads(body)["id"] != record["id"]
        assert http(d, "POST", "/api/customers/merge", "supervisor", {"from": "dana@example.com", "into": NUMBER})[0] == 403
        status, _, body = http(d, "POST", "/api/customers/merge", "admin", {"from": "nobody@example.com", "into": NUMBER})
        assert status == 404 and "nobody@example.com" in json.loads(body)["error"]
        merged = cli(d, "merge", "dana@example.com", "tel:20123456")
        assert merged.returncode == 0, merged.stderr
        assert f"into {record['id']}" in merged.stdout
        status, _, body = http(d, "POST", "/api/customers/merge", "admin", {"from": "dana@example.com", "into": NUMBER})
        assert status == 409 and "same customer" in json.loads(body)["error"]
        status, _, body = http(d, "GET", api_key("dana@example.com"), "operator")
        after = json.loads(body)
        assert after["id"] == record["id"] and after["tier"] == "gold"
        assert {k["key"] for k in after["keys"]} == {NUMBER, "dana@example.com"}
        assert [h["channel"] for h in after["history"]] == ["email", "chat", "voice"]
    finally:
        await caller.stop()
        for ph in (alice, bob):
            await ph.stop()
        for c in (chat, alice_desk, bob_desk):
            c.close()
    assert d.stop() == 0


async def test_an_account_keyed_in_the_ivr_links_calls_from_two_numbers_and_reaches_the_phone(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    config(d)
    d.config["customers"].update({"key_var": "account", "wrapup_dtmf": False})
    d.config["flows"]["main"] = [{"collect": {"var": "account", "prompt": "welcome", "invalid_prompt": "other",
                                              "min": 4, "max": 6, "timeout": 4}}, {"queue": "sales"}, "hangup"]
    d.start()
    chat = integration(d)
    alice, bob = await agents_up(d, ("alice", "bob"))
    callers = [await Phone(name, d.ports.caller(1 + 5 * i), d.ports.base + 70 + 10 * i).start()
               for i, name in enumerate(("4511223344", "20123456"))]
    call_ids = []
    try:
        for n, caller in enumerate(callers):
            leg = await caller.call(f"sip:500@{d.edge}")
            await asyncio.sleep(1.8)  # the welcome prompt asks for the account
            caller.send(p.SendDtmf(leg=leg, digits="4711#"))
            inc = await alice.wait(p.Incoming, timeout=8)
            headers = dict(inc.headers)
            assert headers["X-Ringmaster-Customer"] == "4711"  # the account, whatever the number
            offered = await chat.until("calls/events", lambda m: m["event"] == "offered" and m["call_id"] not in call_ids)
            call_ids.append(offered["call_id"])
            if n == 1:  # the second caller's ring shows the first call, from another number
                assert offered["customer"]["history"][0]["ref"] == call_ids[0]
                history = headers["X-Ringmaster-Customer-History"]
                assert " voice sales alice completed " in history and len(history) <= 400
            alice.events.remove(inc)
            alice.send(p.Answer(leg=inc.leg))
            await alice.wait(p.MediaReady, lambda m, agent_leg=inc.leg: m.leg == agent_leg)
            await asyncio.sleep(0.3)
            await caller.hangup(leg)
            await alice.wait(p.CallState, lambda m, agent_leg=inc.leg: m.leg == agent_leg and m.state == "disconnected")
            wait_agent(d, "alice", "available")
    finally:
        for ph in (*callers, alice, bob):
            await ph.stop()
        chat.close()
    status, _, body = http(d, "GET", api_key("4711"), "operator")
    assert status == 200, body
    record = json.loads(body)
    assert [h["ref"] for h in record["history"]] == call_ids[::-1]
    assert [k["key"] for k in record["keys"]] == ["4711"]


async def test_a_waiting_email_keeps_its_customers_history_across_a_restart(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    config(d)
    for agent in d.config["agents"].values():
        agent["auto_login"] = False  # desk-only agents: no phone needed, they log in over MQTT
    d.start()
    chat, bob_desk = integration(d), desk(d, "bob")
    try:
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "login"})
        chat.publish("tasks/new", {"version": 1, "id": "c0", "channel": "chat", "queue": "sales",
                                   "customer": "Dana@Example.com"})
        await bob_desk.until("agents/bob/offers", lambda m: m["event"] == "offer" and m["task"] == "c0")
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "accept", "task": "c0"})
        await chat.until("tasks/c0/events", lambda m: m["event"] == "assigned")
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "complete", "task": "c0"})
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "wrapup", "code": "complaint",
                                                 "notes": "parcel lost"})
        await chat.until("tasks/c0/events", lambda m: m["event"] == "wrapup")
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "logout"})
        await chat.until("agents/bob/state", lambda s: s["status"] == "logged-out")
        chat.publish("tasks/new", {"version": 1, "id": "m1", "channel": "email", "queue": "sales",
                                   "customer": "dana@example.com"})
        await chat.until("tasks/m1/events", lambda m: m["event"] == "queued")
    finally:
        chat.close()
        bob_desk.close()
    assert d.stop() == 0
    d.start()
    bob_desk = desk(d, "bob")
    try:
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "login"})
        offer = await bob_desk.until("agents/bob/offers", lambda m: m["event"] == "offer" and m["task"] == "m1")
        assert offer["customer"]["key"] == "dana@example.com"
        assert [(h["ref"], h["code"], h["notes"]) for h in offer["customer"]["history"]] == [
            ("c0", "complaint", "parcel lost")]
    finally:
        bob_desk.close()
