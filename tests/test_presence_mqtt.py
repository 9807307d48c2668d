"""Chat and email tasks over a real mosquitto (the daemon's embedded broker, with its generated
auth and ACL): offers, accept, reject and timeout, agents confined to their own topics, and bad
payloads answered on the errors topic without changing anything."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.helpers.mqtt import Client
from tests.test_api import TOKENS, http, metric

INTEGRATION = ("chatsys", "chatsys-secret")


def mqtt_config(d, agents: dict[str, dict[str, Any]], queue: dict[str, Any] | None = None) -> None:  # type: ignore[no-untyped-def]
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["agents"] = {name: {"softphone": {"username": name, "password": f"{name}-secret"},
                                 "mqtt_password": f"{name}-mqtt-pw", **extra} for name, extra in agents.items()}
    d.config["queues"] = {"chat": {"strategy": "linear", "members": list(agents), "offer_timeout": 3, "retry": 0, "moh": "welcome",
                                   **(queue or {})},
                          "billing": {"members": list(agents)[-1:], "moh": "welcome"}}


def agent_client(d, name: str) -> Client:  # type: ignore[no-untyped-def]
    c = Client(d.ports.base + 8, name, f"{name}-mqtt-pw", client_id=f"desk-{name}")
    c.subscribe(f"agents/{name}/offers")
    c.subscribe(f"agents/{name}/state")
    return c


def integration(d) -> Client:  # type: ignore[no-untyped-def]
    c = Client(d.ports.base + 8, *INTEGRATION, client_id="chat-system")
    c.subscribe("#")
    return c


def rows(d, sql: str) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        return [tuple(r) for r in con.execute(sql)]
    finally:
        con.close()


def login(c: Client, name: str) -> None:
    c.publish(f"agents/{name}/commands", {"version": 1, "command": "login"})
    c.wait_for(f"agents/{name}/state", lambda s: s["status"] == "available")


def test_chat_offered_rejected_timed_out_moves_on_and_accept_over_mqtt_assigns_it(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    mqtt_config(d, {"ann": {"auto_login": False}, "ben": {"auto_login": False}, "cy": {"auto_login": False}})
    d.start()
    chat = integration(d)
    ann, ben, cy = (agent_client(d, n) for n in ("ann", "ben", "cy"))
    try:
        for c, n in ((ann, "ann"), (ben, "ben"), (cy, "cy")):
            login(c, n)
        chat.publish("tasks/new", {"version": 1, "id": "chat-1", "channel": "chat", "queue": "chat",
                                   "data": {"customer": "Dana", "text": "hello"}})
        offer = ann.wait_for("agents/ann/offers", lambda m: m["event"] == "offer")
        assert offer["task"] == "chat-1" and offer["data"]["customer"] == "Dana" and offer["timeout"] == 3
        ann.publish("agents/ann/commands", {"version": 1, "command": "reject", "task": "chat-1"})
        ben.wait_for("agents/ben/offers", lambda m: m["event"] == "offer" and m["task"] == "chat-1")
        t0 = time.monotonic()  # ben lets the offer run out: it goes to cy
        cy.wait_for("agents/cy/offers", lambda m: m["event"] == "offer" and m["task"] == "chat-1", timeout=6)
        assert 2.5 <= time.monotonic() - t0 <= 4.5
        ben.wait_for("agents/ben/offers", lambda m: m["event"] == "offer-cancelled")
        cy.publish("agents/cy/commands", {"version": 1, "command": "accept", "task": "chat-1"})
        cy.wait_for("agents/cy/offers", lambda m: m["event"] == "assigned" and m["task"] == "chat-1")
        chat.wait_for("tasks/chat-1/events", lambda m: m["event"] == "assigned" and m["agent"] == "cy")
        state = cy.wait_for("agents/cy/state", lambda s: s["channels"]["chat"]["holding"] == ["chat-1"])
        assert state["status"] == "available" and state["channels"]["voice"]["available"] is False
        cy.publish("agents/cy/commands", {"version": 1, "command": "complete", "task": "chat-1"})
        chat.wait_for("tasks/chat-1/events", lambda m: m["event"] == "completed")
        time.sleep(0.3)
        assert rows(d, "SELECT state, agent, disposition FROM tasks") == [("completed", "cy", "completed")]
        cli = [sys.executable, "-m", "ringmaster.cli", "tasks", "-c", str(d.config_path)]
        listed = subprocess.run(cli + ["--format", "json", "--channel", "chat"], capture_output=True, text=True)
        (task,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert (task["task_id"], task["agent"], task["state"], task["data"]["customer"]) == ("chat-1", "cy", "completed", "Dana")
        assert 3 <= task["wait_s"] <= 6, task
        # ann takes the next chat and hands it to billing, where cy is
        chat.publish("tasks/new", {"version": 1, "id": "chat-2", "channel": "chat", "queue": "chat"})
        ann.wait_for("agents/ann/offers", lambda m: m["event"] == "offer" and m["task"] == "chat-2")
        ann.publish("agents/ann/commands", {"version": 1, "command": "accept", "task": "chat-2"})
        ann.wait_for("agents/ann/offers", lambda m: m["event"] == "assigned" and m["task"] == "chat-2")
        ann.publish("agents/ann/commands", {"version": 1, "command": "transfer", "task": "chat-2", "queue": "billing"})
        chat.wait_for("tasks/chat-2/events", lambda m: m["event"] == "transferred" and m["queue"] == "chat")
        offer = cy.wait_for("agents/cy/offers", lambda m: m["event"] == "offer" and m["task"] == "chat-2")
        assert offer["queue"] == "billing"
        assert ann.wait_for("agents/ann/state", lambda s: s["channels"]["chat"]["holding"] == [])
        exported = [line for line in subprocess.run(cli + ["--log"], capture_output=True, text=True).stdout.splitlines()
                    if "|chat-1|" in line]
        assert [line.split("|")[3:5] for line in exported] == [
            ["NONE", "ENTERQUEUE"], ["ann", "RINGNOANSWER"], ["ben", "RINGNOANSWER"], ["cy", "CONNECT"],
            ["cy", "COMPLETEAGENT"]], exported
        events = [r[0:2] for r in rows(d, "SELECT event, agent FROM task_log WHERE task_id='chat-1' ORDER BY id")]
        assert events == [("ENTERQUEUE", "NONE"), ("RINGNOANSWER", "ann"), ("RINGNOANSWER", "ben"),
                          ("CONNECT", "cy"), ("COMPLETEAGENT", "cy")], events
    finally:
        for c in (chat, ann, ben, cy):
            c.close()


def test_agents_are_confined_to_their_own_topics_and_anonymous_clients_are_refused(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    mqtt_config(d, {"ann": {"auto_login": False}, "ben": {"auto_login": False}})
    d.start()
    chat = integration(d)
    ann, ben = agent_client(d, "ann"), agent_client(d, "ben")
    try:
        login(ben, "ben")
        ann.subscribe("agents/ben/offers")  # not allowed to read: the broker delivers nothing
        ann.subscribe("tasks/#")
        ann.publish("agents/ben/commands", {"version": 1, "command": "pause", "reason": "prank"})
        ann.publish("tasks/new", {"version": 1, "id": "sneaky", "channel": "chat", "queue": "chat"})
        chat.publish("tasks/new", {"version": 1, "id": "real", "channel": "chat", "queue": "chat"})
        ben.wait_for("agents/ben/offers", lambda m: m["task"] == "real")
        time.sleep(0.5)
        assert ann.received("agents/ben/offers") == [] and ann.received("tasks/real/events") == []
        assert ben.received("agents/ben/state")[-1]["status"] == "available"  # the prank pause never arrived
        assert [r[0] for r in rows(d, "SELECT task_id FROM tasks")] == ["real"]
        big = Client(d.ports.base + 8, *INTEGRATION, client_id="oversized")
        big.c.publish("ringmaster/tasks/new", b'{"version": 1, "data": "' + b"x" * 200_000 + b'"}', qos=1)
        time.sleep(0.5)  # the broker cuts that client off; the daemon never sees the message
        big.close()
        assert not chat.received("errors") and d.proc is not None and d.proc.poll() is None
        with pytest.raises(RuntimeError):
            Client(d.ports.base + 8, client_id="anonymous")
        with pytest.raises(RuntimeError):
            Client(d.ports.base + 8, "ann", "wrong-password", client_id="guess")
    finally:
        for c in (chat, ann, ben):
            c.close()


BAD = [
    ("tasks/new", b"{not json", "invalid JSON"),
    ("tasks/new", b'{"version": 1, "channel": "chat", "queue": "nope"}', "unknown queue 'nope'"),
    ("tasks/new", b'{"version": 7, "channel": "chat", "queue": "chat"}', "version 7 is not supported"),
    ("tasks/new", b'{"channel": "chat", "queue": "chat"}', "missing version"),
    ("tasks/new", b'{"version": 1, "channel": "fax", "queue": "chat"}', "channel"),
    ("tasks/new", b'[1, 2]', "must be a JSON object"),
    ("agents/ann/commands", b'{"version": 1, "command": "dance"}', "unknown command 'dance'"),
    ("agents/zed/commands", b'{"version": 1, "command": "login"}', "unknown agent 'zed'"),
    ("agents/ann/commands", b'{"version": 1, "command": "complete", "task": "held-by-ben"}',
     "not held by agent 'ann'"),
    ("agents/ann/commands", b'{"version": 1, "command": "accept", "task": "held-by-ben"}',
     "not offered to agent 'ann'"),
    ("tasks/ghost/commands", b'{"version": 1, "command": "cancel"}', "unknown or closed task 'ghost'"),
    ("tasks/held-by-ben/commands", b'{"version": 1, "command": "transfer", "queue": "nowhere"}', "transfer needs a known queue"),
    ("tasks/new", b'{"version": 1, "id": "held-by-ben", "channel": "chat", "queue": "chat"}', "exists already"),
]


def test_each_bad_payload_gets_its_error_and_changes_nothing(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    mqtt_config(d, {"ann": {"auto_login": False}, "ben": {"auto_login": False}}, queue={"strategy": "linear"})
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": "ops", "token": TOKENS["operator"], "role": "operator"}]}
    d.start()
    chat = integration(d)
    ben = agent_client(d, "ben")
    try:
        login(ben, "ben")
        chat.publish("tasks/new", {"version": 1, "id": "held-by-ben", "channel": "chat", "queue": "chat"})
        ben.wait_for("agents/ben/offers", lambda m: m["event"] == "offer")
        ben.publish("agents/ben/commands", {"version": 1, "command": "accept", "task": "held-by-ben"})
        chat.wait_for("tasks/held-by-ben/events", lambda m: m["event"] == "assigned")
        time.sleep(0.3)
        before = (rows(d, "SELECT * FROM tasks"), rows(d, "SELECT * FROM task_log"),
                  rows(d, "SELECT * FROM agent_presence"))
        for i, (topic, payload, reason) in enumerate(BAD):
            chat.publish(topic, payload, raw=True) if not topic.startswith("agents/ann") else \
                Client(d.ports.base + 8, "ann", "ann-mqtt-pw", client_id=f"ann{i}").publish(topic, payload, raw=True)
            err = chat.wait_for("errors", lambda m, r=reason: r in m["error"])
            assert err["topic"] == "ringmaster/" + topic, err
        time.sleep(0.3)
        after = (rows(d, "SELECT * FROM tasks"), rows(d, "SELECT * FROM task_log"),
                 rows(d, "SELECT * FROM agent_presence"))
        assert after == before
        assert d.proc is not None and d.proc.poll() is None
        assert d.status()["mqtt"]["bad_payloads"] == len(BAD)
        code, _, body = http(d, "GET", "/api/tasks?state=assigned", "operator")
        assert code == 200 and [t["task_id"] for t in json.loads(body)["tasks"]] == ["held-by-ben"]
        assert http(d, "GET", "/api/tasks?channel=fax", "operator")[0] == 400
        code, _, body = http(d, "GET", "/api/tasks/held-by-ben", "operator")
        assert [e["event"] for e in json.loads(body)["events"]] == ["ENTERQUEUE", "CONNECT"]
        metrics = http(d, "GET", "/metrics", "operator")[2].decode()
        assert metric(metrics, "ringmaster_mqtt_connected") == 1
        assert metric(metrics, "ringmaster_mqtt_bad_payloads_total") == len(BAD)
        assert metric(metrics, "ringmaster_agents", state="busy", channel="chat") == 1
        assert metric(metrics, "ringmaster_tasks_open", channel="chat", state="assigned") == 1
    finally:
        chat.close()
        ben.close()
