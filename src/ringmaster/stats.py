"""`ringmaster stats`: queue and agent figures over an interval, computed only from the stored
queue_log events (Asterisk's names and data fields), so they match the event stream exactly.

Definitions (stated, because contact centers differ on them):
- offered = ENTERQUEUE; answered = CONNECT; abandoned = ABANDON; short abandons wait <= the
  short-abandon time (default 5 s) and are left out of the service level's base;
- service level % = answered within the queue's threshold / (offered - short abandons);
- ASA = mean wait of answered calls; AHT = mean talk (COMPLETE*) + the queue's wrap-up;
- longest wait = over answered, abandoned and timed-out/keyed/empty exits;
- login time: from ADDMEMBER to REMOVEMEMBER (or the interval's end); pause time by reason: from
  PAUSE to UNPAUSE; occupancy = (talk + wrap-up) / (logged in - paused).
Waits and talk times are whole seconds, as Asterisk writes them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class QueueStats:
    queue: str
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    abandoned_short: int = 0
    timeout: int = 0
    exit_key: int = 0
    exit_empty: int = 0
    answered_in_sl: int = 0
    service_level_pct: float | None = None
    asa: float | None = None
    aht: float | None = None
    avg_talk: float | None = None
    avg_wrapup: float | None = None
    longest_wait: int = 0
    _waits: list[int] = field(default_factory=list, repr=False)
    _talks: list[int] = field(default_factory=list, repr=False)


@dataclass
class AgentStats:
    agent: str
    answered: int = 0
    no_answer: int = 0
    talk_seconds: int = 0
    wrapup_seconds: float = 0.0
    login_seconds: float = 0.0
    pause_seconds: dict[str, float] = field(default_factory=dict)
    occupancy_pct: float | None = None


def _ints(data: str) -> list[int]:
    out = []
    for part in data.split("|"):
        try:
            out.append(int(part))
        except ValueError:
            out.append(0)
    return out


def compute(events: list[tuple[float, str, str, str, str, str]], since: float, until: float,
            service_levels: dict[str, float], wrapups: dict[str, float],
            short_abandon: float = 5.0) -> tuple[list[QueueStats], list[AgentStats]]:
    """events: (at, call_id, queue, agent, event, data), in time order, covering [since, until)
    plus anything earlier that opened a login or pause still open at `since`."""
    queues: dict[str, QueueStats] = {}
    agents: dict[str, AgentStats] = {}
    login_open: dict[str, float] = {}
    login_queues: dict[str, set[str]] = defaultdict(set)
    pause_open: dict[str, tuple[float, str]] = {}

    def q(name: str) -> QueueStats:
        return queues.setdefault(name, QueueStats(name))

    def a(name: str) -> AgentStats:
        return agents.setdefault(name, AgentStats(name))

    for at, _call, queue, agent, event, data in events:
        inside = since <= at < until
        if event == "ADDMEMBER":
            if not login_queues[agent]:
                login_open[agent] = max(at, since)
            login_queues[agent].add(queue)
        elif event == "REMOVEMEMBER":
            login_queues[agent].discard(queue)
            if not login_queues[agent] and agent in login_open:
                start = login_open.pop(agent)
                if at > since:
                    a(agent).login_seconds += min(at, until) - start
        elif event == "PAUSE":
            if agent not in pause_open:
                pause_open[agent] = (max(at, since), data or "paused")
        elif event == "UNPAUSE":
            if agent in pause_open:
                start, reason = pause_open.pop(agent)
                if at > since:
                    ps = a(agent).pause_seconds
                    ps[reason] = ps.get(reason, 0.0) + min(at, until) - start
        if not inside:
            continue
        d = _ints(data)
        if event == "ENTERQUEUE":
            q(queue).offered += 1
        elif event == "CONNECT":
            s = q(queue)
            s.answered += 1
            s._waits.append(d[0])
            s.longest_wait = max(s.longest_wait, d[0])
            if d[0] <= service_levels.get(queue, 20.0):
                s.answered_in_sl += 1
            a(agent).answered += 1
        elif event in ("COMPLETEAGENT", "COMPLETECALLER"):
            q(queue)._talks.append(d[1])
            a(agent).talk_seconds += d[1]
            a(agent).wrapup_seconds += wrapups.get(queue, 0.0)
        elif event == "RINGNOANSWER":
            a(agent).no_answer += 1
        elif event == "ABANDON":
            s = q(queue)
            s.abandoned += 1
            s.abandoned_short += d[2] <= short_abandon
            s.longest_wait = max(s.longest_wait, d[2])
        elif event in ("EXITWITHTIMEOUT", "EXITEMPTY"):
            s = q(queue)
            if event == "EXITWITHTIMEOUT":
                s.timeout += 1
            else:
                s.exit_empty += 1
            s.longest_wait = max(s.longest_wait, d[2])
        elif event == "EXITWITHKEY":
            s = q(queue)
            s.exit_key += 1
            s.longest_wait = max(s.longest_wait, d[3])
    for agent, start in login_open.items():  # still logged in at the end
        a(agent).login_seconds += until - start
    for agent, (start, reason) in pause_open.items():
        ps = a(agent).pause_seconds
        ps[reason] = ps.get(reason, 0.0) + until - start
    for s in queues.values():
        base = s.offered - s.abandoned_short
        s.service_level_pct = round(100.0 * s.answered_in_sl / base, 1) if base > 0 else None
        s.asa = round(sum(s._waits) / len(s._waits), 1) if s._waits else None
        if s._talks:
            s.avg_talk = round(sum(s._talks) / len(s._talks), 1)
            s.avg_wrapup = wrapups.get(s.queue, 0.0)
            s.aht = round(s.avg_talk + s.avg_wrapup, 1)
    for ag in agents.values():
        available = ag.login_seconds - sum(ag.pause_seconds.values())
        if available > 0:
            ag.occupancy_pct = round(100.0 * (ag.talk_seconds + ag.wrapup_seconds) / available, 1)
        ag.login_seconds = round(ag.login_seconds, 1)
        ag.pause_seconds = {k: round(v, 1) for k, v in ag.pause_seconds.items()}
    return sorted(queues.values(), key=lambda s: s.queue), sorted(agents.values(), key=lambda s: s.agent)


def as_dicts(queues: list[QueueStats], agents: list[AgentStats]) -> dict[str, Any]:
    def clean(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in asdict(obj).items() if not k.startswith("_")}

    return {"queues": [clean(s) for s in queues], "agents": [clean(s) for s in agents]}
