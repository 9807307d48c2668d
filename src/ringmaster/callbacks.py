"""Queued callbacks with real calls: the IO around the QueueEngine's callback tasks.

docs/callbacks.md has the behaviour. The engine (acd/engine.py) keeps each callback in its
queue's line as a task with the caller's priority and arrival time, offers it, and decides
retries and the end; this module carries its actions out with a worker and the store:

- Ring of a callback task: one INVITE to the agent from the least busy worker (no caller leg
  exists), with the screen pop in X- headers (X-Ringmaster-Callback, -Callback-Number, the
  call's IVR variables as X-Ringmaster-Var-*) and the customer's number in From; the MQTT
  offer on calls/events. It rings for the queue's `callback.preview` seconds.
- Bridge (she answered): the customer is dialled from the same worker through the queue's
  route (a trunk of sip.trunks: `sip:NUMBER@TRUNK`, relayed by the edge only because the
  controller lists that exact target there first), From = the configured caller ID. When the
  customer answers, `customer_prompt` is played to them, then the two are bridged and recorded
  as the queue says. A dial that fails (busy, no answer, an error) goes back to the engine
  (`callback_failed`), which retries in place or ends the callback.
- Every step is written: the callbacks row's state, call_events under the callback id,
  queue_log rows from the engine, and a calls row per dial attempt (`{callback}-{attempt}`).

Numbers are checked by `callback_number` before anything is stored: digits only, the
configured length, and one of the route's allowed patterns (no premium-rate or international
numbers unless the route lists them).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from ringmaster import inputs, prompts
from ringmaster import protocol as p
from ringmaster.acd.config import CallbackConfig, NumberRefused
from ringmaster.acd.engine import Action, Bridge, CancelRing, DropAgent, QueueLog, Ring
from ringmaster.schedules import Schedule, evaluate
from ringmaster.sipuri import identity

if TYPE_CHECKING:
    from ringmaster.acd.runtime import AcdRuntime
    from ringmaster.config import Trunk

log = structlog.get_logger("ringmaster.callbacks")

# a SIP final code of the customer's leg -> how the attempt failed (docs/callbacks.md)
BUSY_CODES = (486, 600)
NO_ANSWER_CODES = (408, 480, 487)


def callback_number(spec: CallbackConfig, trunk: Trunk | None, raw: str) -> str:
    """The number to call back, from a caller ID or keyed-in digits: `prefix` put before a
    number without '+', then checked: digits only (after one leading '+'), min_digits to
    max_digits long, matching one of `spec.allowed` (or, without any, the route's own
    patterns) and allowed by the route. Raises NumberRefused with the reason; an empty number
    (a collect that timed out) is refused, never stored."""
    text = (raw or "").strip()
    if not text:
        raise NumberRefused("no number (nothing was keyed in, or the caller ID is withheld)")
    digits = text[1:] if text.startswith("+") else text
    if not digits.isdigit() or not digits.isascii():
        raise NumberRefused(f"{text[:24]!r} is not a number (digits only)")
    if not spec.min_digits <= len(digits) <= spec.max_digits:
        raise NumberRefused(f"{text[:24]!r} has {len(digits)} digits, not {spec.min_digits}-{spec.max_digits}")
    number = text if text.startswith("+") or not spec.prefix else spec.prefix + text
    if trunk is None:
        raise NumberRefused(f"route {spec.route!r} is not a trunk of sip.trunks")
    patterns = spec.allowed or trunk.allowed
    if patterns and not any(re.fullmatch(pat, number) for pat in patterns):
        raise NumberRefused(f"{number} is not a number route {spec.route!r} may call back")
    if not trunk.allows(number):
        raise NumberRefused(f"{number} is not a number route {spec.route!r} allows")
    return number


@dataclass(eq=False)
class CallbackCall:
    """One offer-and-dial of a callback: the agent's leg on `worker`, then the customer's.
    state: ringing (the agent previews), dialling (customer rings), prompting (customer
    hears customer_prompt), bridging, talking, over."""

    callback_id: str
    queue: str
    number: str
    worker: str
    agent: str
    agent_leg: str
    attempt: int
    variables: dict[str, Any] = field(default_factory=dict)
    customer_leg: str = ""
    state: str = "ringing"
    dial_call_id: str = ""
    rec_id: str = ""
    play_id: str = ""
    dialled_at: float = 0.0
    answered_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    withdrawn: bool = False  # the engine withdrew the ring (CancelRing): its end frees her


class Callbacks:
    """The callbacks of every queue, as calls: see the module text. runtime: the AcdRuntime
    whose engine holds the tasks; place_leg(leg, handler) -> a worker name the leg is dialled
    from (the controller routes that leg's events to `handler`), or None if no worker can.
    The customer is dialled through the edge's route OUTBOUND (`X-Ringmaster-Route: TRUNK`):
    the edge relays it only if the number matches the queue's callback patterns (else the
    trunk's) it was given at start (edge/policy.py), and answers the trunk's digest challenge."""

    def __init__(self, runtime: AcdRuntime, place_leg: Callable[[str, Callbacks, str | None], str | None],
                 send: Callable[[str, p.Message], bool],
                 forget_leg: Callable[[str, str], None] = lambda worker, leg: None):
        self.rt = runtime
        self.place_leg = place_leg
        self.send = send
        self.forget_leg = forget_leg
        self.numbers: dict[str, str] = {}            # callback id -> number (the waiting ones too)
        self.queue_of: dict[str, str] = {}           # callback id -> the queue its stored row names
        self.variables: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, CallbackCall] = {}     # callback id -> its offer/dial in progress
        self.by_leg: dict[str, CallbackCall] = {}
        self._ids = itertools.count(1)
        self._io: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ requests

    def spec(self, queue: str) -> CallbackConfig | None:
        q = self.rt.engine.queues.get(queue)
        return q.spec.callback if q is not None else None

    def number_for(self, queue: str, raw: str) -> str:
        """The checked number for a callback of `queue` (NumberRefused: why not)."""
        spec = self.spec(queue)
        if spec is None:
            raise NumberRefused(f"queue {queue!r} has no callback settings")
        return callback_number(spec, self.rt.cfg.sip.trunks.get(spec.route), raw)

    def request_in_queue(self, call_id: str, number: str, variables: dict[str, Any]) -> str | None:
        """The waiting caller `call_id` keeps its place as a callback to `number` (checked
        already). Returns the callback id, or None if the caller is not waiting any more."""
        task = self.rt.engine.tasks.get(call_id)
        if task is None or task.agent is not None:
            return None
        cb_id = f"cb-{call_id}"
        now = self.rt.clock()
        self.numbers[cb_id], self.variables[cb_id] = number, dict(variables)
        self.queue_of[cb_id] = task.queue
        self.rt.store.callback_queued(cb_id, call_id, task.queue, number, task.priority, task.enqueued_at,
                                      task.skills, variables, now)
        self.rt.apply(self.rt.engine.request_callback(call_id, cb_id, number, now))
        log.info("callback.requested", callback=cb_id, call_id=call_id, queue=task.queue, via="queue")
        self._publish("requested", cb_id, task.queue, queue_call=call_id)
        return cb_id

    def request_from_flow(self, call_id: str, queue: str, number: str, priority: int,
                          variables: dict[str, Any]) -> str:
        """A flow's `callback` step: a callback to `number` (checked already) enters `queue`
        now, behind those waiting. Returns its id."""
        cb_id = f"cb-{call_id}"
        now = self.rt.clock()
        self.numbers[cb_id], self.variables[cb_id] = number, dict(variables)
        self.queue_of[cb_id] = queue
        self.rt.store.callback_queued(cb_id, call_id, queue, number, priority, now, {}, variables, now)
        self.rt.apply(self.rt.engine.enqueue_callback(cb_id, queue, number, now, priority=priority,
                                                      log_request=call_id))
        log.info("callback.requested", callback=cb_id, call_id=call_id, queue=queue, via="flow")
        self._publish("requested", cb_id, queue, queue_call=call_id)
        return cb_id

    def restore(self, rows: list[dict[str, Any]]) -> int:
        """At start: the stored callbacks not over go back in their queues, at their arrival
        time (so in their place), with their attempts; one interrupted mid-dial counts as
        waiting again. Returns how many came back."""
        now = self.rt.clock()
        actions: list[Action] = []
        n = 0
        for row in rows:
            queue = row["queue"]
            if queue not in self.rt.engine.queues or self.spec(queue) is None:
                log.warning("callback.queue_gone", callback=row["callback_id"], queue=queue)
                continue
            cb_id = row["callback_id"]
            self.numbers[cb_id] = row["number"]
            self.queue_of[cb_id] = queue
            self.variables[cb_id] = _json(row["variables"])
            actions += self.rt.engine.enqueue_callback(
                cb_id, queue, row["number"], now, enqueued_at=row["enqueued_at"], requested_at=row["requested_at"],
                priority=row["priority"], skills=_json(row["skills"]), attempts=row["attempts"],
                retry_at=row["retry_at"] or 0.0)
            if row["status"] != "waiting":
                self.rt.store.callback_state(cb_id, "waiting", now, reason="restart")
            n += 1
        self.rt.apply(actions)
        return n

    def cancel(self, callback_id: str, by: str) -> dict[str, Any]:
        """Cancel a waiting callback (DELETE /api/callbacks/ID). {"callback_id", "status"} or
        {"error": why, "status": 404|409}."""
        try:
            actions = self.rt.engine.cancel_callback(callback_id, by, self.rt.clock())
        except KeyError:
            return {"error": f"no waiting callback {callback_id[:80]!r}", "status": 404}
        except ValueError as exc:
            return {"error": str(exc), "status": 409}
        self.rt.store.callback_state(callback_id, "cancelled", self.rt.clock(), reason=f"by {by}")
        self.rt.apply(actions)
        queue = next((x.queue for x in actions if isinstance(x, QueueLog)), "")
        self._publish("cancelled", callback_id, queue)
        log.info("callback.cancelled", callback=callback_id, by=by)
        return {"callback_id": callback_id, "status": "cancelled"}

    def queues_changed(self) -> None:
        """After a reload: a callback its drained queue moved to another is stored there, so a
        restart puts it back in the queue it waits in now."""
        for task in self.rt.engine.tasks.values():
            if task.callback is not None and self.queue_of.get(task.id, task.queue) != task.queue:
                self.queue_of[task.id] = task.queue
                self.rt.store.callback_moved(task.id, task.queue, self.rt.clock())
                log.info("callback.moved", callback=task.id, queue=task.queue)

    def waiting(self) -> list[dict[str, Any]]:
        """The callbacks in the queues now, in service order per queue: id, queue, number,
        position, estimated wait (seconds or None), attempts, state, agent."""
        out = []
        e = self.rt.engine
        for task in e.tasks.values():
            if task.callback is None:
                continue
            pos = e.position_of(task.id)
            call = self.calls.get(task.id)
            out.append({"callback_id": task.id, "queue": task.queue, "number": task.callback,
                        "position": pos[0] if pos else None,
                        "estimated_wait": round(pos[1]) if pos and pos[1] is not None else None,
                        "priority": task.priority, "enqueued_at": task.enqueued_at,
                        "requested_at": task.requested_at, "attempts": task.attempts,
                        "next_attempt_at": task.retry_at or None,
                        "state": call.state if call is not None else "waiting",
                        "agent": call.agent if call is not None else None})
        return sorted(out, key=lambda r: (r["queue"], r["position"] or 0))

    # ------------------------------------------------------------ the engine's actions

    def owns(self, task_id: str) -> bool:
        task = self.rt.engine.tasks.get(task_id)
        return (task is not None and task.callback is not None) or task_id in self.calls

    def apply(self, a: Action) -> None:
        """One engine action about a callback task."""
        if isinstance(a, Ring):
            self._ring(a)
        elif isinstance(a, CancelRing):
            self._cancel(a)
        elif isinstance(a, Bridge):
            self._dial_customer(a)
        elif isinstance(a, DropAgent):
            call = self.calls.get(a.call_id)
            if call is not None and call.agent == a.agent and call.state == "ringing":
                self._hangup(call.worker, call.agent_leg)

    def _ring(self, a: Ring) -> None:
        task = self.rt.engine.tasks.get(a.call_id)
        if task is None or task.callback is None:
            return
        agent = a.agents[0]
        leg = f"{a.call_id}-a{next(self._ids)}"
        worker = self.place_leg(leg, self, None)
        now = self.rt.clock()
        if worker is None:
            log.error("callback.no_worker", callback=a.call_id, agent=agent)
            self.rt.apply(self.rt.engine.ring_failed(a.call_id, agent, now, "failed"))
            return
        call = CallbackCall(a.call_id, a.queue, task.callback, worker, agent, leg, task.attempts + 1,
                            variables=self.variables.get(a.call_id, {}))
        self.calls[a.call_id] = call
        self.by_leg[leg] = call
        headers: tuple[tuple[str, str], ...] = (
            ("X-Ringmaster-Call", a.call_id), ("X-Ringmaster-Queue", a.queue),
            ("X-Ringmaster-Callback", a.call_id), ("X-Ringmaster-Callback-Number", task.callback),
            ("X-Ringmaster-Callback-Attempt", str(call.attempt)))
        headers += _variable_headers(call.variables)
        cfg = self.rt.cfg
        from_uri = identity(task.callback, "Callback", cfg.sip.host) or ""
        self.rt.store.callback_state(a.call_id, "offered", now, agent=agent)
        self._publish("offered", a.call_id, a.queue, agents=[agent], preview=a.timeout, attempt=call.attempt)
        log.info("callback.offered", callback=a.call_id, agent=agent, worker=worker, leg=leg, attempt=call.attempt)
        self.send(worker, p.Dial(leg=leg, uri=self.rt.agent_uri(agent), extra_headers=headers, from_uri=from_uri))

    def _cancel(self, a: CancelRing) -> None:
        call = self.calls.get(a.call_id)
        now = self.rt.clock()
        if call is None or call.state != "ringing":
            self.rt.apply([x for ag in a.agents for x in self.rt.engine.ring_ended(a.call_id, ag, now)])
            return
        call.withdrawn = True
        self._hangup(call.worker, call.agent_leg, 487)

    def _dial_customer(self, a: Bridge) -> None:
        call = self.calls.get(a.call_id)
        spec = self.spec(call.queue) if call is not None else None
        if call is None or spec is None:
            return
        trunk = self.rt.cfg.sip.trunks.get(spec.route)
        if trunk is None:
            self._attempt_failed(call, "failed", "route gone")
            return
        call.state = "dialling"
        call.customer_leg = f"{a.call_id}-c{next(self._ids)}"
        call.dial_call_id = f"{a.call_id}-{call.attempt}"
        call.dialled_at = self.rt.clock()
        self.by_leg[call.customer_leg] = call
        self._route(call.worker, call.customer_leg)
        uri = f"sip:{call.number}@{self.rt.cfg.sip.host}:{self.rt.cfg.sip.port}"
        store = self.rt.store
        store.call_arrived(call.dial_call_id, "", spec.caller_id, call.number, uri, call.worker, call.dialled_at)
        store.event(call.dial_call_id, "CALLBACK", call.dialled_at, callback_id=a.call_id, attempt=call.attempt,
                    route=spec.route, direction="outbound")
        store.call_queued(call.dial_call_id, call.queue)
        store.callback_state(a.call_id, "dialling", call.dialled_at, agent=call.agent, dial_call_id=call.dial_call_id)
        self._publish("dialling", a.call_id, call.queue, agent=call.agent, attempt=call.attempt)
        log.info("callback.dialling", callback=a.call_id, agent=call.agent, leg=call.customer_leg,
                 route=spec.route, attempt=call.attempt)
        from_uri = f"<sip:{spec.caller_id}@{self.rt.cfg.sip.host}>"
        dial = p.Dial(leg=call.customer_leg, uri=uri, from_uri=from_uri,
                      extra_headers=(("X-Ringmaster-Callback", a.call_id), ("X-Ringmaster-Route", spec.route)))
        self.send(call.worker, dial)
        call.timer = asyncio.get_running_loop().call_later(spec.ring_timeout, self._customer_timeout, call)

    def _customer_timeout(self, call: CallbackCall) -> None:
        if call.state == "dialling":
            log.info("callback.customer_no_answer", callback=call.callback_id)
            self._hangup(call.worker, call.customer_leg, 487)

    # ------------------------------------------------------------ worker events

    def on_event(self, msg: p.Message) -> None:
        leg = getattr(msg, "leg", "")
        call = self.by_leg.get(leg)
        if call is None:
            return
        now = self.rt.clock()
        if isinstance(msg, p.Error):
            log.error("callback.leg_error", callback=call.callback_id, leg=leg, command=msg.command, error=msg.message)
            return
        if isinstance(msg, p.Bridged):
            if call.state == "bridging":
                self._talking(call, now)
            return
        if isinstance(msg, p.PlaybackDone):
            if msg.play_id == call.play_id and call.state == "prompting":
                self._bridge(call)
            return
        if not isinstance(msg, p.CallState):
            return
        if leg == call.agent_leg:
            if msg.state == "confirmed" and call.state == "ringing":
                if call.withdrawn or self.calls.get(call.callback_id) is not call:
                    self._hangup(call.worker, leg)  # answered as our CANCEL crossed: not hers any more
                    return
                self.rt.apply(self.rt.engine.ring_answered(call.callback_id, call.agent, now))
            elif msg.state == "disconnected":
                self._agent_leg_ended(call, msg, now)
        elif leg == call.customer_leg:
            if msg.state == "confirmed" and call.state == "dialling":
                self._customer_answered(call, now)
            elif msg.state == "disconnected":
                self._customer_leg_ended(call, msg, now)

    def _agent_leg_ended(self, call: CallbackCall, msg: p.CallState, now: float) -> None:
        self._drop_leg(call, call.agent_leg)
        if call.state == "ringing":
            self._forget(call)
            if call.withdrawn:
                self.rt.apply(self.rt.engine.ring_ended(call.callback_id, call.agent, now))
            else:
                reason = "busy" if msg.code == 486 else "noanswer"
                self.rt.store.callback_state(call.callback_id, "waiting", now, reason=f"agent {reason}")
                self.rt.apply(self.rt.engine.ring_failed(call.callback_id, call.agent, now, reason))
        elif call.state in ("dialling", "prompting", "bridging"):
            # she hung up before the customer was with her: the attempt is ours to retry, uncounted
            if call.customer_leg:
                self._hangup(call.worker, call.customer_leg, 487)
            self._attempt_failed(call, "agent-hangup", "agent hung up", counted=False)
        elif call.state == "talking":
            self._talk_ended(call, "agent", now)

    def _customer_answered(self, call: CallbackCall, now: float) -> None:
        if call.timer is not None:
            call.timer.cancel()
        call.answered_at = now
        self.rt.store.call_answered(call.dial_call_id, now)
        spec = self.spec(call.queue)
        prompt = spec.customer_prompt if spec is not None else None
        language = str(call.variables.get("language", ""))  # the requesting call's, if it had one
        files = self.rt.prompt_files([prompt], language) if prompt else []
        if files:
            call.state = "prompting"
            call.play_id = f"{call.callback_id}-p{next(self._ids)}"
            self.send(call.worker, p.Play(leg=call.customer_leg, files=prompts.playable(tuple(files)),
                                          play_id=call.play_id))
        else:
            self._bridge(call)

    def _bridge(self, call: CallbackCall) -> None:
        call.state = "bridging"
        self.send(call.worker, p.Bridge(leg_a=call.customer_leg, leg_b=call.agent_leg))

    def _talking(self, call: CallbackCall, now: float) -> None:
        call.state = "talking"
        spec = self.rt.engine.queues[call.queue].spec if call.queue in self.rt.engine.queues else None
        if spec is not None and spec.record is not None:
            path = self.rt.recording_path_for(spec.record.template, call.queue, call.dial_call_id, call.agent,
                                               call.number, now)
            if path is not None:
                call.rec_id = f"{call.callback_id}-r{next(self._ids)}"
                self.send(call.worker, p.RecordStart(rec_id=call.rec_id, legs=(call.customer_leg, call.agent_leg),
                                                     path=path))
                self.rt.store.call_recording(call.dial_call_id, path)
        task = self.rt.engine.tasks.get(call.callback_id)
        wait = now - task.enqueued_at if task is not None else 0.0
        self.rt.store.call_agent(call.dial_call_id, call.agent, wait)
        self.rt.store.callback_state(call.callback_id, "answered", now, agent=call.agent, answered_at=now,
                                     attempts=call.attempt)
        self._publish("answered", call.callback_id, call.queue, agent=call.agent, attempt=call.attempt)
        log.info("callback.answered", callback=call.callback_id, agent=call.agent, attempt=call.attempt)
        self.rt.apply(self.rt.engine.callback_answered(call.callback_id, now))

    def _customer_leg_ended(self, call: CallbackCall, msg: p.CallState, now: float) -> None:
        self._drop_leg(call, call.customer_leg)
        if call.timer is not None:
            call.timer.cancel()
        if call.state == "talking":
            self._talk_ended(call, "caller", now)
            return
        if call.state in ("prompting", "bridging"):  # hung up while hearing the prompt
            self._hangup(call.worker, call.agent_leg)
            self._attempt_failed(call, "customer-hangup", f"{msg.code} {msg.reason}")
            return
        if call.state != "dialling":
            return
        reason = "busy" if msg.code in BUSY_CODES else "noanswer" if msg.code in NO_ANSWER_CODES else "failed"
        self._hangup(call.worker, call.agent_leg)
        self._attempt_failed(call, reason, f"{msg.code} {msg.reason}")

    def _attempt_failed(self, call: CallbackCall, reason: str, detail: str, counted: bool = True) -> None:
        now = self.rt.clock()
        if call.timer is not None:
            call.timer.cancel()
        call.state = "over"
        self._forget(call)
        if call.dial_call_id:
            self.rt.store.call_ended(call.dial_call_id, now, "failed", f"callback_{reason}", 0, "ringmaster", [],
                                     call.variables)
        actions = self.rt.engine.callback_failed(call.callback_id, reason, now, counted)
        final = call.callback_id not in self.rt.engine.tasks
        task = self.rt.engine.tasks.get(call.callback_id)
        self.rt.store.callback_state(call.callback_id, "failed" if final else "waiting", now, reason=reason,
                                     attempts=call.attempt if counted else call.attempt - 1,
                                     retry_at=task.retry_at if task is not None else 0.0)
        self._publish("failed" if final else "retry", call.callback_id, call.queue, reason=reason,
                      attempt=call.attempt)
        log.info("callback.attempt_failed", callback=call.callback_id, reason=reason, detail=detail,
                 attempt=call.attempt, final=final)
        if final:
            self.numbers.pop(call.callback_id, None)
            self.variables.pop(call.callback_id, None)
        self.rt.apply(actions)

    def _talk_ended(self, call: CallbackCall, by: str, now: float) -> None:
        call.state = "over"  # the other leg's end, still to come, is ours already
        self._forget(call)
        other = call.customer_leg if by == "agent" else call.agent_leg
        self._hangup(call.worker, other)
        if call.rec_id:
            self.send(call.worker, p.RecordStop(rec_id=call.rec_id))
        self.rt.store.call_talk(call.dial_call_id, now - call.answered_at)
        self.rt.store.call_ended(call.dial_call_id, now, "completed", f"{by}_hangup" if by == "agent" else "caller_hangup",
                                 200, "agent" if by == "agent" else "caller", [], call.variables)
        self.rt.store.callback_state(call.callback_id, "completed", now, agent=call.agent)
        self._publish("ended", call.callback_id, call.queue, agent=call.agent)
        log.info("callback.completed", callback=call.callback_id, agent=call.agent, by=by,
                 talk=round(now - call.answered_at, 1))
        self.numbers.pop(call.callback_id, None)
        self.variables.pop(call.callback_id, None)
        self.rt.apply(self.rt.engine.call_ended(call.callback_id, "agent" if by == "agent" else "caller", now))

    def worker_lost(self, worker: str) -> None:
        """A worker died with callback legs on it: a ring frees its agent, a dial in progress
        is put back in place (not counted against the attempts), a talk is over."""
        now = self.rt.clock()
        for call in [c for c in list(self.calls.values()) if c.worker == worker]:
            self.by_leg.pop(call.agent_leg, None)
            self.by_leg.pop(call.customer_leg, None)
            if call.state == "ringing":
                self._forget(call)
                fn = self.rt.engine.ring_ended if call.withdrawn else self.rt.engine.ring_failed
                self.rt.apply(fn(call.callback_id, call.agent, now))
            elif call.state == "talking":
                self._talk_ended(call, "caller", now)
            else:
                self._attempt_failed(call, "worker-lost", "worker died", counted=False)

    def stop(self) -> None:
        """A clean stop: legs in progress are hung up; the callbacks stay stored for the next start."""
        for call in list(self.calls.values()):
            for leg in (call.agent_leg, call.customer_leg):
                if leg:
                    self._hangup(call.worker, leg)
        for task in list(self._io):
            task.cancel()

    # ------------------------------------------------------------ helpers

    def _route(self, worker: str, leg: str) -> None:
        self.place_leg(leg, self, worker)

    def _drop_leg(self, call: CallbackCall, leg: str) -> None:
        self.by_leg.pop(leg, None)
        self.forget_leg(call.worker, leg)

    def _forget(self, call: CallbackCall) -> None:
        if self.calls.get(call.callback_id) is call:
            del self.calls[call.callback_id]

    def _hangup(self, worker: str, leg: str, code: int = 200) -> None:
        if leg:
            self.send(worker, p.Hangup(leg=leg, code=code))

    def _publish(self, event: str, callback_id: str, queue: str, **extra: Any) -> None:
        if self.rt.listener is not None:
            self.rt.listener.publish_call_event({
                "event": event, "call_id": callback_id, "callback_id": callback_id, "kind": "callback",
                "queue": queue, "caller": self.numbers.get(callback_id, ""),
                "variables": dict(self.variables.get(callback_id, {})), **extra})

    def _background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._io.add(task)
        task.add_done_callback(self._io.discard)


def _json(text: Any) -> dict[str, Any]:
    try:
        v = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


def _variable_headers(variables: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The requesting call's IVR variables for the agent's screen (as a queue call's ring)."""
    out = []
    for name, value in sorted(variables.items()):
        text = inputs.header_value(str(value))
        if text is not None and inputs.header_name_ok(name) and all(c.isalnum() or c in "_-" for c in name):
            out.append((f"X-Ringmaster-Var-{name}", text))
    return tuple(out[:20])


def window_closed_until(schedule: Schedule, override: str | None, now: float) -> float:
    """0.0 if `schedule` (with an operator's override: open, closed or None) is open at
    `now`, else when it next opens (epoch seconds, to the minute, looked for over 8 days),
    or inf (forced closed, or no opening found)."""
    at = datetime.fromtimestamp(now, tz=UTC)
    if evaluate(schedule, at, override)[0]:
        return 0.0
    if override == "closed":
        return float("inf")
    start = now - now % 60 + 60
    for i in range(8 * 24 * 60):
        t = start + i * 60
        if schedule.is_open(datetime.fromtimestamp(t, tz=UTC))[0]:
            return t
    return float("inf")
