"""A chat or email that no logged-in agent can take says why, on the real daemon over its
embedded mosquitto: on `errors`, in the task's events (MQTT and the stored task log) and in
`ringmaster status`; it becomes routable (and is offered) once a skilled member logs in; and
`ringmaster check` warns about a queue with no members or no member with its skills."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.helpers.mqtt import Client
from tests.test_presence_mqtt import INTEGRATION, agent_client, integration, login, rows


def diagnosis_config(d) -> None:  # type: ignore[no-untyped-def]
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["agents"] = {"ann": {"softphone": {"username": "ann", "password": "ann-secret"},
                                  "mqtt_password": "ann-mqtt-pw", "auto_login": False, "skills": {"en": 5}}}
    d.config["queues"] = {"chat": {"members": ["ann"], "offer_timeout": 5, "moh": "welcome"},
                          "nobody": {"members": [], "moh": "welcome"},
                          "french": {"members": ["ann"], "skills": {"fr": 1}, "moh": "welcome"}}


def test_unroutable_tasks_say_why_and_become_routable_when_a_skilled_member_logs_in(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    diagnosis_config(d)
    d.start()
    chat: Client = integration(d)
    ann = agent_client(d, "ann")
    try:
        # ann is logged out: nobody with the skills is logged in
        chat.publish("tasks/new", {"version": 1, "id": "t-out", "channel": "chat", "queue": "chat"})
        err = chat.wait_for("errors", lambda m: m.get("task") == "t-out")
        assert err["reason"] == "no-member-logged-in" and "'chat'" in err["error"], err
        ev = chat.wait_for("tasks/t-out/events", lambda m: m["event"] == "unroutable")
        assert ev["reason"] == "no-member-logged-in"
        # a skill nobody has, and a queue with nobody in it
        chat.publish("tasks/new", {"version": 1, "id": "t-de", "channel": "email", "queue": "chat",
                                   "skills": {"de": 1}})
        err = chat.wait_for("errors", lambda m: m.get("task") == "t-de")
        assert err["reason"] == "no-skills" and "de>=1" in err["error"], err
        chat.publish("tasks/new", {"version": 1, "id": "t-none", "channel": "chat", "queue": "nobody"})
        assert chat.wait_for("errors", lambda m: m.get("task") == "t-none")["reason"] == "no-members"
        chat.publish("tasks/new", {"version": 1, "id": "t-fr", "channel": "chat", "queue": "french"})
        assert chat.wait_for("errors", lambda m: m.get("task") == "t-fr")["reason"] == "no-skills"

        st = d.status()
        assert st is not None
        assert st["queues"]["chat"]["unroutable"] == {"t-out": "no-member-logged-in", "t-de": "no-skills"}
        assert st["queues"]["nobody"]["unroutable"] == {"t-none": "no-members"}
        assert st["queues"]["french"]["unroutable"] == {"t-fr": "no-skills"}

        # ann logs in: t-out can be routed now (said on its events) and is offered to her;
        # the others still cannot, and nothing new is said about them
        login(ann, "ann")
        chat.wait_for("tasks/t-out/events", lambda m: m["event"] == "routable")
        ann.wait_for("agents/ann/offers", lambda m: m["event"] == "offer" and m["task"] == "t-out")
        st = d.status()
        assert st is not None
        assert st["queues"]["chat"]["unroutable"] == {"t-de": "no-skills"}
        assert len(chat.received("errors", lambda m: m.get("task") == "t-de")) == 1
        assert not chat.received("tasks/t-de/events", lambda m: m["event"] == "routable")

        # the stored task log has the diagnosis too (ringmaster tasks --log exports it)
        d.wait_event("tasks.new", 4)
        stored = []
        for _ in range(50):
            stored = rows(d, "SELECT task_id, event, data FROM task_log WHERE event IN ('UNROUTABLE', 'ROUTABLE')"
                             " ORDER BY id")
            if len(stored) >= 5:
                break
            time.sleep(0.1)
        assert ("t-out", "UNROUTABLE", "no-member-logged-in") in stored and ("t-out", "ROUTABLE", "") in stored
        assert ("t-none", "UNROUTABLE", "no-members") in stored
        assert d.events("acd.unroutable") and d.events("acd.queue_unstaffed")
    finally:
        chat.close()
        ann.close()


def test_check_warns_about_a_queue_no_agent_can_serve(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    diagnosis_config(d)
    d.write_config()
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "check", str(d.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr  # valid: a queue may be staffed later
    assert "warning: queue 'nobody' has no members: its callers and tasks wait forever (no max_wait)" in out.stderr
    assert "warning: queue 'french': no member has its required skills (fr>=1)" in out.stderr
    assert "'chat'" not in out.stderr


def test_a_call_no_logged_in_member_can_take_says_why_on_errors_and_in_status(daemon_factory):
    """A caller in a queue whose only member (a softphone) is not registered, so not logged in:
    the same diagnosis as a task, with the call's id and channel `voice`, while it waits."""
    from tests.helpers.sipp import sipp_args

    d = daemon_factory(workers=1, start=False)
    diagnosis_config(d)
    d.config["agents"]["ann"]["auto_login"] = True  # logged in while registered: it is not
    d.config["flows"]["main"] = [{"queue": "chat"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.start()
    chat = integration(d)
    sipp = subprocess.Popen(sipp_args("uac_hold.xml", d.edge, d.ports.caller(0), service="500", hold_ms=8000,
                                      timeout=30), cwd=d.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # generous: three test processes on two cores slowed it past 10 s once
        err = chat.wait_for("errors", lambda m: m.get("channel") == "voice", timeout=25)
        assert err["reason"] == "no-member-logged-in" and err["queue"] == "chat", err
        st = d.status()
        assert st is not None and st["queues"]["chat"]["unroutable"] == {err["task"]: "no-member-logged-in"}
        assert err["task"] in st["calls"]["ids"]
        ev = chat.wait_for("calls/events", lambda m: m["event"] == "unroutable")
        assert ev["call_id"] == err["task"] and ev["reason"] == "no-member-logged-in"
        logged = d.wait_event("acd.unroutable")
        assert logged[0]["call_id"] == err["task"] and logged[0]["channel"] == "voice"
    finally:
        try:
            sipp.wait(30)
        finally:
            if sipp.poll() is None:
                sipp.kill()
                sipp.wait()
        chat.close()
