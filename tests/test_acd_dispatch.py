"""The queue runtime's ports (no SIP, a real SQLite file): chats and emails reach the router of
their channel by an explicit dispatch, and agents' login and pause are kept by their own small
adapter (acd/presence_store.py), read back once at start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ringmaster.acd.config import Channel
from ringmaster.acd.runtime import AcdRuntime
from ringmaster.config import Config
from ringmaster.store import Store
from ringmaster.tasks import TaskRouter


def _cfg(tmp_path: Path) -> Config:
    return Config.model_validate({
        "agents": {"ann": {"mobile": "+4511", "auto_login": False}, "bo": {"mobile": "+4512", "auto_login": False}},
        "queues": {"q": {"members": ["ann", "bo"]}},
        "storage": {"path": str(tmp_path / "t.db")}})


async def test_chats_and_emails_reach_the_router_registered_for_their_channel(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    await store.open()
    rt = AcdRuntime(_cfg(tmp_path), store)
    assert rt.channels == {}
    router = TaskRouter(rt, store, None)
    assert rt.channels == {Channel.CHAT: router, Channel.EMAIL: router} and rt.listener is router
    with pytest.raises(ValueError, match="voice"):
        rt.route_channel(Channel.VOICE, router)
    published: list[tuple[str, dict[str, Any]]] = []
    router.tap = lambda topic, payload: published.append((topic, payload))
    await router.start()
    assert rt.agent_command("ann", "login") is None
    await router.on_message("tasks/new", json.dumps({"version": 1, "id": "m1", "channel": "email", "queue": "q"}).encode())
    offers = [p for t, p in published if t == "agents/ann/offers"]
    assert offers and offers[0]["task"] == "m1" and offers[0]["channel"] == "email"
    await router.stop()
    await store.close()


async def test_presence_is_stored_when_it_changes_and_comes_back_at_start(tmp_path: Path):
    cfg = _cfg(tmp_path)
    store = Store(tmp_path / "t.db")
    await store.open()
    rt = AcdRuntime(cfg, store)
    assert rt.agent_command("ann", "login") is None  # before the restore: not written
    assert await rt.presence.restore(1.0) == 0
    rt.presence.write_unknown()
    assert rt.agent_command("ann", "login") is None
    assert rt.agent_command("ann", "pause", "lunch") is None
    assert rt.agent_command("bo", "login") is None
    await store.flush()
    assert await store.agent_presences() == {"ann": (True, "lunch"), "bo": (True, None)}
    await store.close()

    store = Store(tmp_path / "t.db")
    await store.open()
    again = AcdRuntime(cfg, store)
    assert await again.presence.restore(2.0) == 2
    assert again.engine.agents["ann"].paused == "lunch" and again.engine.agents["bo"].logged_in
    await store.close()
