"""Benchmark of the task router: the routing core alone, then tasks end to end over MQTT.

Core: bench/presence_core.py (1000 agents, 10,000 queued tasks, 50 queues, no IO).
End to end: the real daemon with its embedded mosquitto, 200 agents in 10 queues (chat capacity
5); a client publishes tasks/new at --rate per second and, acting as the agents' desks, accepts
every offer and completes the task --hold seconds later. Latency = offer received - tasks/new
published, both on this process's monotonic clock. The desks share one MQTT connection (an
integration client may read every agent's offers); the path per message is the same as an
agent's own desk.
"""

from __future__ import annotations

import argparse
import heapq
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from bench.engine import figure, percentile
from bench.presence_core import run_core
from tests.helpers.daemon import Daemon, Ports, base_config

MQTT_PORT = 37008


def end_to_end(rate: float, seconds: float, hold: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ringmaster-bench-presence-"))
    ports = Ports(37000)
    cfg = base_config(tmp, ports, workers=1)
    cfg["logging"]["level"] = "warning"
    names = [f"a{i:03d}" for i in range(200)]
    cfg["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{MQTT_PORT}",
                   "clients": [{"username": "bench", "password": "bench-secret"}]}
    cfg["profiles"] = {"default": {"policy": "concurrent", "capacity": {"chat": 5, "email": 2}}}
    cfg["agents"] = {n: {"mobile": f"+4590{i:06d}", "mqtt_password": f"{n}-password"} for i, n in enumerate(names)}
    cfg["queues"] = {f"q{i}": {"members": names[i * 20:(i + 1) * 20], "moh": "welcome", "offer_timeout": 30}
                     for i in range(10)}
    d = Daemon(tmp, ports, cfg)
    d.start()
    sent: dict[str, float] = {}
    latency: list[float] = []
    lock = threading.Lock()
    done = threading.Event()
    total = int(rate * seconds)
    completions: list[tuple[float, str, str]] = []  # (when, agent, task), one thread sends them
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-desks")
    c.username_pw_set("bench", "bench-secret")

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        body = json.loads(msg.payload)
        if body.get("event") != "offer":
            return
        agent = msg.topic.split("/")[2]
        task = body["task"]
        with lock:
            t0 = sent.pop(task, None)
            if t0 is not None:
                latency.append(now - t0)
                if len(latency) == total:
                    done.set()
        client.publish(f"ringmaster/agents/{agent}/commands",
                       json.dumps({"version": 1, "command": "accept", "task": task}), qos=1)
        with lock:
            heapq.heappush(completions, (now + hold, agent, task))

    def completer() -> None:
        while not stop.is_set():
            with lock:
                due = [heapq.heappop(completions) for _ in range(len(completions))
                       if completions and completions[0][0] <= time.monotonic()]
            for _, agent, task in due:
                c.publish(f"ringmaster/agents/{agent}/commands",
                          json.dumps({"version": 1, "command": "complete", "task": task}), qos=1)
            time.sleep(0.01)

    stop = threading.Event()
    threading.Thread(target=completer, daemon=True).start()
    ready = threading.Event()
    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.connect("127.0.0.1", MQTT_PORT)
    # like any latency-minded MQTT client: no Nagle (see docs/engine-findings.md)
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    c.loop_start()
    c.subscribe("ringmaster/agents/+/offers", qos=1)
    ready.wait(5)
    try:
        start = time.monotonic()
        for i in range(total):
            at = start + i / rate
            pause = at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            task = f"b{i}"
            with lock:
                sent[task] = time.monotonic()
            c.publish("ringmaster/tasks/new", json.dumps(
                {"version": 1, "id": task, "channel": "chat", "queue": f"q{i % 10}"}), qos=1)
        sending = time.monotonic() - start
        done.wait(30)
    finally:
        stop.set()
        c.loop_stop()
        c.disconnect()
        d.stop()
    lat = sorted(latency)
    return {"sent": total, "offered": len(lat), "rate": total / sending,
            "p50": percentile(lat, 50) * 1000, "p99": percentile(lat, 99) * 1000, "max": lat[-1] * 1000 if lat else 0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--hold", type=float, default=2.0, help="seconds each agent keeps a chat")
    args = ap.parse_args()
    core = run_core()
    figure("core agents", core.agents, "agents")
    figure("core queued tasks", core.tasks, "tasks")
    figure("core assignment rate", round(core.per_second), "assignments/s")
    e2e = end_to_end(args.rate, args.seconds, args.hold)
    figure("e2e tasks published", e2e["sent"], "tasks")
    figure("e2e publish rate", round(e2e["rate"], 1), "tasks/s")
    figure("e2e offers received", e2e["offered"], "tasks")
    figure("e2e task to offer p50", round(e2e["p50"], 1), "ms")
    figure("e2e task to offer p99", round(e2e["p99"], 1), "ms")
    figure("e2e task to offer max", round(e2e["max"], 1), "ms")
    return 0 if e2e["offered"] == e2e["sent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
