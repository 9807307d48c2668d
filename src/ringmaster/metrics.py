"""/metrics: the live state (ringmaster.live) as Prometheus metrics, through prometheus_client.

A custom collector reads one LiveState per scrape; nothing is counted twice and no table is
read (the call log's totals are kept by the store as calls end, the voicemail boxes' counts
by ringmaster.voicemail as messages change), so a scrape costs the same on the first day and
the thousandth. prometheus_client writes the exposition format (label values
escaped) and negotiates OpenMetrics with scrapers that ask for it; process_* metrics (CPU,
memory, file descriptors of the controller) come with it.

Names follow Prometheus' conventions: counters end in _total, durations in _seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ringmaster.acd.config import CHANNELS
from ringmaster.live import ChannelState, LiveState
from ringmaster.store import Disposition

ENDED = tuple(d.value for d in Disposition if d != Disposition.IN_PROGRESS)
TASK_CHANNELS = tuple(ch for ch in CHANNELS if ch != "voice")

# Events a call's core (call/core.py) refused as illegal in the call's phase or leg state
# (a second end, an answer on an ended leg, a hang-up of a leg already ending): counted as
# they happen by calls.CallSession, which also logs each (call.illegal_event). Registered in
# no registry here: each daemon's Metrics registers it in its own.
ILLEGAL_CALL_EVENTS = PromCounter("ringmaster_call_illegal_events", "Call events the call core refused as illegal "
                                  "in the call's state, by event and phase", ["event", "phase"], registry=None)


def _gauge(name: str, help_: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, labels=labels)


def _counter(name: str, help_: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_, labels=labels)


class LiveCollector(Collector):
    """A prometheus_client collector whose values are read at each scrape from `source()`
    (Controller.live_state)."""

    def __init__(self, source: Callable[[], LiveState]):
        self.source = source

    def collect(self) -> Iterator[Metric]:
        """One LiveState, as metric families (called by prometheus_client at each scrape)."""
        s = self.source()
        now = s.at
        calls = _counter("ringmaster_calls_total", "Calls in the call log by how they ended", ["disposition"])
        for d in ENDED:
            calls.add_metric([d], s.store.ended_calls.get(d, 0))
        yield calls
        yield GaugeMetricFamily("ringmaster_calls_in_progress", "Calls in progress now", value=s.calls_in_progress)

        waiting = _gauge("ringmaster_queue_waiting", "Calls (voice) and tasks (chat, email) waiting in a queue",
                         ["queue", "channel"])
        longest = _gauge("ringmaster_queue_longest_wait_seconds", "Longest current wait in a queue", ["queue", "channel"])
        for name, q in sorted(s.queues.items()):
            for ch in CHANNELS:
                waiting.add_metric([name, ch], len(q.waiting_on(ch)))
                longest.add_metric([name, ch], round(q.longest_wait(ch, now), 3))
        yield waiting
        yield longest

        per_channel: Counter[tuple[str, str]] = Counter()
        for a in s.agents.values():
            for ch in CHANNELS:
                per_channel[(a.channels[ch].state.value, ch)] += 1
        agents = _gauge("ringmaster_agents", "Agents by state and channel (" + ", ".join(ChannelState) + ")",
                        ["state", "channel"])
        for (state, ch), n in sorted(per_channel.items()):
            agents.add_metric([state, ch], n)
        yield agents

        tasks = _gauge("ringmaster_tasks_open", "Open chat and email tasks by channel (waiting or assigned)",
                       ["channel", "state"])
        for ch in TASK_CHANNELS:
            for state in ("waiting", "assigned"):
                tasks.add_metric([ch, state], sum(1 for t in s.tasks
                                                  if t.channel == ch and (t.agent is None) == (state == "waiting")))
        yield tasks

        mq_connected = _gauge("ringmaster_mqtt_connected", "The controller is connected to the MQTT broker (absent: no MQTT)")
        mq_outbox = _gauge("ringmaster_mqtt_outbox_messages", "Messages waiting to be published (grows while the broker is away)")
        mq_bad = _counter("ringmaster_mqtt_bad_payloads_total", "MQTT messages refused on the errors topic")
        if s.mqtt is not None:
            mq_connected.add_metric([], 1 if s.mqtt.connected else 0)
            mq_outbox.add_metric([], s.mqtt.queued)
            mq_bad.add_metric([], s.mqtt.bad_payloads)
        yield from (mq_connected, mq_outbox, mq_bad)

        workers = _gauge("ringmaster_workers", "Media workers by liveness", ["alive"])
        workers.add_metric(["true"], sum(1 for w in s.workers if w.alive))
        workers.add_metric(["false"], sum(1 for w in s.workers if not w.alive))
        yield workers
        legs = _gauge("ringmaster_worker_busy_legs", "Call legs in use per worker", ["worker"])
        for w in s.workers:
            legs.add_metric([w.name], w.legs)
        yield legs
        yield CounterMetricFamily("ringmaster_worker_restarts_total", "Workers replaced after dying",
                                  value=s.worker_restarts)

        regs = _gauge("ringmaster_registration_up", "Upstream registrations (1 = registered)", ["registration"])
        for r in s.registrations:
            regs.add_metric([r.name], 1 if r.registered else 0)
        yield regs

        e = s.edge
        yield GaugeMetricFamily("ringmaster_edge_events_connected", "The edge's registration event stream is connected",
                                value=1 if e.events_connected else 0)
        refused = _counter("ringmaster_edge_refused_total",
                           "Requests the edge refused, by reason (auth_failures: wrong passwords; malformed: NUL, "
                           "control bytes, size; unknown_dialog: forged in-dialog requests; unknown_number; "
                           "refused_target)", ["reason"])
        for reason, n in sorted(e.counters.items()):
            if reason not in ("auth_bans", "direct_media", "trunk_auth"):  # those are not refusals
                refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily("ringmaster_edge_direct_media_total",
                                  "Re-INVITEs the edge sent with the far party's SDP (direct media)",
                                  value=e.counters.get("direct_media", 0))
        yield CounterMetricFamily("ringmaster_edge_trunk_auth_total",
                                  "INVITEs the edge retried with a trunk's digest credentials",
                                  value=e.counters.get("trunk_auth", 0))
        yield CounterMetricFamily("ringmaster_edge_auth_bans_total", "Sources banned for password guessing",
                                  value=e.counters.get("auth_bans", 0))
        yield GaugeMetricFamily("ringmaster_edge_auth_banned_sources", "Sources banned for password guessing right now",
                                value=e.banned_sources)
        yield CounterMetricFamily("ringmaster_edge_load_corrections_total",
                                  "Times the edge's count of a worker's calls drifted from the calls it held and was reset",
                                  value=e.load_corrections)

        messages = _gauge("ringmaster_voicemail_messages", "Voicemail messages by box and state (new, heard)",
                          ["box", "state"])
        mwi = _gauge("ringmaster_mwi_subscriptions", "Softphones subscribed to their message-waiting lamp")
        if s.voicemail is not None:
            for box, (new, heard) in sorted(s.voicemail.boxes.items()):
                messages.add_metric([box, "new"], new)
                messages.add_metric([box, "heard"], heard)
            mwi.add_metric([], s.voicemail.mwi_subscriptions)
        yield messages
        yield mwi

        wh_pending = _gauge("ringmaster_webhook_pending", "Webhook deliveries waiting (stored outbox; grows while an endpoint is down)", ["webhook"])
        wh_flight = _gauge("ringmaster_webhook_in_flight", "Webhook requests being made now", ["webhook"])
        wh_dead = _gauge("ringmaster_webhook_dead_letters", "Webhook deliveries given up (max attempts or age); retried by an admin", ["webhook"])
        wh_oldest = _gauge("ringmaster_webhook_oldest_pending_seconds", "Seconds the longest-waiting delivery to the endpoint has waited (0: none waits)", ["webhook"])
        wh_ok = _counter("ringmaster_webhook_deliveries_total", "Webhook deliveries the endpoint accepted (2xx) since start", ["webhook"])
        wh_failed = _counter("ringmaster_webhook_failed_attempts_total", "Webhook attempts that failed (no 2xx) since start", ["webhook"])
        for hook in s.webhooks:
            wh_pending.add_metric([hook.name], hook.pending)
            wh_flight.add_metric([hook.name], hook.in_flight)
            wh_dead.add_metric([hook.name], hook.dead)
            wh_oldest.add_metric([hook.name], hook.oldest_pending_seconds or 0.0)
            wh_ok.add_metric([hook.name], hook.delivered)
            wh_failed.add_metric([hook.name], hook.failed_attempts)
        yield from (wh_pending, wh_flight, wh_dead, wh_oldest, wh_ok, wh_failed)

        st = s.store
        yield GaugeMetricFamily("ringmaster_store_last_commit_seconds", "Duration of the store's last batch commit",
                                value=round(st.last_commit_seconds, 6))
        yield GaugeMetricFamily("ringmaster_store_ok", "The store takes writes (0: failing; records are kept pending)",
                                value=1 if st.ok else 0)
        yield GaugeMetricFamily("ringmaster_store_pending_records",
                                "Records made but not yet in the store (grows while the store fails; memory and spill file)",
                                value=st.pending)
        yield CounterMetricFamily("ringmaster_store_write_failures_total",
                                  "Failed store commit attempts (read-only, full or failing disk); alert on any increase",
                                  value=st.write_failures)


class Metrics:
    """The daemon's metrics registry: the live collector and the controller process' own
    metrics. `render(accept)` -> (body, content type), the format chosen from the scraper's
    Accept header (OpenMetrics if asked for, else Prometheus text 0.0.4)."""

    def __init__(self, source: Callable[[], LiveState]):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LiveCollector(source))
        self.registry.register(ILLEGAL_CALL_EVENTS)
        ProcessCollector(registry=self.registry)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition of every metric now: (body, Content-Type). accept: the scraper's Accept header."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
