"""One presence across channels with real calls: pjsua2 agent phones registered at the edge,
callers in the queue, chats over the embedded mosquitto. An exclusive agent in a chat is not
rung; a call waits for the chat and its wrap-up; an agent on a call gets no chat unless
concurrent; chat capacity holds the next chat back."""

from __future__ import annotations

import asyncio
import time

from ringmaster import protocol as p
from tests.helpers.audio import write_tone
from tests.helpers.browser import Browser
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.test_acd_calls import agents_up, queue_log, wait_agent
from tests.test_api import TOKENS
from tests.test_presence_mqtt import INTEGRATION, integration, rows


def config(d, agents: dict[str, dict]) -> None:  # type: ignore[no-untyped-def,type-arg]
    write_tone(d.dir / "prompts" / "hold.wav", 440.0, 3.0)
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["agents"] = {n: {"softphone": {"username": n, "password": f"{n}-secret"}, "mqtt_password": f"{n}-mqtt-pw",
                              **extra} for n, extra in agents.items()}
    d.config["queues"] = {"sales": {"strategy": "linear", "members": list(agents), "moh": "hold", "retry": 0.5}}
    d.config["flows"]["main"] = [{"set": {"account": "A-77"}}, {"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})


def desk(d, name: str) -> Client:  # type: ignore[no-untyped-def]
    c = Client(d.ports.base + 8, name, f"{name}-mqtt-pw", client_id=f"desk-{name}")
    c.subscribe(f"agents/{name}/offers")
    return c


def new_chat(chat: Client, task_id: str) -> None:
    chat.publish("tasks/new", {"version": 1, "id": task_id, "channel": "chat", "queue": "sales"})


async def test_exclusive_agent_in_a_chat_is_not_rung_and_the_call_comes_after_chat_and_wrapup(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    config(d, {"alice": {"presence": {"policy": "exclusive", "wrapup": {"chat": 2}}}, "bob": {}})
    d.start()
    chat = integration(d)
    alice_desk, bob_desk = desk(d, "alice"), desk(d, "bob")
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        chat.publish("agents/bob/commands", {"version": 1, "command": "pause", "reason": "training"})
        await chat.until("agents/bob/state", lambda s: s["status"] == "paused")
        new_chat(chat, "c1")
        await alice_desk.until("agents/alice/offers", lambda m: m["event"] == "offer" and m["task"] == "c1")
        alice_desk.publish("agents/alice/commands", {"version": 1, "command": "accept", "task": "c1"})
        await chat.until("tasks/c1/events", lambda m: m["event"] == "assigned")
        leg = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(2.0)  # the caller waits: alice holds a chat, bob is paused
        assert not [m for m in alice.events if isinstance(m, p.Incoming)]
        assert not [m for m in bob.events if isinstance(m, p.Incoming)]
        wait_agent(d, "alice", "busy")
        done = time.monotonic()
        alice_desk.publish("agents/alice/commands", {"version": 1, "command": "complete", "task": "c1"})
        inc = await alice.wait(p.Incoming, timeout=8)
        assert time.monotonic() - done >= 1.8, "rung during the chat's wrap-up"
        assert dict(inc.headers).get("X-Ringmaster-Var-account") == "A-77"
        alice.send(p.Answer(leg=inc.leg))
        await alice.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        answered = await chat.until("calls/events", lambda m: m["event"] == "answered")
        assert answered["agent"] == "alice" and answered["variables"]["account"] == "A-77"
        # on a call, exclusive alice gets no chat; bob (back from training) gets it
        new_chat(chat, "c2")
        await asyncio.sleep(1.0)
        assert not alice_desk.received("agents/alice/offers", lambda m: m["task"] == "c2")
        chat.publish("agents/bob/commands", {"version": 1, "command": "unpause"})
        await bob_desk.until("agents/bob/offers", lambda m: m["event"] == "offer" and m["task"] == "c2")
        await caller.hangup(leg)
        await chat.until("calls/events", lambda m: m["event"] == "ended")
    finally:
        await caller.stop()
        for ph in (alice, bob):
            await ph.stop()
        for c in (chat, alice_desk, bob_desk):
            c.close()
    call_id = d.wait_calls_ended(1)[0]["call_id"]
    assert [(e, a) for e, a, _ in queue_log(d, call_id)] == [("ENTERQUEUE", "NONE"), ("CONNECT", "alice"),
                                                             ("COMPLETECALLER", "alice")]


async def test_agent_on_a_call_gets_no_chat_concurrent_agent_does_and_capacity_three_holds_the_fourth(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    config(d, {"alice": {}, "bob": {"presence": {"policy": "concurrent", "capacity": {"chat": 3}}}})
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": "wall", "token": TOKENS["operator"], "role": "operator"}]}
    d.start()
    chat = integration(d)
    alice_desk, bob_desk = desk(d, "alice"), desk(d, "bob")
    alice, bob = await agents_up(d, ("alice", "bob"))
    callers = [await Phone(f"45112233{i}", d.ports.caller(1 + 5 * i), d.ports.base + 70 + 20 * i).start()
               for i in range(2)]
    try:
        legs = []
        for caller, agent in zip(callers, (alice, bob), strict=True):
            legs.append(await caller.call(f"sip:500@{d.edge}"))
            await agent.answer_next()
        wait_agent(d, "alice", "on-call")
        wait_agent(d, "bob", "on-call")
        for i in range(4):
            new_chat(chat, f"k{i}")
            if i < 3:
                await bob_desk.until("agents/bob/offers", lambda m, t=f"k{i}": m["event"] == "offer" and m["task"] == t)
                bob_desk.publish("agents/bob/commands", {"version": 1, "command": "accept", "task": f"k{i}"})
                await chat.until(f"tasks/k{i}/events", lambda m: m["event"] == "assigned")
        await asyncio.sleep(1.0)
        assert not bob_desk.received("agents/bob/offers", lambda m: m["task"] == "k3")  # bob is at 3 chats
        assert not alice_desk.received("agents/alice/offers")  # alice is on a call
        stats = await chat.until("queues/sales/stats", lambda s: s["waiting"]["chat"] == 1)
        assert stats["agents"]["busy"] == {"voice": 2, "chat": 1, "email": 0}
        # the wallboard shows the same per channel
        browser = await Browser(d.ports.base + 7).open(
            f"http://127.0.0.1:{d.ports.base + 6}/wallboard?token={TOKENS['operator']}")
        try:
            row = "document.querySelector('[data-queue=sales] [data-channel=chat]')?.textContent.replace(/\\s+/g, ' ')"
            text = ""
            for _ in range(50):
                text = await browser.js(row) or ""
                if "1 waiting" in text:
                    break
                await asyncio.sleep(0.1)
            assert "1 waiting" in text and "1 busy" in text and "0 available" in text, text
        finally:
            await browser.close()
        bob_desk.publish("agents/bob/commands", {"version": 1, "command": "complete", "task": "k1"})
        await bob_desk.until("agents/bob/offers", lambda m: m["event"] == "offer" and m["task"] == "k3")
        for caller, leg in zip(callers, legs, strict=True):
            await caller.hangup(leg)
    finally:
        for ph in (*callers, alice, bob):
            await ph.stop()
        for c in (chat, alice_desk, bob_desk):
            c.close()
    held = rows(d, "SELECT task_id, state, agent FROM tasks ORDER BY task_id")
    assert held == [("k0", "assigned", "bob"), ("k1", "completed", "bob"), ("k2", "assigned", "bob"),
                    ("k3", "queued", None)], held
