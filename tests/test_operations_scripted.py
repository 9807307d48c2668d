"""A scripted day in miniature with real calls and tasks: one call answered, one that rings
unanswered and is abandoned, one abandoned while the only agent is paused, one that times out
and overflows to a backup queue where it is answered; a chat completed and an email cancelled.
Then `ringmaster calls/stats/tasks`, the HTTP API and /metrics must all give exactly the
numbers the script made."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from ringmaster import protocol as p
from tests.helpers.audio import write_tone
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.test_acd_calls import agents_up, wait_agent
from tests.test_api import TOKENS, http, metric
from tests.test_presence_mqtt import INTEGRATION, integration


def cli(d, *args: str) -> str:  # type: ignore[no-untyped-def]
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", *args, "-c", str(d.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_scripted_calls_and_tasks_give_the_same_numbers_in_cli_api_and_metrics(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    write_tone(d.dir / "prompts" / "hold.wav", 440.0, 3.0)
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": "ops", "token": TOKENS["operator"], "role": "operator"}]}
    d.config["agents"] = {n: {"softphone": {"username": n, "password": f"{n}-secret"}, "mqtt_password": f"{n}-mqtt-pw"}
                          for n in ("alice", "bob")}
    d.config["queues"] = {
        "sales": {"strategy": "linear", "members": ["alice"], "moh": "hold", "ring_timeout": 2, "retry": 0.5,
                  "max_wait": 5, "overflow": {"queue": "backup"}, "service_level": 20},
        "backup": {"members": ["bob"], "moh": "hold"}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.start()
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    chat = integration(d)
    desk = Client(d.ports.base + 8, "alice", "alice-mqtt-pw", client_id="desk-alice")
    desk.subscribe("agents/alice/offers")
    try:
        # 1. answered by alice, talks 1.5 s
        leg = await caller.call(f"sip:500@{d.edge}")
        await alice.answer_next()
        await asyncio.sleep(1.5)
        await caller.hangup(leg)
        wait_agent(d, "alice", "available")
        # 2. alice lets it ring (no answer), the caller gives up while it rings again
        mark = len(alice.events)
        leg = await caller.call(f"sip:500@{d.edge}")
        first = await alice.wait(p.Incoming, timeout=5, after=mark)
        await alice.wait(p.CallState, lambda m: m.leg == first.leg and m.state == "disconnected", timeout=5)
        await alice.wait(p.Incoming, lambda m: m.leg != first.leg, timeout=5, after=mark)
        await caller.hangup(leg)
        wait_agent(d, "alice", "available")
        # 3. alice on a break: the caller waits 1 s and hangs up
        cli(d, "agent", "alice", "--pause", "lunch")
        leg = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(1.0)
        await caller.hangup(leg)
        # 4. still nobody in sales: after 5 s the caller overflows to backup, where bob answers
        mark = len(bob.events)
        leg = await caller.call(f"sip:500@{d.edge}")
        inc = await bob.wait(p.Incoming, timeout=10, after=mark)
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        await asyncio.sleep(1.0)
        await bob.hangup(inc.leg)
        await caller.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=5)
        # tasks: a chat alice completes, an email cancelled while it waits
        cli(d, "agent", "alice", "--unpause")
        chat.publish("tasks/new", {"version": 1, "id": "t1", "channel": "chat", "queue": "sales"})
        await desk.until("agents/alice/offers", lambda m: m["event"] == "offer" and m["task"] == "t1")
        desk.publish("agents/alice/commands", {"version": 1, "command": "accept", "task": "t1"})
        chat.publish("tasks/new", {"version": 1, "id": "t2", "channel": "email", "queue": "sales"})
        await chat.until("tasks/t2/events", lambda m: m["event"] == "queued")
        chat.publish("tasks/t2/commands", {"version": 1, "command": "cancel"})
        desk.publish("agents/alice/commands", {"version": 1, "command": "complete", "task": "t1"})
        await chat.until("tasks/t1/events", lambda m: m["event"] == "completed")
        await chat.until("tasks/t2/events", lambda m: m["event"] == "cancelled")
        d.wait_calls_ended(4)
        await asyncio.sleep(0.5)  # the last rows are committed

        # --- the CLI
        calls = [json.loads(line) for line in cli(d, "calls", "--format", "json").splitlines()]
        assert [(c["queue"], c["agent"], c["disposition"]) for c in calls] == [
            ("sales", "alice", "completed"), ("sales", None, "abandoned"), ("sales", None, "abandoned"),
            ("backup", "bob", "completed")], calls
        stats = json.loads(cli(d, "stats", "--format", "json", "--since", "1h"))
        q = {s["queue"]: s for s in stats["queues"]}
        assert {k: q["sales"][k] for k in ("offered", "answered", "abandoned", "abandoned_short", "timeout",
                                            "answered_in_sl", "service_level_pct")} == {
            "offered": 4, "answered": 1, "abandoned": 2, "abandoned_short": 2, "timeout": 1,
            "answered_in_sl": 1, "service_level_pct": 50.0}, q["sales"]
        assert (q["backup"]["offered"], q["backup"]["answered"]) == (1, 1)
        a = {s["agent"]: s for s in stats["agents"]}
        assert (a["alice"]["answered"], a["alice"]["no_answer"], a["bob"]["answered"]) == (1, 1, 1)
        assert "lunch" in a["alice"]["pause_seconds"]
        chats = json.loads(cli(d, "stats", "--format", "json", "--since", "1h", "--channel", "chat"))
        assert [(s["queue"], s["offered"], s["answered"]) for s in chats["queues"]] == [("sales", 1, 1)], chats
        emails = json.loads(cli(d, "stats", "--format", "json", "--since", "1h", "--channel", "email"))
        assert [(s["queue"], s["offered"], s["answered"], s["abandoned"]) for s in emails["queues"]] == [
            ("sales", 1, 0, 1)], emails
        tasks = [json.loads(line) for line in cli(d, "tasks", "--format", "json").splitlines()]
        assert [(t["task_id"], t["channel"], t["state"], t["agent"]) for t in tasks] == [
            ("t1", "chat", "completed", "alice"), ("t2", "email", "cancelled", None)]
        # --- the API
        api_calls = json.loads(http(d, "GET", "/api/calls?disposition=abandoned", "operator")[2])["calls"]
        assert len(api_calls) == 2
        today = json.loads(http(d, "GET", "/api/queues", "operator")[2])["queues"]
        assert {k: today["sales"]["today"][k] for k in ("offered", "answered", "abandoned", "timeout")} == {
            "offered": 4, "answered": 1, "abandoned": 2, "timeout": 1}
        api_tasks = json.loads(http(d, "GET", "/api/tasks", "operator")[2])["tasks"]
        assert [(t["task_id"], t["state"]) for t in api_tasks] == [("t1", "completed"), ("t2", "cancelled")]
        # --- /metrics
        metrics = http(d, "GET", "/metrics", "operator")[2].decode()
        for name, labels, value in (("ringmaster_calls_total", {"disposition": "completed"}, 2),
                                    ("ringmaster_calls_total", {"disposition": "abandoned"}, 2),
                                    ("ringmaster_calls_in_progress", {}, 0),
                                    ("ringmaster_queue_waiting", {"queue": "sales", "channel": "voice"}, 0),
                                    ("ringmaster_tasks_open", {"channel": "chat", "state": "assigned"}, 0),
                                    ("ringmaster_tasks_open", {"channel": "email", "state": "waiting"}, 0),
                                    ("ringmaster_mqtt_connected", {}, 1)):
            assert metric(metrics, name, **labels) == value, (name, labels)
    finally:
        await caller.stop()
        for ph in (alice, bob):
            await ph.stop()
        chat.close()
        desk.close()
