"""MQTT for tests: a real mosquitto on a loopback port, and clients that record what they get."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho


class Broker:
    """A plain mosquitto (no auth) the test can stop and start again, for the non-embedded mode."""

    def __init__(self, port: int, folder: Path):
        self.port = port
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder}/\nautosave_interval 1\nuser root\n")

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.folder / "broker.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@dataclass
class Received:
    topic: str
    payload: Any
    retain: bool
    at: float


@dataclass
class Client:
    """A paho client in its own thread; every message is kept, JSON decoded when it is JSON."""

    port: int
    username: str | None = None
    password: str | None = None
    prefix: str = "ringmaster/"
    client_id: str = ""
    clean_session: bool = True
    messages: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=self.clean_session)
        self.c.reconnect_delay_set(0.2, 1)
        self._topics: list[str] = []
        if self.username:
            self.c.username_pw_set(self.username, self.password)
        self.c.on_message = self._on_message
        self._connected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        self.c.loop_start()
        if not self._connected.wait(5):
            raise RuntimeError(f"MQTT client {self.username} could not connect: {self.refused}")

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            self.refused.append(str(rc))
            return
        for topic in self._topics:  # again after a broker restart
            c.subscribe(topic, qos=1)
        self._connected.set()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        try:
            payload = json.loads(msg.payload)
        except (ValueError, RecursionError):  # a hostile payload a test sent (test_hostile_input)
            payload = msg.payload
        with self._lock:
            self.messages.append(Received(msg.topic, payload, bool(msg.retain), time.monotonic()))

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self._topics.append(self.prefix + topic)
        self.c.subscribe(self.prefix + topic, qos=1)
        done.wait(5)

    def publish(self, topic: str, payload: Any, raw: bool = False) -> None:
        body = payload if raw else json.dumps(payload)
        self.c.publish(self.prefix + topic, body, qos=1).wait_for_publish(5)

    def received(self, topic: str | None = None, pred: Callable[[Any], bool] | None = None) -> list[Any]:
        with self._lock:
            msgs = list(self.messages)
        return [m.payload for m in msgs
                if (topic is None or m.topic == self.prefix + topic) and (pred is None or pred(m.payload))]

    def wait_for(self, topic: str, pred: Callable[[Any], bool] | None = None, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(topic, pred)
            if got:
                return got[-1]
            time.sleep(0.01)
        raise AssertionError(f"no message on {topic} matching in {timeout}s; got: "
                             f"{[(m.topic, m.payload) for m in self.messages][-15:]}")

    async def until(self, topic: str, pred: Callable[[Any], bool] | None = None, timeout: float = 5.0) -> Any:
        """wait_for without blocking the event loop (the test phones run on it)."""
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(topic, pred)
            if got:
                return got[-1]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no message on {topic} matching in {timeout}s; got: "
                             f"{[(m.topic, m.payload) for m in self.messages][-15:]}")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
