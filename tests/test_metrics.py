"""/metrics through prometheus_client, read back with prometheus_client's own parser: live values
from a real queue engine, label values with quotes, backslashes and newlines survive the trip,
the call log's totals are kept by the store as calls end (once each, across a restart), and the
OpenAPI document lists exactly the routes the app serves."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ringmaster import live
from ringmaster.acd.config import AgentConfig, QueueConfig
from ringmaster.acd.engine import QueueEngine
from ringmaster.api import ROUTES, Api, openapi_document
from ringmaster.config import HttpConfig
from ringmaster.metrics import Metrics
from ringmaster.reports import CallFilter, TaskFilter, VoicemailFilter
from ringmaster.store import MIGRATIONS, Store

ODD = 'sa"les\\east\nfloor'  # a queue name a YAML key can hold: quote, backslash, newline


def _state(engine: QueueEngine, now: float, ended: dict[str, int]) -> live.LiveState:
    return live.LiveState(
        at=now, agents=live.agents_of(engine.agents.values(), now),
        queues={n: live.LiveQueue.of(q) for n, q in engine.queues.items()},
        tasks=tuple(live.LiveTask.of(t) for t in engine.tasks.values()), calls_in_progress=3,
        workers=(live.LiveWorker("w1", True, 2), live.LiveWorker("w2", False, 0)), worker_restarts=1,
        registrations=(live.LiveRegistration("pbx", True),),
        edge=live.LiveEdge(True, {"malformed": 4, "auth_bans": 2}, 1, 0),
        store=live.LiveStore(True, 0, 0, 0.002, ended), mqtt=None,
        voicemail=live.LiveVoicemail({ODD: (3, 0), "alice": (0, 2)}, 1))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_are_the_live_state_with_labels_escaped():
    agents = {n: AgentConfig(mobile=f"+45{i}") for i, n in enumerate(["alice", 'bo"b'])}
    engine = QueueEngine({ODD: QueueConfig.model_validate({"members": ["alice", 'bo"b']})}, agents,
                         rng=random.Random(1))
    engine.agent_login("alice", now=1.0)
    engine.agent_pause("alice", "lunch", now=2.0)
    engine.enqueue("c1", ODD, now=10.0)
    engine.enqueue("c2", ODD, now=15.0)
    body, ctype = Metrics(lambda: _state(engine, 20.0, {"completed": 7, "abandoned": 2})).render()
    assert ctype.startswith("text/plain; version=0.0.4")
    m = _samples(body.decode())
    q = (("channel", "voice"), ("queue", ODD))
    assert m[("ringmaster_queue_waiting", q)] == 2
    assert m[("ringmaster_queue_longest_wait_seconds", q)] == 10.0
    assert m[("ringmaster_agents", (("channel", "voice"), ("state", "paused")))] == 1
    assert m[("ringmaster_agents", (("channel", "voice"), ("state", "logged-out")))] == 1
    assert m[("ringmaster_calls_total", (("disposition", "completed"),))] == 7
    assert m[("ringmaster_calls_total", (("disposition", "failed"),))] == 0
    assert m[("ringmaster_calls_in_progress", ())] == 3
    assert m[("ringmaster_edge_refused_total", (("reason", "malformed"),))] == 4
    assert m[("ringmaster_edge_auth_bans_total", ())] == 2
    assert m[("ringmaster_worker_busy_legs", (("worker", "w1"),))] == 2
    assert m[("ringmaster_workers", (("alive", "false"),))] == 1
    assert ("ringmaster_mqtt_connected", ()) not in m  # no MQTT: the family is there, without a value
    assert m[("ringmaster_voicemail_messages", (("box", ODD), ("state", "new")))] == 3
    assert m[("ringmaster_voicemail_messages", (("box", "alice"), ("state", "heard")))] == 2
    assert m[("ringmaster_mwi_subscriptions", ())] == 1
    assert any(name.startswith("process_") for name, _ in m)  # the controller process' own
    # a scraper that asks for OpenMetrics gets it
    body, ctype = Metrics(lambda: _state(engine, 20.0, {})).render("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text") and body.rstrip().endswith(b"# EOF")


def test_the_call_logs_totals_are_counted_once_per_call_and_survive_a_restart(tmp_path: Path):
    db = tmp_path / "calls.db"
    old = sqlite3.connect(db)  # a store of the schema before call_totals, with a call log already
    for sql in MIGRATIONS[:6]:
        old.executescript(sql)
    old.executemany("INSERT INTO calls (call_id, sip_call_id, caller, called, request_uri, worker, arrived_at,"
                    " disposition) VALUES (?, 's', '1', '500', 'sip:500@x', 'w1', 1.0, ?)",
                    [("old1", "completed"), ("old2", "rejected"), ("old3", "in_progress")])
    old.execute("PRAGMA user_version=6")
    old.commit()
    old.close()

    def table() -> dict[str, int]:
        con = sqlite3.connect(db)
        try:
            return dict(con.execute("SELECT disposition, calls FROM call_totals").fetchall())
        finally:
            con.close()

    def counted() -> dict[str, int]:
        con = sqlite3.connect(db)
        try:
            return dict(con.execute("SELECT disposition, COUNT(*) FROM calls WHERE disposition != 'in_progress'"
                                    " GROUP BY disposition").fetchall())
        finally:
            con.close()

    async def run() -> None:
        store = Store(db)
        await store.open()
        assert store.ended_calls == {"completed": 1, "rejected": 1}  # counted once, at the upgrade
        assert await store.close_orphans(2.0) == 1  # old3, left open by a "crash"
        for i, disp in enumerate(["completed", "completed", "abandoned"]):
            store.call_arrived(f"c{i}", f"s{i}", "1", "500", "sip:500@x", "w1", 100.0 + i)
            store.call_ended(f"c{i}", 200.0 + i, disp, "caller_hangup", 200, "caller", [], {})
        store.call_ended("c0", 300.0, "failed", "again", 0, "ringmaster", [], {})  # a second end: not a call
        store.call_arrived("c9", "s9", "1", "500", "sip:500@x", "w1", 400.0)  # still in progress
        want = {"completed": 3, "abandoned": 1, "rejected": 1, "failed": 1}
        assert store.ended_calls == want
        await store.close()
        assert table() == counted() == want
        again = Store(db)
        await again.open()
        assert again.ended_calls == want
        assert await again.close_orphans(500.0) == 1  # c9, left open by a "crash"
        await again.close()
        assert again.ended_calls == table() == counted() == {**want, "failed": 2}

    asyncio.run(run())


def test_the_openapi_document_lists_exactly_the_served_routes_and_filters():
    api = Api(None, HttpConfig())  # type: ignore[arg-type]  # the routes only: nothing is served
    served = {(r.method, r.resource.canonical) for r in api.app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    doc = openapi_document()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented == {(r.method, r.path) for r in ROUTES}
    params = {p["name"] for p in doc["paths"]["/api/calls"]["get"]["parameters"]}
    assert params == {p.name for p in CallFilter.PARAMS}
    tasks = doc["paths"]["/api/tasks"]["get"]["parameters"]
    assert {p["name"] for p in tasks} == {p.name for p in TaskFilter.PARAMS}
    assert next(p for p in tasks if p["name"] == "state")["schema"]["enum"] == ["queued", "assigned", "completed",
                                                                                  "cancelled"]
    for path, ops in doc["paths"].items():  # each {name} in a path is a documented path parameter
        for op in ops.values():
            named = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert named == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []
    vm = doc["paths"]["/api/voicemail"]["get"]
    assert {p["name"] for p in vm["parameters"]} == {p.name for p in VoicemailFilter.PARAMS} == {"box", "state", "limit"}
    assert "operator token is refused" in vm["description"]  # role agent's rank is not the whole rule
    assert set(doc["paths"]["/api/voicemail/{message}"]) == {"get", "post", "delete"}
    assert "supervisor" in doc["paths"]["/api/agents/{agent}"]["post"]["description"]
