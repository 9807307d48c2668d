"""A randomized interleaving (fixed seeds) with the real daemon: calls from test phones, chats
and emails over MQTT, agents answering, rejecting, accepting, completing, logging in and out and
pausing, callers hanging up. Afterwards the stored event log (queue_log and task_log) is
replayed: no agent ever held more than its capacity per channel, an exclusive agent never held
two channels at once, and no call or task was connected twice."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from typing import Any

import pytest

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.test_acd_calls import agents_up
from tests.test_presence_mqtt import INTEGRATION, integration

PROFILES = {"ann": {"policy": "exclusive", "capacity": {"chat": 2, "email": 1}},
            "ben": {"policy": "concurrent", "capacity": {"chat": 2, "email": 1}, "wrapup": {"chat": 0.5}},
            "cy": {"policy": "exclusive", "capacity": {"chat": 1, "email": 1}, "wrapup": {"voice": 0.5}}}
CAPACITY = {a: {"voice": 1, **prof["capacity"]} for a, prof in PROFILES.items()}  # type: ignore[dict-item]


def config(d) -> None:  # type: ignore[no-untyped-def]
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["agents"] = {n: {"softphone": {"username": n, "password": f"{n}-secret"}, "presence": prof}
                          for n, prof in PROFILES.items()}
    d.config["queues"] = {"mix": {"strategy": "random", "members": list(PROFILES), "moh": "welcome",
                                  "ring_timeout": 3, "offer_timeout": 2, "retry": 0.3}}
    d.config["flows"]["main"] = [{"queue": "mix"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})


def replay(d) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Check the stored log; returns (calls connected, tasks connected)."""
    con = sqlite3.connect(d.db_path)
    try:
        rows: list[tuple[float, str, str, str, str]] = [
            (r[0], r[1], r[2], r[3], "voice") for r in con.execute("SELECT at, call_id, agent, event FROM queue_log")]
        rows += [tuple(r) for r in con.execute("SELECT at, task_id, agent, event, channel FROM task_log")]  # type: ignore[misc]
    finally:
        con.close()
    ends = ("COMPLETEAGENT", "COMPLETECALLER", "TRANSFER")
    # at equal times an end goes before a start: the engine frees an agent before offering again
    rows.sort(key=lambda r: (r[0], 0 if r[3] in ends else 1))
    holding: dict[str, dict[str, str]] = {a: {} for a in PROFILES}  # agent -> task -> channel
    connected: dict[str, int] = {}
    for at, task, agent, event, channel in rows:
        if event == "CONNECT":
            assert connected.get(task, 0) == 0, f"{task} connected twice (at {at})"
            connected[task] = 1
            held = holding[agent]
            held[task] = channel
            for ch in ("voice", "chat", "email"):
                n = sum(1 for c in held.values() if c == ch)
                assert n <= CAPACITY[agent][ch], f"{agent} holds {n} {ch} at {at}: {held}"
            if PROFILES[agent]["policy"] == "exclusive":
                assert len(set(held.values())) == 1, f"exclusive {agent} holds {held} at {at}"
        elif event in ends and agent in holding:
            holding[agent].pop(task, None)
            if event == "TRANSFER":
                connected[task] = 0
    tasks = sum(1 for t in connected if t.startswith(("chat", "email")))
    return len(connected) - tasks, tasks


@pytest.mark.parametrize("seed", [7, 8])
async def test_random_calls_chats_emails_logins_pauses_and_hangups_never_overbook(daemon_factory, seed: int):
    rng = random.Random(seed)
    d = daemon_factory(workers=2, start=False)
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare
    config(d)
    d.start()
    chat = integration(d)
    phones = dict(zip(PROFILES, await agents_up(d, tuple(PROFILES)), strict=True))
    callers = [await Phone(f"4520000{i}", d.ports.caller(8 + i), d.ports.base + 60 + 10 * i).start() for i in range(2)]
    ids = itertools.count()
    seen = {a: 0 for a in PROFILES}           # phone events looked at so far
    ringing: dict[str, list[str]] = {a: [] for a in PROFILES}
    talking: dict[str, list[str]] = {a: [] for a in PROFILES}
    caller_legs: list[tuple[Phone, str]] = []
    offers: dict[str, set[str]] = {a: set() for a in PROFILES}
    held: dict[str, set[str]] = {a: set() for a in PROFILES}
    n_offer_msgs = 0

    def cmd(agent: str, command: str, **extra: Any) -> None:
        chat.publish(f"agents/{agent}/commands", {"version": 1, "command": command, **extra})

    try:
        chat.subscribe("agents/+/offers")
        for step in range(100):
            for a, ph in phones.items():  # what the phones and desks saw since the last step
                for m in ph.events[seen[a]:]:
                    if isinstance(m, p.Incoming):
                        ringing[a].append(m.leg)
                    elif isinstance(m, p.CallState) and m.state == "disconnected":
                        for lst in (ringing[a], talking[a]):
                            if m.leg in lst:
                                lst.remove(m.leg)
                seen[a] = len(ph.events)
            msgs = list(chat.messages)
            for m in msgs[n_offer_msgs:]:  # the desks' view: agents/NAME/offers
                parts = m.topic.split("/")
                if len(parts) != 4 or parts[3] != "offers" or not isinstance(m.payload, dict):
                    continue
                agent, task, event = parts[2], m.payload["task"], m.payload["event"]
                offers[agent].discard(task)
                if event == "offer":
                    offers[agent].add(task)
                elif event == "assigned":
                    held[agent].add(task)
            n_offer_msgs = len(msgs)
            for a in PROFILES:  # phones ringing are mostly answered soon, sometimes refused
                if ringing[a] and rng.random() < 0.5:
                    leg = ringing[a].pop(0)
                    if rng.random() < 0.85:
                        phones[a].send(p.Answer(leg=leg))
                        talking[a].append(leg)
                    else:
                        phones[a].send(p.Hangup(leg=leg, code=486))
                if offers[a] and rng.random() < 0.5:  # and desks take most offers
                    task = min(offers[a])
                    offers[a].discard(task)
                    cmd(a, "accept" if rng.random() < 0.85 else "reject", task=task)
                if held[a] and rng.random() < 0.2:
                    task = min(held[a])
                    held[a].discard(task)
                    cmd(a, "complete", task=task)
            roll = rng.random()
            agent = rng.choice(list(PROFILES))
            if roll < 0.2 and len(caller_legs) < 4:  # 2 workers take 4 callers
                caller = callers[len(caller_legs) % 2]
                leg = f"{caller.spec.name}-r{next(ids)}"
                caller.send(p.Dial(leg=leg, uri=f"sip:500@{d.edge}"))
                caller_legs.append((caller, leg))
            elif roll < 0.30:
                kind = rng.choice(["chat", "email"])
                chat.publish("tasks/new", {"version": 1, "id": f"{kind}{step}", "channel": kind, "queue": "mix"})
            elif roll < 0.45 and caller_legs:
                caller, leg = caller_legs.pop(rng.randrange(len(caller_legs)))
                caller.send(p.Hangup(leg=leg))
            elif roll < 0.62 and talking[agent]:
                phones[agent].send(p.Hangup(leg=talking[agent].pop(0)))
            elif roll < 0.75 and offers[agent]:
                task = rng.choice(sorted(offers[agent]))
                cmd(agent, "accept" if rng.random() < 0.8 else "reject", task=task)
            elif roll < 0.85 and held[agent]:
                task = rng.choice(sorted(held[agent]))
                held[agent].discard(task)
                cmd(agent, "complete", task=task)
            elif roll < 0.93:
                cmd(agent, rng.choice(["pause", "unpause", "unpause"]), reason="break")
            else:
                cmd(agent, rng.choice(["logout", "login", "login"]))
            await asyncio.sleep(rng.uniform(0.05, 0.4))
        for caller, leg in caller_legs:
            caller.send(p.Hangup(leg=leg))
        await asyncio.sleep(1.0)
    finally:
        for ph in (*callers, *phones.values()):
            await ph.stop()
        chat.close()
    assert d.stop() == 0
    calls, tasks = replay(d)
    assert calls >= 2 and tasks >= 2, (calls, tasks)  # the run really mixed channels
