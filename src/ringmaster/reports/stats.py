"""Queue and agent figures over an interval, computed only from stored queue_log (or task_log)
events with Asterisk's names and data fields, so they match the event stream exactly. Used by
`ringmaster stats`, /api/queues and the wallboard (today's figures, reports.today).

Definitions (stated, because contact centers differ on them):
- offered = ENTERQUEUE; answered = CONNECT; abandoned = ABANDON; short abandons wait <= the
  short-abandon time (default 5 s) and are left out of the service level's base;
- service level % = answered within the queue's threshold / (offered - short abandons);
- ASA = mean wait of answered calls; AHT = mean talk (COMPLETE*) + the queue's wrap-up;
- longest wait = over answered, abandoned and timed-out/keyed/empty exits;
- login time: from ADDMEMBER to REMOVEMEMBER (or the interval's end); pause time by reason: from
  PAUSE to UNPAUSE; occupancy = (talk + wrap-up) / (logged in - paused);
- hold = the stretches a party's phone held the call (UNHOLD's seconds, credited to the call's
  queue and agent whichever party held); avg_hold = hold seconds / holds (per stretch).
- queued callbacks (docs/callbacks.md): requested = CALLBACKREQUEST, completed = CALLBACKANSWER
  (the customer answered), failed = CALLBACKFAIL marked final, cancelled = CALLBACKCANCEL;
  time to callback = mean seconds from the request to the customer's answer. A callback's
  CONNECT counts as the caller's call answered, its wait from the caller's arrival.
Waits, talk and hold times are whole seconds, as Asterisk writes them.

No IO: `Tally` is fed event tuples and gives figures; the reads that feed it live in
reports.reads and reports.today.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

# (at epoch seconds, call or task id, queue, agent, EVENT, data "a|b|c"): one queue_log row
Event = tuple[float, str, str, str, str, str]
# the events that open or close a login or a pause: needed from before an interval's start
PRESENCE_EVENTS = ("ADDMEMBER", "REMOVEMEMBER", "PAUSE", "UNPAUSE")


@dataclass
class QueueStats:
    """One queue's figures over an interval (counts; waits and talk in whole seconds; % 0-100,
    None when there is no base)."""

    queue: str
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    abandoned_short: int = 0
    timeout: int = 0
    exit_key: int = 0
    exit_empty: int = 0
    transferred: int = 0  # BLINDTRANSFER / ATTENDEDTRANSFER: answered here, then sent on by the agent
    answered_in_sl: int = 0
    service_level_pct: float | None = None
    asa: float | None = None
    aht: float | None = None
    avg_talk: float | None = None
    avg_wrapup: float | None = None
    longest_wait: int = 0
    holds: int = 0
    hold_seconds: int = 0
    avg_hold: float | None = None
    callbacks_requested: int = 0
    callbacks_completed: int = 0
    callbacks_failed: int = 0
    callbacks_cancelled: int = 0
    avg_time_to_callback: float | None = None
    _callback_time_sum: int = field(default=0, repr=False)
    _wait_sum: int = field(default=0, repr=False)
    _talk_sum: int = field(default=0, repr=False)
    _talks: int = field(default=0, repr=False)


@dataclass
class AgentStats:
    """One agent's figures over an interval (seconds; occupancy % or None when never available)."""

    agent: str
    answered: int = 0
    no_answer: int = 0
    transferred: int = 0
    talk_seconds: int = 0
    wrapup_seconds: float = 0.0
    login_seconds: float = 0.0
    pause_seconds: dict[str, float] = field(default_factory=dict)
    occupancy_pct: float | None = None
    holds: int = 0
    hold_seconds: int = 0
    avg_hold: float | None = None


def _ints(data: str) -> list[int]:
    out = []
    for part in data.split("|"):
        try:
            out.append(int(part))
        except ValueError:
            out.append(0)
    return out


def _at(d: list[int], i: int) -> int:
    return d[i] if i < len(d) else 0


class Tally:
    """Running figures over [since, until): fed events one by one in time order (`add`), read
    at any moment (`result`) without disturbing the running state, so today's figures can be
    kept by feeding only the rows stored since the last read.

    since, until: epoch seconds (until may be float('inf') for a tally that keeps growing);
    service_levels: queue -> seconds an answer counts within; wrapups: queue -> seconds of
    wrap-up added to each handled call; short_abandon: seconds.
    Events before `since` only open or close logins and pauses (feed them for login and pause
    time to be right at `since`).
    """

    def __init__(self, since: float, until: float, service_levels: dict[str, float], wrapups: dict[str, float],
                 short_abandon: float = 5.0):
        self.since, self.until = since, until
        self.service_levels, self.wrapups, self.short_abandon = service_levels, wrapups, short_abandon
        self.queues: dict[str, QueueStats] = {}
        self.agents: dict[str, AgentStats] = {}
        self._login_open: dict[str, float] = {}
        self._login_queues: dict[str, set[str]] = defaultdict(set)
        self._pause_open: dict[str, tuple[float, str]] = {}

    def _q(self, name: str) -> QueueStats:
        return self.queues.setdefault(name, QueueStats(name))

    def _a(self, name: str) -> AgentStats:
        return self.agents.setdefault(name, AgentStats(name))

    def add(self, at: float, queue: str, agent: str, event: str, data: str) -> None:
        """One event (a queue_log row's fields; the call id plays no part in the figures)."""
        since, until = self.since, self.until
        if event == "ADDMEMBER":
            if not self._login_queues[agent]:
                self._login_open[agent] = max(at, since)
            self._login_queues[agent].add(queue)
        elif event == "REMOVEMEMBER":
            self._login_queues[agent].discard(queue)
            if not self._login_queues[agent] and agent in self._login_open:
                start = self._login_open.pop(agent)
                if at > since:
                    self._a(agent).login_seconds += min(at, until) - start
        elif event == "PAUSE":
            if agent not in self._pause_open:
                self._pause_open[agent] = (max(at, since), data or "paused")
        elif event == "UNPAUSE":
            if agent in self._pause_open:
                start, reason = self._pause_open.pop(agent)
                if at > since:
                    ps = self._a(agent).pause_seconds
                    ps[reason] = ps.get(reason, 0.0) + min(at, until) - start
        if not since <= at < until:
            return
        d = _ints(data)
        if event == "ENTERQUEUE":
            self._q(queue).offered += 1
        elif event == "CONNECT":
            s = self._q(queue)
            s.answered += 1
            s._wait_sum += _at(d, 0)
            s.longest_wait = max(s.longest_wait, _at(d, 0))
            if _at(d, 0) <= self.service_levels.get(queue, 20.0):
                s.answered_in_sl += 1
            self._a(agent).answered += 1
        elif event in ("COMPLETEAGENT", "COMPLETECALLER"):
            s = self._q(queue)
            s._talk_sum += _at(d, 1)
            s._talks += 1
            self._a(agent).talk_seconds += _at(d, 1)
            self._a(agent).wrapup_seconds += self.wrapups.get(queue, 0.0)
        elif event in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
            # app_queue's data: extension|context|holdtime|calltime|origposition, and for an
            # attended one BRIDGE|target|holdtime|calltime|origposition (ours: always BRIDGE)
            s = self._q(queue)
            s._talk_sum += _at(d, 3)
            s._talks += 1
            s.transferred += 1
            self._a(agent).talk_seconds += _at(d, 3)
            self._a(agent).transferred += 1
            self._a(agent).wrapup_seconds += self.wrapups.get(queue, 0.0)
        elif event == "UNHOLD":
            s, ag = self._q(queue), self._a(agent)
            s.holds += 1
            s.hold_seconds += _at(d, 0)
            ag.holds += 1
            ag.hold_seconds += _at(d, 0)
        elif event == "RINGNOANSWER":
            self._a(agent).no_answer += 1
        elif event == "ABANDON":
            s = self._q(queue)
            s.abandoned += 1
            s.abandoned_short += _at(d, 2) <= self.short_abandon
            s.longest_wait = max(s.longest_wait, _at(d, 2))
        elif event in ("EXITWITHTIMEOUT", "EXITEMPTY"):
            s = self._q(queue)
            if event == "EXITWITHTIMEOUT":
                s.timeout += 1
            else:
                s.exit_empty += 1
            s.longest_wait = max(s.longest_wait, _at(d, 2))
        elif event == "CALLBACKREQUEST":
            s = self._q(queue)
            s.callbacks_requested += 1
            s.longest_wait = max(s.longest_wait, _at(d, 4))
        elif event == "CALLBACKANSWER":  # data: attempt|seconds since the request|ring seconds
            s = self._q(queue)
            s.callbacks_completed += 1
            s._callback_time_sum += _at(d, 1)
        elif event == "CALLBACKFAIL":  # data: attempt|reason|retry or final
            self._q(queue).callbacks_failed += data.endswith("|final")
        elif event == "CALLBACKCANCEL":
            self._q(queue).callbacks_cancelled += 1
        elif event == "EXITWITHKEY":
            s = self._q(queue)
            s.exit_key += 1
            s.longest_wait = max(s.longest_wait, _at(d, 3))

    def result(self, end: float | None = None) -> tuple[list[QueueStats], list[AgentStats]]:
        """The figures, by queue and by agent (sorted by name); logins and pauses still open are
        counted up to `end` (default: until). The tally itself is left as it was."""
        end = self.until if end is None else min(end, self.until)
        queues = {n: copy.copy(s) for n, s in self.queues.items()}
        agents = {n: copy.deepcopy(a) for n, a in self.agents.items()}

        def a(name: str) -> AgentStats:
            return agents.setdefault(name, AgentStats(name))

        for agent, start in self._login_open.items():  # still logged in at the end
            a(agent).login_seconds += max(0.0, end - start)
        for agent, (start, reason) in self._pause_open.items():
            ps = a(agent).pause_seconds
            ps[reason] = ps.get(reason, 0.0) + max(0.0, end - start)
        for s in queues.values():
            base = s.offered - s.abandoned_short
            s.service_level_pct = round(100.0 * s.answered_in_sl / base, 1) if base > 0 else None
            s.asa = round(s._wait_sum / s.answered, 1) if s.answered else None
            if s._talks:
                s.avg_talk = round(s._talk_sum / s._talks, 1)
                s.avg_wrapup = self.wrapups.get(s.queue, 0.0)
                s.aht = round(s.avg_talk + s.avg_wrapup, 1)
        for s in queues.values():
            s.avg_hold = round(s.hold_seconds / s.holds, 1) if s.holds else None
            if s.callbacks_completed:
                s.avg_time_to_callback = round(s._callback_time_sum / s.callbacks_completed, 1)
        for ag in agents.values():
            ag.avg_hold = round(ag.hold_seconds / ag.holds, 1) if ag.holds else None
        for ag in agents.values():
            available = ag.login_seconds - sum(ag.pause_seconds.values())
            if available > 0:
                ag.occupancy_pct = round(100.0 * (ag.talk_seconds + ag.wrapup_seconds) / available, 1)
            ag.login_seconds = round(ag.login_seconds, 1)
            ag.pause_seconds = {k: round(v, 1) for k, v in ag.pause_seconds.items()}
        return sorted(queues.values(), key=lambda s: s.queue), sorted(agents.values(), key=lambda s: s.agent)


def compute(events: list[Event], since: float, until: float, service_levels: dict[str, float],
            wrapups: dict[str, float], short_abandon: float = 5.0) -> tuple[list[QueueStats], list[AgentStats]]:
    """Figures over [since, until) from events in time order covering that interval, plus
    anything earlier that opened a login or pause still open at `since` (see Tally)."""
    tally = Tally(since, until, service_levels, wrapups, short_abandon)
    for at, _xid, queue, agent, event, data in events:
        tally.add(at, queue, agent, event, data)
    return tally.result()


def as_dicts(queues: list[QueueStats], agents: list[AgentStats]) -> dict[str, Any]:
    """{"queues": [...], "agents": [...]} without the private running sums (the JSON shape of
    `ringmaster stats --format json`)."""
    def clean(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in asdict(obj).items() if not k.startswith("_")}

    return {"queues": [clean(s) for s in queues], "agents": [clean(s) for s in agents]}
