"""Task ids stay unique beyond the ones the router keeps in memory: older ids are checked
against the store (real SQLite, the router and engine as the daemon runs them, no MQTT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ringmaster.tasks as tasks_mod
from ringmaster.acd.runtime import AcdRuntime
from ringmaster.config import Config
from ringmaster.store import Store
from ringmaster.tasks import TaskRouter


async def test_a_task_id_sent_again_is_refused_even_after_memory_forgot_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tasks_mod, "KNOWN_IDS", 2)
    cfg = Config.model_validate({"agents": {"ann": {"mobile": "+4511"}}, "queues": {"q": {"members": ["ann"]}},
                                 "storage": {"path": str(tmp_path / "t.db")}})
    store = Store(tmp_path / "t.db")
    await store.open()
    router = TaskRouter(AcdRuntime(cfg, store), store, None)
    await router.start()

    async def send(task_id: str) -> None:
        body = {"version": 1, "id": task_id, "channel": "email", "queue": "q"}
        await router.on_message("tasks/new", json.dumps(body).encode())

    for i in range(4):
        await send(f"m{i}")
    await store.flush()
    assert router.errors == 0 and "m0" not in router._known  # memory holds only the last 2
    await send("m0")  # an old id again: the store knows it
    await send("m3")  # a recent one: memory knows it
    assert router.errors == 2
    await router.stop()
    await store.close()
    # and after a restart with more tasks than memory holds
    store = Store(tmp_path / "t.db")
    await store.open()
    router = TaskRouter(AcdRuntime(cfg, store), store, None)
    await router.start()
    await send("m1")
    await send("m9")
    assert router.errors == 1 and "m9" in router.engine.tasks
    await router.stop()
    await store.close()
