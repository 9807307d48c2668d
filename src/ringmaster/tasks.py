"""TaskRouter: chats and emails over MQTT, routed by the ACD engine from each agent's one presence.

The engine decides (which agent, when, how many at once); this module is its MQTT and storage
side for everything that is not a call:
- in: tasks/new, tasks/ID/commands (from the chat or email system), agents/ID/commands (from
  agents' desktops): checked, then fed to the engine; a bad one is answered on `errors` and
  changes nothing;
- out: agents/ID/offers, tasks/ID/events, agents/ID/state (retained), queues/NAME/stats
  (retained), calls/events (screen pops for calls), errors;
- the store: tasks and their task_log, and every agent's login/pause, so a restarted controller
  comes back with the same agents, the same open tasks and the same assignments.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from ringmaster.acd.config import CHANNELS, Channel
from ringmaster.acd.engine import Bridge, CancelRing, QueueLog, Ring, Unroutable
from ringmaster.customers import KeyRefused, parse_key
from ringmaster.mqtt.payloads import AgentCommand, BadPayload, NewTask, TaskCommand, parse

if TYPE_CHECKING:
    from ringmaster.acd.runtime import AcdRuntime
    from ringmaster.calls import CallSession
    from ringmaster.customers import CustomerBook, CustomerContext
    from ringmaster.mqtt.link import MqttLink
    from ringmaster.store import Store

log = structlog.get_logger("ringmaster.tasks")

TASK_EVENTS = {"ENTERQUEUE": "queued", "CONNECT": "assigned", "COMPLETEAGENT": "completed",
               "COMPLETECALLER": "completed", "ABANDON": "cancelled", "TRANSFER": "transferred",
               "RINGNOANSWER": "offer-failed", "RINGCANCELED": "offer-cancelled"}
STATS_INTERVAL = 0.5
KNOWN_IDS = 200_000
STATE_COALESCE = 0.05  # agent states go out at most this late, one message for a burst of changes  # queue stats are published at most this often per queue


def _one_field(text: str) -> str:
    """text as one task_log data field: its `|` would split the queue_log line, and a line break
    the export's line (shown as the Unicode symbols for them)."""
    return text.replace("|", "\u00a6").replace("\r\n", "\n").replace("\n", "\u2424").replace("\r", "\u2424")


CALL_ME = "/call"  # a customer's chat message that asks for a call (docs/outbound.md)


class TaskRouter:
    def __init__(self, acd: AcdRuntime, store: Store, link: MqttLink | None, clock: Any = time.time):
        self.acd = acd
        self.engine = acd.engine
        self.store = store
        self.link = link
        self.clock = clock
        self.errors = 0
        self._agents_dirty: set[str] = set()
        self._queues_dirty: set[str] = set(self.engine.queues)
        self._flush_handle: asyncio.Handle | None = None
        # ids of recent tasks: a tasks/new sent twice (a QoS 1 redelivery) is refused without a
        # store query on the hot path; older ids are asked of the store (see _forgotten)
        self._known: dict[str, None] = {}
        self._forgotten = False  # more tasks exist than _known holds: ask the store too
        self._stats_task: asyncio.Task[None] | None = None
        # told of everything published (topic without prefix, payload), MQTT or not: webhooks
        self.tap: Callable[[str, dict[str, Any]], None] | None = None
        # customers (docs/customers.md): set by the controller; each open task's offer context
        self.customers: CustomerBook | None = None
        self._contexts: dict[str, CustomerContext] = {}
        # calls agents place (docs/outbound.md): set by the controller, Controller.dial and
        # Controller.call_from_task; each returns {"call_id", ...} or {"error": reason}
        self.dial: Callable[[str, str, str], dict[str, Any]] | None = None
        self.call_task: Callable[[str, str | None, str], dict[str, Any]] | None = None
        # chats and emails reach this router by the runtime's dispatch by channel; agents'
        # changes and call events come here for MQTT (presence is stored by acd.presence)
        acd.route_channel(Channel.CHAT, self)
        acd.route_channel(Channel.EMAIL, self)
        acd.listen(self)

    # ------------------------------------------------------------ start and restore

    async def start(self) -> None:
        now = self.clock()
        await self.store.close_task_offers(now)  # offers a crash left open: RINGCANCELED
        presences = await self.acd.presence.restore(now)
        recent = await self.store.recent_task_ids(KNOWN_IDS)
        self._known.update(dict.fromkeys(recent))
        self._forgotten = len(recent) >= KNOWN_IDS
        tasks = await self.store.open_tasks()
        for row in tasks:
            if row["queue"] not in self.engine.queues:
                log.error("tasks.restore_unknown_queue", task=row["task_id"], queue=row["queue"])
                continue
            if self.customers is not None and row.get("customer_key"):
                ctx = await self.customers.context(row["customer_key"], exclude=row["task_id"])
                if ctx is not None:
                    self._contexts[row["task_id"]] = ctx
            self.engine.restore_task(row["task_id"], row["queue"], row["channel"], row["enqueued_at"], now,
                                     priority=row["priority"], skills=row["skills"], due=row["due"], data=row["data"],
                                     agent=row["agent"] if row["state"] == "assigned" else None,
                                     answered_at=row["assigned_at"])
        log.info("tasks.restored", agents=presences, tasks=len(tasks))
        self._agents_dirty.update(self.engine.agents)
        self.acd.apply(self.engine.dispatch(now))
        self.acd.presence.write_unknown()  # the agents the store did not know yet
        if self.link is not None:
            for topic in ("tasks/new", "tasks/+/commands", "agents/+/commands"):
                self.link.subscribe(topic, self.on_message)
            self.link.on_connect = self._republish
            self.link.start()
            self._stats_task = asyncio.create_task(self._stats_loop(), name="queue-stats")
        self._schedule_flush()

    async def stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            await asyncio.gather(self._stats_task, return_exceptions=True)
        # offers in flight end here (RINGCANCELED, and the agents hear offer-cancelled); the
        # tasks themselves are kept and offered anew at the next start
        now = self.clock()
        withdrawn: list[Any] = []
        for task in list(self.engine.tasks.values()):
            if task.channel != "voice" and task.ringing:
                withdrawn += self.engine.withdraw_offers(task.id, now)
        if withdrawn:
            self.acd.apply(withdrawn)
        self._flush()
        if self.link is not None:
            await self.link.stop()

    def _republish(self) -> None:
        """After (re)connecting, the retained state is current again, whatever was missed."""
        self._agents_dirty.update(self.engine.agents)
        self._queues_dirty.update(self.engine.queues)
        self._schedule_flush()

    # ------------------------------------------------------------ MQTT in

    async def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        try:
            if parts == ["tasks", "new"]:
                await self._new_task(parse(NewTask, payload))
            elif len(parts) == 3 and parts[0] == "tasks" and parts[2] == "commands":
                self._task_command(parts[1], parse(TaskCommand, payload))
            elif len(parts) == 3 and parts[0] == "agents" and parts[2] == "commands":
                if parts[1] not in self.engine.agents:
                    raise BadPayload(f"unknown agent {parts[1]!r}")
                self._agent_command(parts[1], parse(AgentCommand, payload))
            # everything else under the prefix is what we publish ourselves (or others' business)
        except BadPayload as exc:
            self.error(topic, str(exc), payload, exc.field)
        except Exception:  # a bug here must not drop the MQTT link (the message would come back)
            log.exception("tasks.message_failed", topic=topic)
            self.error(topic, "internal error: the message was not applied (see the daemon's log)", payload)

    def error(self, topic: str, reason: str, payload: bytes = b"", field: str = "") -> None:
        """Answer a payload that was not applied on `errors`: its topic, the reason, the field
        at fault ("" when it is the topic or the state, not a field) and the payload's start."""
        self.errors += 1
        log.warning("tasks.bad_payload", topic=topic, reason=reason, field=field)
        if self.link is not None:
            self.link.publish("errors", {"topic": self.link.prefix + topic, "error": reason, "field": field,
                                         "payload": payload[:200].decode(errors="replace")})

    async def new_task(self, msg: NewTask) -> str:
        """Create a chat or email task as `tasks/new` does (the API's chat from a call); returns
        its id. BadPayload with the reason when it cannot."""
        return await self._new_task(msg)

    async def _new_task(self, msg: NewTask) -> str:
        if msg.queue not in self.engine.queues:
            raise BadPayload(f"unknown queue {msg.queue!r}; queues: {', '.join(sorted(self.engine.queues))}")
        task_id = msg.id or f"t-{uuid.uuid4().hex[:12]}"
        due = msg.due_epoch()
        if task_id in self.engine.tasks or task_id in self._known:
            raise BadPayload(f"task {task_id!r} exists already")
        if self._forgotten and await self.store.task_exists(task_id):  # older than the ids kept in memory
            raise BadPayload(f"task {task_id!r} exists already")
        key, context = None, None
        if msg.customer is not None and self.customers is not None:
            try:
                key, _ = parse_key(msg.customer, self.customers.cfg.default_country)
            except KeyRefused as exc:
                raise BadPayload(str(exc), "customer") from None
            context = await self.customers.context(key, exclude=task_id)
        if task_id in self.engine.tasks or task_id in self._known:  # it arrived while the store was asked
            raise BadPayload(f"task {task_id!r} exists already")
        now = self.clock()
        self._remember(task_id)
        self.store.task_created(task_id, msg.channel, msg.queue, msg.priority, msg.skills, due, msg.data, now)
        if key is not None and self.customers is not None:
            self.customers.task_key(task_id, key, now)
            if context is not None:
                self._contexts[task_id] = context
        log.info("tasks.new", task=task_id, channel=msg.channel, queue=msg.queue)
        self.acd.apply(self.engine.enqueue(task_id, msg.queue, now, priority=msg.priority, skills=msg.skills,
                                           channel=msg.channel, due=due, data=msg.data))
        return task_id

    def context_of(self, task_id: str) -> CustomerContext | None:
        """The customer context the task's offers carry (None: no customer, or the task ended)."""
        return self._contexts.get(task_id)

    def _task_command(self, task_id: str, msg: TaskCommand) -> None:
        task = self.engine.tasks.get(task_id)
        if task is None or task.channel == "voice":
            raise BadPayload(f"unknown or closed task {task_id!r}")
        now = self.clock()
        if msg.command == "cancel":
            self.acd.apply(self.engine.caller_left(task_id, now))
        elif msg.command == "complete":
            if task.agent is None:
                raise BadPayload(f"task {task_id!r} is not assigned; cancel it instead")
            self.acd.apply(self.engine.call_ended(task_id, "caller", now))
        elif msg.command == "transfer":
            self._transfer(task_id, msg.queue)
        elif msg.command == "message":
            # the customer wrote: to the agent holding the conversation, on its offers topic
            if task.agent is None:
                raise BadPayload(f"task {task_id!r} is not assigned: nobody reads it yet")
            if not msg.text:
                raise BadPayload("message needs text", "text")
            self._message(task_id, task.queue, task.channel, task.agent, "customer", msg.text, msg.name)
            if msg.text.strip().lower() == CALL_ME and task.channel == "chat" and self.call_task is not None:
                # the customer asks to talk: the agent holding the chat is rung, then the
                # customer's number (the outbound rules decide, as for her own `call`)
                result = self.call_task(task_id, None, "customer")
                if result.get("error"):
                    self._task_event(task_id, "call_refused", agent=task.agent, reason=result["error"])

    def _message(self, task_id: str, queue: str, channel: str, agent: str, sender: str, text: str,
                 name: str = "") -> None:
        """One line of a conversation: stored (task_log MESSAGE: sender, text) and sent on, the
        customer's to the agent's offers topic, the agent's to the task's events."""
        now = self.clock()
        self.store.task_event(now, task_id, queue, agent, "MESSAGE", (sender, _one_field(text)), channel)
        payload = {"event": "message", "task": task_id, "from": sender, "text": text, "channel": channel}
        if sender == "customer":
            self._publish(f"agents/{agent}/offers", payload | {"name": name})
        else:
            self._task_event(task_id, "message", **{k: v for k, v in payload.items() if k not in ("event", "task")},
                             agent=agent)

    def agent_command(self, agent: str, msg: AgentCommand) -> None:
        """An agent's command from its desk (ringmaster.desk), checked exactly as one on its MQTT
        topic; BadPayload with the reason when it cannot be applied (nothing changes then)."""
        if agent not in self.engine.agents:
            raise BadPayload(f"unknown agent {agent!r}")
        self._agent_command(agent, msg)

    def _agent_command(self, agent: str, msg: AgentCommand) -> None:
        now = self.clock()
        st = self.engine.agents[agent]
        if msg.command in ("login", "logout", "pause", "unpause"):
            err = self.acd.agent_command(agent, msg.command, msg.reason)
            if err:
                raise BadPayload(err)
            return
        if msg.command == "wrapup-done":
            self.acd.apply(self.engine.wrapup_done(agent, now, msg.channel))
            return
        if msg.command == "wrapup":
            self._wrapup(agent, msg)
            return
        if msg.command == "dial":
            if not msg.number:
                raise BadPayload("dial needs a number", "number")
            result = self.dial(agent, msg.number, "mqtt") if self.dial is not None else {"error": "not available"}
            if result.get("error"):
                raise BadPayload(result["error"], "number")
            return
        if msg.command == "call":
            if not msg.task:
                raise BadPayload("call needs the chat's task id", "task")
            result = (self.call_task(msg.task, agent, "mqtt") if self.call_task is not None
                      else {"error": "not available"})
            if result.get("error"):
                raise BadPayload(result["error"], "task")
            return
        if msg.command == "transfer" and (msg.flow or msg.agent or msg.external or msg.action or not msg.task
                                          or st.holding.get(msg.task) == "voice"):
            self._transfer_call(agent, msg)
            return
        if not msg.task:
            raise BadPayload(f"{msg.command} needs a task")
        channel = st.offered.get(msg.task) or st.holding.get(msg.task)
        if channel == "voice":
            raise BadPayload(f"task {msg.task!r} is a call: answer or hang up on the phone")
        if msg.command in ("accept", "reject"):
            if msg.task not in st.offered:
                raise BadPayload(f"task {msg.task!r} is not offered to agent {agent!r}")
            if msg.command == "accept":
                self.acd.apply(self.engine.ring_answered(msg.task, agent, now))
            else:
                self.acd.apply(self.engine.ring_failed(msg.task, agent, now, "rejected"))
        elif msg.command in ("complete", "transfer", "reply"):
            if msg.task not in st.holding:
                raise BadPayload(f"task {msg.task!r} is not held by agent {agent!r}")
            task = self.engine.tasks[msg.task]
            if msg.command == "reply":
                if not msg.text:
                    raise BadPayload("reply needs text", "text")
                self._message(msg.task, task.queue, task.channel, agent, "agent", msg.text)
            elif msg.command == "complete":
                if (msg.code or msg.notes) and self.customers is not None:
                    self._wrapup(agent, msg)  # checked first: a refused code completes nothing
                elif (problem := msg.wrapup_problem()) is not None:
                    raise BadPayload(problem[1], problem[0])
                if msg.code or msg.notes:  # the agent's wrap-up, kept with the task's events
                    self.store.task_event(now, msg.task, task.queue, agent, "WRAPUP",
                                          (_one_field(msg.code or ""), _one_field(msg.notes or "")), task.channel)
                    self._task_event(msg.task, "wrapup", agent=agent, code=msg.code, notes=msg.notes,
                                     channel=task.channel)
                self.acd.apply(self.engine.call_ended(msg.task, "agent", now))
            else:
                self._transfer(msg.task, msg.queue)

    def _wrapup(self, agent: str, msg: AgentCommand) -> None:
        """A wrap-up code and/or notes for the agent's task (default: its latest)."""
        if self.customers is None:
            raise BadPayload("wrap-up codes need a customers section in the config")
        try:
            self.customers.wrapup(agent, msg.task, msg.code, msg.notes, "mqtt")
        except KeyRefused as exc:
            raise BadPayload(str(exc), exc.field) from None

    def _remember(self, task_id: str) -> None:
        self._known[task_id] = None
        if len(self._known) > KNOWN_IDS:
            del self._known[next(iter(self._known))]
            self._forgotten = True

    def _transfer_call(self, agent: str, msg: AgentCommand) -> None:
        """A transfer of the call the agent talks to: blind (AcdRuntime.blind_transfer) to
        `queue`, `agent`, `flow` or `external` (exactly one), or attended (`mode: attended`, to
        `agent` or `external`: a consult, acd/consult.py) and then `action` complete or cancel;
        task, if given, must be that call's id."""
        if msg.action is not None:
            done = self.acd.consults.finish(agent, msg.action, "mqtt")
            if done.get("error"):
                raise BadPayload(done["error"], "action")
            return
        if sum(bool(x) for x in (msg.queue, msg.agent, msg.flow, msg.external)) != 1:
            raise BadPayload("transfer of a call needs exactly one of queue, agent, flow or external", "queue")
        q = self.acd.agent_call(agent)
        if q is None or (msg.task and msg.task != q.session.call_id):
            raise BadPayload(f"agent {agent!r} is not connected to " + (f"call {msg.task!r}" if msg.task else "a call"),
                             "task")
        kind, target = (("queue", msg.queue) if msg.queue else ("agent", msg.agent) if msg.agent
                        else ("external", msg.external) if msg.external else ("flow", msg.flow or ""))
        if msg.mode == "attended":
            result = self.acd.consults.start(agent, kind, target, "mqtt")
        else:
            result = self.acd.blind_transfer(agent, kind, target, "mqtt")
        if result.get("error"):
            raise BadPayload(result["error"], kind)

    def _transfer(self, task_id: str, queue: str | None) -> None:
        if not queue or queue not in self.engine.queues:
            raise BadPayload(f"transfer needs a known queue, not {queue!r}; queues: {', '.join(sorted(self.engine.queues))}")
        self.acd.apply(self.engine.transfer(task_id, queue, self.clock()))

    # ------------------------------------------------------------ engine actions (chat and email)

    def apply(self, a: Ring | CancelRing | Bridge | QueueLog) -> None:
        if isinstance(a, QueueLog):
            if a.call_id != "NONE":
                self.store.task_event(a.at, a.call_id, a.queue, a.agent, a.event, a.data, a.channel)
                self._task_event(a.call_id, TASK_EVENTS.get(a.event, a.event.lower()), queue=a.queue,
                                 agent=None if a.agent == "NONE" else a.agent, channel=a.channel)
            self._queues_dirty.add(a.queue)
            if a.event in ("COMPLETEAGENT", "COMPLETECALLER", "ABANDON"):
                self._contexts.pop(a.call_id, None)
            return
        task = self.engine.tasks.get(a.call_id)
        context = self._contexts.get(a.call_id)
        customer = {"customer": context.view()} if context is not None else {}
        if isinstance(a, Ring):
            data = task.data if task is not None else {}
            for agent in a.agents:
                self._publish(f"agents/{agent}/offers", {
                    "event": "offer", "task": a.call_id, "channel": a.channel, "queue": a.queue,
                    "timeout": a.timeout, "expires_at": round(self.clock() + a.timeout, 3), "data": data,
                    **customer})
            self.store.task_offered(a.call_id, a.agents, a.queue, a.channel, self.clock())
            self._task_event(a.call_id, "offered", queue=a.queue, agents=list(a.agents), channel=a.channel)
        elif isinstance(a, CancelRing):
            for agent in a.agents:
                self._publish(f"agents/{agent}/offers", {"event": "offer-cancelled", "task": a.call_id,
                                                         "channel": a.channel})
        elif isinstance(a, Bridge):
            self._publish(f"agents/{a.agent}/offers", {"event": "assigned", "task": a.call_id, "channel": a.channel,
                                                       "queue": task.queue if task else "",
                                                       "data": task.data if task else {}, **customer})

    def unroutable(self, a: Unroutable, text: str) -> None:
        """A task (or call) that no logged-in agent can take: on `errors` and, for a chat or
        email, in its events and its stored log; "" reason: it can be offered again."""
        if a.reason:  # not counted in `errors` (refused messages): the task itself was taken
            self._publish("errors", {"topic": f"{self._prefix()}tasks/{a.call_id}", "error": text,
                                     "field": "", "reason": a.reason, "task": a.call_id, "queue": a.queue,
                                     "channel": a.channel})
        if a.channel == "voice":  # the call's own event stream (screen pops, CRM) says it too
            self._publish("calls/events", {"event": "unroutable" if a.reason else "routable", "call_id": a.call_id,
                                           "queue": a.queue, "reason": a.reason or None, "detail": text or None})
        else:
            self._task_event(a.call_id, "unroutable" if a.reason else "routable", queue=a.queue,
                             reason=a.reason or None, detail=text or None, channel=a.channel)
            self.store.task_event(self.clock(), a.call_id, a.queue, "NONE",
                                  "UNROUTABLE" if a.reason else "ROUTABLE", (a.reason,) if a.reason else (), a.channel)

    def _prefix(self) -> str:
        return self.link.prefix if self.link is not None else ""

    def agent_changed(self, agent: str) -> None:
        if agent not in self.engine.agents:
            return  # a reload removed the agent
        self._agents_dirty.add(agent)
        self._queues_dirty.update(self.engine.by_agent.get(agent, ()))
        self._schedule_flush()

    def call_event(self, event: str, session: CallSession, queue: str, **extra: Any) -> None:
        """calls/events: offered, answered, ended, with the IVR's variables (screen pops, CRM)."""
        variables = dict(session.run.variables) if session.run is not None else {}
        payload = {"event": event, "call_id": session.call_id, "queue": queue, "caller": session.caller,
                   "variables": variables, **extra}
        if session.customer is not None:  # the screen pop: who, and what happened before
            payload["customer"] = session.customer.view() if event != "ended" else {"key": session.customer.key}
        self._publish("calls/events", payload)

    def outbound_event(self, event: str, call: Any) -> None:
        """calls/events of a call an agent places (docs/outbound.md): outbound_started,
        outbound_ended (with its disposition)."""
        payload = {"event": f"outbound_{event}", "call_id": call.call_id, "agent": call.agent,
                   "number": call.number, "direction": "outbound", "via": call.via, "task": call.task_ref or None}
        if event == "ended" and call._result is not None:
            payload["disposition"] = call._result[0]
        self._publish("calls/events", payload)

    def task_call(self, task_id: str, queue: str, channel: str, agent: str, call_id: str, number: str) -> None:
        """The agent calls the customer of the chat `task_id`: a CALL event in the task's log and
        on its events topic, linking the two (the call's record carries the task's id)."""
        self.store.task_event(self.clock(), task_id, queue, agent, "CALL", (call_id, number), channel)
        self._task_event(task_id, "call", agent=agent, call_id=call_id, number=number)
    def agent_notice(self, agent: str, payload: dict[str, Any]) -> None:
        """A message for one agent's desk on agents/ID/offers (e.g. a supervisor joined her call)."""
        self._publish(f"agents/{agent}/offers", payload)


    def publish_call_event(self, payload: dict[str, Any]) -> None:
        """calls/events for what is not a CallSession's (a queued callback's offer and steps)."""
        self._publish("calls/events", payload)

    # ------------------------------------------------------------ out

    def _publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        if self.tap is not None:
            self.tap(topic, payload)
        if self.link is not None:
            self.link.publish(topic, payload, retain)

    def _task_event(self, task_id: str, event: str, **fields: Any) -> None:
        self._publish(f"tasks/{task_id}/events", {"event": event, "task": task_id, **fields})

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            try:
                self._flush_handle = asyncio.get_running_loop().call_later(STATE_COALESCE, self._flush)
            except RuntimeError:
                pass

    def _flush(self) -> None:
        """Agent states, once per burst of changes: an offer, its accept and the next offer within
        50 ms are one state message (offers themselves go out at once on the offers topic)."""
        self._flush_handle = None
        dirty, self._agents_dirty = self._agents_dirty, set()
        for agent in sorted(dirty & set(self.engine.agents)):  # a reload may have removed some
            self._publish(f"agents/{agent}/state", self.agent_state(agent), retain=True)

    def agent_state(self, agent: str) -> dict[str, Any]:
        st = self.engine.agents[agent]
        now = self.clock()
        status = "logged-out" if not st.logged_in else "paused" if st.paused is not None else "available"
        return {"agent": agent, "status": status, "reason": st.paused, "policy": st.presence.policy,
                "registered": st.registered, "summary": st.status(now), "channels": st.channel_states(now)}

    def queue_stats(self, queue: str) -> dict[str, Any]:
        q = self.engine.queues[queue]
        now = self.clock()
        members = [self.engine.agents[m.agent] for m in q.spec.members]
        waiting = {ch: 0 for ch in CHANNELS}
        longest = {ch: 0.0 for ch in CHANNELS}
        for t in q.waiting:
            waiting[t.channel] += 1
            longest[t.channel] = max(longest[t.channel], round(now - t.enqueued_at, 1))
        return {"queue": queue, "waiting": waiting, "longest_wait": longest,
                "agents": {"logged_in": sum(a.logged_in for a in members),
                           "paused": sum(a.logged_in and a.paused is not None for a in members),
                           "available": {ch: sum(a.can_take(ch, now) for a in members) for ch in CHANNELS},
                           "busy": {ch: sum(ch in a.holding.values() for a in members) for ch in CHANNELS},
                           "wrapup": {ch: sum(a.in_wrapup(ch, now) for a in members) for ch in CHANNELS}},
                "calls": {"answered": q.answered, "abandoned": q.abandoned, "answered_in_sl": q.answered_in_sl,
                          "transferred": q.transferred}}

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            dirty, self._queues_dirty = self._queues_dirty, set()
            for queue in sorted(dirty & set(self.engine.queues)):  # a reload may have removed some
                self._publish(f"queues/{queue}/stats", self.queue_stats(queue), retain=True)
