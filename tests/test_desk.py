"""The agents' desk (/desk) over HTTPS in a real headless Chromium and over aiohttp: an agent
signs in with their own password, the state button changes the one presence the phone, MQTT and
the API see, a paused agent is not offered the next caller, wrap-up shows with its time left and
"done"; a wrong password is refused; one agent's session cannot act on another's tasks.
Screenshots of each state go to /tmp/desk-shots for people to look at."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ringmaster import demo
from ringmaster import protocol as p
from ringmaster.desk import DeskSessions, PasswordCheck
from tests.helpers.browser import Browser
from tests.helpers.phone import Phone
from tests.test_acd_calls import acd_config, agents_up, wait_agent
from tests.test_api import TOKENS, http
from tests.test_presence_mqtt import agent_client, integration, mqtt_config, rows

# screenshots of each state, for a person to look at: inside pytest's own temporary root by
# default (no new directory left in /tmp by every run), or where RINGMASTER_DESK_SHOTS says
SHOTS = Path(os.environ.get("RINGMASTER_DESK_SHOTS")
             or Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}" / "desk-shots")
CHROMIUM_TLS = ("--ignore-certificate-errors",)  # the test's self-signed certificate


def desk_config(d: Any, **desk: Any) -> str:
    """http + http.desk on the test's ports with a self-signed pair in the test's folder; the
    desk's base URL."""
    cert, key = d.dir / "desk-cert.pem", d.dir / "desk-key.pem"
    demo.make_certificate(cert, key)
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": r, "token": t, "role": r} for r, t in TOKENS.items()],
                        "desk": {"listen": f"127.0.0.1:{d.ports.base + 9}", "certificate": str(cert), "key": str(key),
                                 "pause_reasons": ["lunch", "training"], **desk}}
    return f"https://127.0.0.1:{d.ports.base + 9}"


class DeskClient:
    """One agent's desk over HTTPS (its own cookie jar: its own session)."""

    def __init__(self, base: str):
        self.base = base
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             connector=aiohttp.TCPConnector(ssl=False))

    async def req(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        async with self.session.request(method, self.base + path, json=body) as r:
            data = await r.json() if r.content_type == "application/json" else {}
            return r.status, data

    async def sign_in(self, agent: str, password: str) -> int:
        return (await self.req("POST", "/desk/api/session", {"agent": agent, "password": password}))[0]

    async def close(self) -> None:
        await self.session.close()


def test_sessions_end_when_idle_or_old_and_five_wrong_passwords_lock_the_agent_for_a_minute():
    s = DeskSessions(idle=60.0, absolute=3600.0)
    sid = s.start("alice", 1000.0)
    assert s.get(sid, 1059.0) is not None and s.get(sid, 1110.0) is not None  # each use moves the idle clock
    assert s.alive(sid, 1170.0) and not s.alive(sid, 1171.0)  # alive() is no use: 61 s unused
    assert s.get(sid, 1171.0) is None
    sid = s.start("alice", 2000.0)
    for t in range(2000, 5600, 50):
        assert s.get(sid, float(t)) is not None
    assert s.get(sid, 5601.0) is None  # used all along, but an hour old
    for i in range(5):
        assert not s.locked("bob", 100.0 + i)
        s.failed("bob", 100.0 + i)
    assert s.locked("bob", 110.0) and not s.locked("alice", 110.0)
    assert not s.locked("bob", 165.0)  # a minute after the last wrong try
    check = PasswordCheck()
    assert check.check("alice-secret", "alice-secret")
    assert not check.check("alice-secret", "alice-secreT") and not check.check(None, "")


async def test_desk_sign_in_state_button_pause_keeps_the_next_caller_away_and_wrapup_done(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "wrapup": 30}, agents=("alice", "bob"))
    d.config["agents"]["alice"]["name"] = "Alice"
    base = desk_config(d)
    d.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    # the plain API listener does not serve the desk (its cookie is Secure; the page needs TLS)
    assert http(d, "GET", "/desk")[0] == 404
    (phone,) = await agents_up(d, ("alice",))  # alice's softphone: registered, auto-logged-in
    browser = await Browser(d.ports.base + 7).open(f"{base}/desk", args=CHROMIUM_TLS)
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        await browser.until("!document.getElementById('signin').hidden")
        assert await browser.js("window.isSecureContext") is True
        await browser.screenshot(SHOTS / "01-sign-in.png")
        # a wrong password: refused, the page says so, no session
        await browser.js("document.getElementById('agent').value='alice';"
                         "document.getElementById('password').value='alice-wrong';"
                         "document.getElementById('signin-btn').click()")
        err = await browser.until("document.getElementById('signin-error').textContent")
        assert "wrong agent or password" in err
        assert await browser.js("document.getElementById('desk').hidden") is True
        await browser.screenshot(SHOTS / "02-wrong-password.png")
        await browser.js("document.getElementById('password').value='alice-secret';"
                         "document.getElementById('signin-btn').click()")
        await browser.until("!document.getElementById('desk').hidden")
        assert await browser.js("document.cookie") == ""  # HttpOnly: the page's scripts never see the session
        label = "document.getElementById('state-label').textContent"
        assert await browser.until(f"{label} === 'Available' && document.getElementById('conn').textContent === 'live'")
        assert await browser.js("document.getElementById('who').textContent") == "Alice (alice)"
        await browser.screenshot(SHOTS / "03-available.png")

        # pause for lunch with the one button: the API and the ACD see the same state
        await browser.js("document.getElementById('state').click()")
        await browser.screenshot(SHOTS / "04-state-menu.png")
        await browser.js("document.querySelector('[data-state-option=pause][data-reason=lunch]').click()")
        await browser.until(f"{label} === 'Paused: lunch'")
        assert json.loads(http(d, "GET", "/api/agents", "operator")[2])["agents"]["alice"] == "paused:lunch"
        await browser.screenshot(SHOTS / "05-paused-lunch.png")
        # the next caller is not offered to her: the call waits in the queue, her phone is silent
        a = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(2.0)
        assert not [e for e in phone.events if isinstance(e, p.Incoming)]
        snap = json.loads(http(d, "GET", "/api/queues", "operator")[2])
        assert snap["queues"]["sales"]["waiting"] == 1

        # available again: the waiting caller rings her phone at once
        await browser.js("document.getElementById('state').click()")
        await browser.js("document.querySelector('[data-state-option=available]').click()")
        inc = await phone.wait(p.Incoming, timeout=5)
        await browser.until(f"['Ringing', 'Available'].includes({label})")
        phone.send(p.Answer(leg=inc.leg))
        wait_agent(d, "alice", "on-call")
        await browser.until(f"{label} === 'On a call'")
        await browser.screenshot(SHOTS / "06-on-a-call.png")
        await caller.hangup(a)
        # wrap-up (30 s in this queue) shows with its time left; "done" ends it
        await browser.until("!document.getElementById('wrapup').hidden", timeout=8)
        left = await browser.js("document.getElementById('wrapup-left').textContent")
        secs = int(left.split()[1].rstrip("s"))
        assert left.startswith("voice ") and 25 <= secs <= 30, left
        assert await browser.js(label) == "Wrap-up"
        await browser.screenshot(SHOTS / "07-wrap-up.png")
        await browser.js("document.getElementById('wrapup-done').click()")
        await browser.until(f"document.getElementById('wrapup').hidden && {label} === 'Available'")
        wait_agent(d, "alice", "available")

        # log out from the button: the ACD logs her out (no more offers), the API agrees
        await browser.js("document.getElementById('state').click()")
        await browser.js("document.querySelector('[data-state-option=logout]').click()")
        await browser.until(f"{label} === 'Logged out'")
        wait_agent(d, "alice", "logged-out")
        await browser.screenshot(SHOTS / "08-logged-out.png")
        # sign out: the session is gone for good
        await browser.js("document.getElementById('signout').click()")
        await browser.until("!document.getElementById('signin').hidden")
        status = await browser.js("fetch('/desk/api/me').then(r => r.status)", wait=True)
        assert status == 401
    finally:
        await browser.close()
        await caller.stop()
        await phone.stop()


@pytest.mark.timeout(90)
async def test_wrong_password_is_refused_and_bobs_session_cannot_act_on_alices_chat(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    mqtt_config(d, {"alice": {"auto_login": False, "desk_password": "alice-desk-pw"},
                    "bob": {"auto_login": False}})
    base = desk_config(d)
    d.start()
    chat = integration(d)
    watch = agent_client(d, "alice")
    alice, bob, eve = DeskClient(base), DeskClient(base), DeskClient(base)
    try:
        # the desk password, not the SIP one, when the agent has one; unknown agents the same 401
        assert await alice.sign_in("alice", "alice-secret") == 401
        assert await eve.sign_in("mallory", "whatever-pw") == 401
        assert (await eve.req("GET", "/desk/api/me"))[0] == 401
        # hostile bodies: refused with the reason, nothing signed in
        for raw in (b"{", b"[1]", b'{"agent": "alice", "password": ' + b"[" * 50 + b"]" * 50 + b"}",
                    b'{"agent": "' + b"a" * 5000 + b'", "password": "x"}'):
            async with eve.session.post(base + "/desk/api/session", data=raw,
                                        headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and "error" in await r.json(), (raw[:40], r.status)
        async with eve.session.post(base + "/desk/api/session", data=b"x" * 40_000,
                                    headers={"Content-Type": "application/json"}) as r:
            assert r.status in (400, 413), r.status
        assert await eve.sign_in("a" * 65, "whatever-pw") == 400
        assert await alice.sign_in("alice", "alice-desk-pw") == 200
        assert await bob.sign_in("bob", "bob-secret") == 200
        # a form post from another site (no JSON content type) changes nothing
        async with bob.session.post(base + "/desk/api/state", data={"action": "logout"}) as r:
            assert r.status == 415
        status, view = await alice.req("POST", "/desk/api/state", {"action": "available"})
        assert status == 200 and view["state"] == "available"
        watch.wait_for("agents/alice/state", lambda s: s["status"] == "available")  # MQTT sees the same
        st, _ = await alice.req("POST", "/desk/api/state", {"action": "pause", "reason": "gossip"})
        assert st == 400  # only the configured reasons
        chat.publish("tasks/new", {"version": 1, "id": "chat-1", "channel": "chat", "queue": "chat",
                                   "data": {"customer": "Dana"}})
        watch.wait_for("agents/alice/offers", lambda m: m["event"] == "offer" and m["task"] == "chat-1")
        _, view = await alice.req("GET", "/desk/api/me")
        assert view["channels"]["chat"]["offered"] == ["chat-1"]
        # bob's session: accepting, rejecting or completing alice's chat is refused, nothing changes
        for action in ("accept", "reject", "complete"):
            status, body = await bob.req("POST", "/desk/api/tasks/chat-1", {"action": action})
            assert status == 409 and "bob" in body["error"], (action, status, body)
        # and nothing in the desk's API names an agent: bob's state change is bob's
        status, body = await bob.req("POST", "/desk/api/state", {"action": "logout", "agent": "alice"})
        assert status == 400
        # the Transfer route: JSON only, the session's own agent only, refused without a call
        async with bob.session.post(base + "/desk/api/transfer", data={"kind": "agent", "target": "bob"}) as r:
            assert r.status == 415
        status, body = await bob.req("POST", "/desk/api/transfer", {"kind": "agent", "target": "bob", "agent": "alice"})
        assert status == 400 and body["error"] == "fields: kind, target", body
        status, body = await bob.req("POST", "/desk/api/transfer", {"kind": "number", "target": "+4512345678"})
        assert status == 400 and "kind" in body["error"], body
        status, body = await alice.req("POST", "/desk/api/transfer", {"kind": "agent", "target": "bob"})
        assert status == 400 and "not connected to a call" in body["error"], body
        assert (await eve.req("POST", "/desk/api/transfer", {"kind": "agent", "target": "bob"}))[0] == 401
        _, view = await alice.req("GET", "/desk/api/me")
        assert view["transfer"] == {"queue": [], "agent": [], "flow": []}, view  # no call: nothing offered
        _, view = await alice.req("GET", "/desk/api/me")
        assert view["channels"]["chat"]["offered"] == ["chat-1"] and view["state"] == "available"
        status, view = await alice.req("POST", "/desk/api/tasks/chat-1", {"action": "accept"})
        assert status == 200 and view["channels"]["chat"]["holding"] == ["chat-1"]
        status, _ = await bob.req("POST", "/desk/api/tasks/chat-1", {"action": "complete"})
        assert status == 409
        status, view = await alice.req("POST", "/desk/api/tasks/chat-1", {"action": "complete"})
        assert status == 200 and view["channels"]["chat"]["holding"] == []
        deadline = time.monotonic() + 5
        while rows(d, "SELECT state, agent FROM tasks") != [("completed", "alice")] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert rows(d, "SELECT state, agent FROM tasks") == [("completed", "alice")]
        # five wrong passwords lock bob's sign-in for a minute, even with the right one then
        for _ in range(5):
            assert await eve.sign_in("bob", "bob-wrong-pw") == 401
        assert await eve.sign_in("bob", "bob-secret") == 429
        assert (await bob.req("GET", "/desk/api/me"))[0] == 200  # a session already open goes on
        # bob's MQTT relay (his own broker login) ends with his session
        ws = await bob.session.ws_connect(base + "/desk/mqtt", protocols=("mqtt",))
        assert ws.protocol == "mqtt"
        assert await bob.req("DELETE", "/desk/api/session") == (200, {"signed_out": True})
        t0 = time.monotonic()
        msg = await ws.receive(timeout=8)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and time.monotonic() - t0 < 6.5, msg
        await ws.close()
        assert (await bob.req("GET", "/desk/api/me"))[0] == 401
        assert not any(r.get("level") == "error" for r in d.events("desk.sign_in_refused"))
    finally:
        for c in (alice, bob, eve):
            await c.close()
        chat.close()
        watch.close()


@pytest.mark.timeout(120)
async def test_inbox_chat_offered_accepted_replied_and_completed_with_notes_in_the_page(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    mqtt_config(d, {"alice": {"auto_login": False, "name": "Alice"}}, queue={"offer_timeout": 30})
    base = desk_config(d)
    d.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    chat = integration(d)
    browser = await Browser(d.ports.base + 7).open(f"{base}/desk", args=CHROMIUM_TLS)
    stranger = DeskClient(base)
    try:
        # the MQTT relay is for signed-in agents only
        async with stranger.session.get(base + "/desk/mqtt") as r:
            assert r.status == 401
        await browser.until("!document.getElementById('signin').hidden")
        await browser.js("document.getElementById('agent').value='alice';"
                         "document.getElementById('password').value='alice-secret';"
                         "document.getElementById('signin-btn').click()")
        await browser.until("!document.getElementById('desk').hidden")
        await browser.until("document.getElementById('inbox-conn').textContent === 'online'", timeout=10)
        await browser.js("document.getElementById('state').click()")
        await browser.js("document.querySelector('[data-state-option=available]').click()")
        # her softphone is not registered: chats and emails, no calls
        await browser.until("document.getElementById('state-label').textContent === 'Available (phone not registered)'")

        chat.publish("tasks/new", {"version": 1, "id": "chat-1", "channel": "chat", "queue": "chat",
                                   "data": {"customer": "Dana", "text": "hello, my order is late"}})
        offer = "document.querySelector('#inbox li.offer[data-task=\"chat-1\"]')"
        await browser.until(f"!!{offer}", timeout=5)
        left = await browser.js(f"{offer}.querySelector('.left').textContent")
        assert left.endswith("s left") and 25 <= int(left.split("s")[0]) <= 30, left
        assert "Chat from Dana" in await browser.js(f"{offer}.textContent")
        # the card shows the task's fields too
        assert await browser.until("document.querySelector('#card [data-field=customer]')?.textContent === 'Dana'")
        await browser.screenshot(SHOTS / "20-chat-offered.png")
        await browser.js(f"{offer}.querySelector('[data-action=accept]').click()")
        await asyncio.to_thread(chat.wait_for, "tasks/chat-1/events",
                                lambda m: m["event"] == "assigned" and m["agent"] == "alice")
        held = "document.querySelector('#inbox li.held[data-task=\"chat-1\"]')"
        await browser.until(f"!!{held}")

        chat.publish("tasks/chat-1/commands", {"version": 1, "command": "message", "name": "Dana",
                                               "text": "Where is <b>my</b> order?"})
        line = await browser.until(f"{held}?.querySelector('.msgs .customer')?.textContent")
        assert line == "Dana: Where is <b>my</b> order?"  # text, never markup
        await browser.js(f"{held}.querySelector('.reply-text').value = 'It ships today.';"
                         f"{held}.querySelector('[data-action=reply]').click()")
        reply = await asyncio.to_thread(chat.wait_for, "tasks/chat-1/events", lambda m: m["event"] == "message")
        assert (reply["from"], reply["agent"], reply["text"]) == ("agent", "alice", "It ships today.")
        await browser.screenshot(SHOTS / "21-chat-conversation.png")
        await browser.js(f"{held}.querySelector('.code').value = 'order-status';"
                         f"{held}.querySelector('.notes').value = 'late parcel | told ETA\\nfollow up Friday';"
                         f"{held}.querySelector('[data-action=complete]').click()")
        await asyncio.to_thread(chat.wait_for, "tasks/chat-1/events", lambda m: m["event"] == "completed")
        await browser.until("document.getElementById('inbox-empty').hidden === false")

        # an email: subject and body shown, answered, completed
        chat.publish("tasks/new", {"version": 1, "id": "mail-1", "channel": "email", "queue": "chat",
                                   "data": {"from": "erik@example.com", "subject": "Invoice 42",
                                            "body": "Hello,\nthe invoice is wrong.\nErik"}})
        mail = "document.querySelector('#inbox li[data-task=\"mail-1\"]')"
        await browser.until(f"{mail}?.querySelector('.subject')?.textContent === 'Subject: Invoice 42'", timeout=8)
        assert await browser.js(f"{mail}.querySelector('.body').textContent") == "Hello,\nthe invoice is wrong.\nErik"
        await browser.js(f"{mail}.querySelector('[data-action=accept]').click()")
        await browser.until("!!document.querySelector('#inbox li.held[data-task=\"mail-1\"]')")
        await browser.screenshot(SHOTS / "22-email.png")
        held = "document.querySelector('#inbox li.held[data-task=\"mail-1\"]')"
        await browser.js(f"{held}.querySelector('.reply-text').value = 'Corrected invoice attached.';"
                         f"{held}.querySelector('[data-action=reply]').click()")
        await asyncio.to_thread(chat.wait_for, "tasks/mail-1/events",
                                lambda m: m["event"] == "message" and m["from"] == "agent")
        await browser.js(f"{held}.querySelector('.code').value = 'billing';"
                         f"{held}.querySelector('[data-action=complete]').click()")
        await asyncio.to_thread(chat.wait_for, "tasks/mail-1/events", lambda m: m["event"] == "completed")
    finally:
        await browser.close()
        await stranger.close()
        chat.close()
    deadline = time.monotonic() + 5
    while len(rows(d, "SELECT * FROM tasks WHERE state='completed'")) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert rows(d, "SELECT task_id, state, agent FROM tasks ORDER BY task_id") == [
        ("chat-1", "completed", "alice"), ("mail-1", "completed", "alice")]
    log = rows(d, "SELECT agent, event, data FROM task_log WHERE task_id='chat-1' AND event IN ('MESSAGE', 'WRAPUP') "
                  "ORDER BY id")
    assert log == [("alice", "MESSAGE", "customer|Where is <b>my</b> order?"),
                   ("alice", "MESSAGE", "agent|It ships today."),
                   ("alice", "WRAPUP", "order-status|late parcel \u00a6 told ETA\u2424follow up Friday")], log


@pytest.mark.timeout(120)
async def test_card_shows_the_customer_and_her_earlier_call_when_she_calls_again_and_chats(daemon_factory):
    from tests.test_customer_calls import NUMBER
    from tests.test_customer_calls import config as customer_config

    d = daemon_factory(workers=1, start=False)
    customer_config(d)
    d.config["customers"]["wrapup_dtmf"] = False  # the code comes from the API here
    d.config["queues"]["sales"]["members"] = ["alice"]
    base = desk_config(d)
    d.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    chat = integration(d)
    (phone,) = await agents_up(d, ("alice",))
    browser = await Browser(d.ports.base + 7).open(f"{base}/desk", args=CHROMIUM_TLS)
    caller = await Phone("20123456", d.ports.caller(1), d.ports.base + 90).start()  # Dana, a Danish number
    customer = "document.querySelector('#card-customer [data-customer=%s]')?.textContent"
    history = ("[...document.querySelectorAll('#card-history tbody tr')].map(tr => "
               "[...tr.querySelectorAll('td')].slice(1).map(td => td.textContent).join(' '))")
    try:
        await browser.until("!document.getElementById('signin').hidden")
        await browser.js("document.getElementById('agent').value='alice';"
                         "document.getElementById('password').value='alice-secret';"
                         "document.getElementById('signin-btn').click()")
        await browser.until("!document.getElementById('desk').hidden")
        assert await browser.js("document.getElementById('card-customer').hidden") is True  # no task: no customer
        # her first call: who she is (the flow's lookup gave name and tier), no earlier contact
        leg = await caller.call(f"sip:500@{d.edge}")
        inc = await phone.wait(p.Incoming, timeout=8)
        assert await browser.until(f"{customer % 'key'} === '{NUMBER}'")
        assert await browser.js(customer % "name") == "Dana Jensen" and await browser.js(customer % "tier") == "gold"
        assert await browser.until("!document.getElementById('card-history-empty').hidden")
        phone.events.remove(inc)
        phone.send(p.Answer(leg=inc.leg))
        wait_agent(d, "alice", "on-call")
        call_id = json.loads(http(d, "GET", "/api/calls?limit=1", "operator")[2])["calls"][0]["call_id"]
        await asyncio.sleep(0.5)
        await caller.hangup(leg)
        status, _, body = http(d, "POST", "/api/agents/alice/wrapup", "supervisor",
                               {"task": call_id, "code": "sale", "notes": "wants the gold plan"})
        assert status == 200, body
        wait_agent(d, "alice", "available")
        assert await browser.until("document.getElementById('card-empty').hidden === false")

        # she calls again: the ring's card shows that call (time, channel, queue, agent, outcome, code)
        leg = await caller.call(f"sip:500@{d.edge}")
        inc = await phone.wait(p.Incoming, timeout=8)
        rows_shown = await browser.until(f"{history}.length === 1 && {history}", timeout=8)
        assert rows_shown == ["voice sales alice completed sale"], rows_shown
        ref = await browser.js("document.querySelector('#card-history tbody tr').dataset.ref")
        note = await browser.js("document.querySelector('#card-history tbody tr').title")
        assert (ref, note) == (call_id, "wants the gold plan")
        await browser.screenshot(SHOTS / "30-card-history.png")
        await caller.hangup(leg)  # she gives up before alice answers
        wait_agent(d, "alice", "available")

        # and she chats (the number as the chat system writes it): both calls, newest first
        chat.publish("tasks/new", {"version": 1, "id": "chat-9", "channel": "chat", "queue": "sales",
                                   "customer": "+45 20 12 34 56", "data": {"text": "about my order"}})
        rows_shown = await browser.until(f"document.getElementById('card').dataset.task === 'chat-9' "
                                         f"&& {history}.length === 2 && {history}", timeout=8)
        assert rows_shown == ["voice sales – abandoned –", "voice sales alice completed sale"], rows_shown
        assert await browser.js(customer % "key") == NUMBER and await browser.js(customer % "name") == "Dana Jensen"
        await browser.screenshot(SHOTS / "30-card-history-chat.png")
    finally:
        await browser.close()
        await caller.stop()
        await phone.stop()
        chat.close()


@pytest.mark.timeout(120)
async def test_supervisor_sees_her_queue_pauses_alice_and_changes_members_and_agents_get_403(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]}, agents=("alice", "bob", "carol"))
    d.config["queues"]["support"] = {"moh": "hold", "members": ["carol"]}
    d.config["agents"]["alice"]["name"] = "Alice"
    base = desk_config(d, supervisors={"sue": {"password": "sue-desk-pw", "name": "Sue", "queues": ["sales"]}})
    d.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    (phone,) = await agents_up(d, ("alice",))
    browser = await Browser(d.ports.base + 7).open(f"{base}/desk", args=CHROMIUM_TLS)
    alice, sue, eve = DeskClient(base), DeskClient(base), DeskClient(base)
    row = "document.querySelector('section[data-queue=sales] tr[data-agent=%s]')"
    try:
        # agents' sessions get the API's 403 on every supervisor route, and change nothing
        assert await alice.sign_in("alice", "alice-secret") == 200
        for method, path, body in (("GET", "/desk/api/supervisor", None),
                                   ("GET", "/desk/api/supervisor/events", None),
                                   ("POST", "/desk/api/supervisor/agents/alice", {"action": "pause", "reason": "lunch"}),
                                   ("POST", "/desk/api/supervisor/queues/sales/members", {"agent": "bob"}),
                                   ("DELETE", "/desk/api/supervisor/queues/sales/members/alice", {})):
            status, data = await alice.req(method, path, body)
            assert status == 403 and data["error"] == "role agent may not do this; it needs supervisor", (path, data)
        assert (await eve.req("GET", "/desk/api/supervisor"))[0] == 401  # no session at all
        assert await eve.sign_in("sue", "sue-wrong-pw") == 401
        wait_agent(d, "alice", "available")
        assert json.loads(http(d, "GET", "/api/queues/sales/members", "operator")[2])["members"] == [
            {"agent": "alice", "tier": 1, "dynamic": False}]

        # sue signs in on the same form and gets her queue, live
        await browser.until("!document.getElementById('signin').hidden")
        await browser.js("document.getElementById('agent').value='sue';"
                         "document.getElementById('password').value='sue-desk-pw';"
                         "document.getElementById('signin-btn').click()")
        await browser.until("!document.getElementById('super').hidden && "
                            "document.getElementById('super-conn').textContent === 'live'")
        assert await browser.js("document.getElementById('desk').hidden") is True
        assert await browser.js("document.getElementById('super-who').textContent") == "Sue (sue)"
        queues = await browser.js("[...document.querySelectorAll('#super-queues section')].map(s => s.dataset.queue)")
        assert queues == ["sales"]  # support is not hers
        assert await browser.until(f"{row % 'alice'}?.dataset.state === 'available'")
        assert await browser.js(f"{row % 'alice'}.querySelector('.state').textContent") == "Available"
        await browser.screenshot(SHOTS / "31-supervisor.png")

        # she pauses alice for training from the page: the API and the store say so
        await browser.js("document.getElementById('super-reason').value = 'training';"
                         f"{row % 'alice'}.querySelector('[data-action=pause]').click()")
        assert await browser.until(f"{row % 'alice'}?.dataset.state === 'paused' && "
                                   f"{row % 'alice'}.querySelector('.state').textContent")  == "Paused: training"
        assert json.loads(http(d, "GET", "/api/agents", "operator")[2])["agents"]["alice"] == "paused:training"
        deadline = time.monotonic() + 5
        while rows(d, "SELECT paused FROM agent_presence WHERE agent='alice'") != [("training",)]:
            assert time.monotonic() < deadline, rows(d, "SELECT * FROM agent_presence")
            await asyncio.sleep(0.1)
        _, view = await alice.req("GET", "/desk/api/me")
        assert (view["state"], view["reason"]) == ("paused", "training")  # alice's own desk shows it
        await browser.screenshot(SHOTS / "31-supervisor-paused.png")

        # a caller waits (alice is paused): the queue shows it
        caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
        try:
            leg = await caller.call(f"sip:500@{d.edge}")
            stats = "document.querySelector('section[data-queue=sales] .stats')"
            assert await browser.until(f"{stats}.dataset.waiting === '1'", timeout=8)
            assert (await browser.js(f"{stats}.textContent")).startswith("Waiting: 1 · longest")
            await browser.screenshot(SHOTS / "32-supervisor-waiting.png")
            # bob joins the queue from the page (AddQueueMember, kept as a run-time change)
            await browser.js("document.querySelector('section[data-queue=sales] .add-agent').value = 'bob';"
                             "document.querySelector('section[data-queue=sales] .add-tier').value = '2';"
                             "document.querySelector('section[data-queue=sales] [data-action=add]').click()")
            assert await browser.until(f"!!{row % 'bob'}")
            members = json.loads(http(d, "GET", "/api/queues/sales/members", "operator")[2])["members"]
            assert {"agent": "bob", "tier": 2, "dynamic": True} in members, members
            assert rows(d, "SELECT queue, agent, tier, removed, set_by FROM queue_members") == [
                ("sales", "bob", 2, 0, "desk:sue")]
            # and gets tier 3 (QueueMemberPenalty) from the row's tier list
            await browser.js(f"const t = {row % 'bob'}.querySelector('select.tier'); t.value = '3';"
                             "t.dispatchEvent(new Event('change'))")
            assert await browser.until(f"{row % 'bob'}?.querySelector('select.tier').value === '3' && "
                                       f"{row % 'bob'}.textContent.includes('*')")
            members = json.loads(http(d, "GET", "/api/queues/sales/members", "operator")[2])["members"]
            assert {"agent": "bob", "tier": 3, "dynamic": True} in members, members
            await browser.screenshot(SHOTS / "33-supervisor-member-added.png")
            # ... and leaves it again (RemoveQueueMember)
            await browser.js(f"{row % 'bob'}.querySelector('[data-action=remove]').click()")
            assert await browser.until(f"!{row % 'bob'}")
            members = json.loads(http(d, "GET", "/api/queues/sales/members", "operator")[2])["members"]
            assert [m["agent"] for m in members] == ["alice"]
            # unpause from the page: the waiting caller rings alice's phone
            await browser.js(f"{row % 'alice'}.querySelector('[data-action=unpause]').click()")
            await phone.wait(p.Incoming, timeout=8)
            await caller.hangup(leg)
        finally:
            await caller.stop()

        # sue's own session: her queues only, the API's checks, and no agent routes
        assert await sue.sign_in("sue", "sue-desk-pw") == 200
        assert (await sue.req("GET", "/desk/api/session"))[1] == {"agent": "sue", "role": "supervisor"}
        status, data = await sue.req("POST", "/desk/api/supervisor/agents/carol", {"action": "pause", "reason": "x"})
        assert status == 403 and "none of your queues" in data["error"]
        status, data = await sue.req("POST", "/desk/api/supervisor/queues/support/members", {"agent": "bob"})
        assert status == 403 and "not one of yours" in data["error"]
        status, data = await sue.req("POST", "/desk/api/supervisor/agents/alice", {"action": "nap"})
        assert status == 400 and data["error"] == "action: login, logout, pause, unpause"  # the API's words
        status, data = await sue.req("POST", "/desk/api/supervisor/queues/sales/members", {"agent": "zed"})
        assert status == 400 and "zed" in data["error"]
        for bad in ({"tier": 12}, {"tier": 2, "agent": "bob"}):
            status, data = await sue.req("POST", "/desk/api/supervisor/queues/sales/members/alice", bad)
            assert status == 400, (bad, data)
        status, data = await alice.req("POST", "/desk/api/supervisor/queues/sales/members/alice", {"tier": 2})
        assert status == 403
        async with sue.session.delete(base + "/desk/api/supervisor/queues/sales/members/alice") as r:
            assert r.status == 415  # no JSON content type: no change (a cross-site form's request)
        for path in ("/desk/api/me", "/desk/api/phone", "/desk/api/inbox"):
            assert (await sue.req("GET", path))[0] == 403, path
        assert (await sue.req("POST", "/desk/api/state", {"action": "logout"}))[0] == 403
        assert json.loads(http(d, "GET", "/api/status", "operator")[2])["agents"]["carol"] == "logged-out"
        assert [m["agent"] for m in json.loads(http(d, "GET", "/api/queues/sales/members", "operator")[2])["members"]] \
            == ["alice"]
    finally:
        await browser.close()
        for c in (alice, sue, eve):
            await c.close()
        await phone.stop()
