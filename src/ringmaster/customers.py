"""Customers: the key each interaction carries, the context every offer shows, and wrap-up.

- Keys (`parse_key`, `caller_key`): a phone number in E.164 (+4520123456; caller IDs in
  national form take `customers.default_country`, parsed by Google's libphonenumber rules, the
  `phonenumbers` package), an email address (lower case), or an account/customer id (the
  CRM's: collected in the IVR or mapped from an `http` lookup into `customers.key_var`, or a
  task's `customer` field). A key belongs to one customer; a customer may have many keys
  (numbers, addresses, accounts); an admin merges two customers into one.
- CustomerBook: the daemon's side. It writes through the store (the one writer) and reads
  through ringmaster.reports.customers in a ReportReader thread of its own, so an offer's
  context never blocks the event loop; a read slower than CONTEXT_TIMEOUT is given up (the offer
  goes out without history) rather than keep a caller or chat waiting.
- Wrap-up: an agent gives the task it just finished a code (from `customers.wrapup_codes`)
  and notes, by MQTT, the API, or keying the code's digits on the phone while the line stays
  open after the caller hung up (`wrapup_dtmf`). `CustomerBook.wrapup` is the one place a
  wrap-up happens: it validates, stores, publishes and tells `listeners` (a webhook outbox).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers
import structlog

from ringmaster import inputs, prompts
from ringmaster import protocol as p
from ringmaster.reports import customers as reads
from ringmaster.reports.reader import ReportReader, StoreUnreadable

if TYPE_CHECKING:
    from ringmaster.calls import CallSession
    from ringmaster.config import CustomersConfig
    from ringmaster.store import Store

log = structlog.get_logger("ringmaster.customers")

KEY_MAX = 254  # an email address's longest (RFC 5321 4.5.3.1.3 path, less the brackets)
ID_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
EMAIL_KEY = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z0-9-]{2,63}$")
CONTEXT_TIMEOUT = 0.5  # seconds an offer waits for the customer's history at most
RECENT_TASKS = 20  # per agent: the tasks it may still wrap up (newest first)
NOTES_SHOWN = 200  # characters of each interaction's notes in an offer (the API shows all)
MERGE_WAIT = 2.0  # seconds a merge waits for its commit before it answers "stored": false
LINE_TRIES = 3  # wrong codes keyed on the phone before the wrap-up line is hung up


class KeyRefused(ValueError):
    """A customer key (or a wrap-up) that cannot be taken; str() says why, `field` which field
    of a wrap-up is at fault (code, notes, task; "" for a key)."""

    def __init__(self, reason: str, field: str = ""):
        super().__init__(reason)
        self.field = field


def _e164(number: phonenumbers.PhoneNumber) -> str | None:
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_key(raw: str, country: str | None) -> str | None:
    """raw as an E.164 number ('+4520123456'), or None if it is not a valid phone number.
    National numbers need `country`; digits that are not valid there are tried once more as an
    international number without its '+' (trunks often send 4520123456)."""
    if not raw or len(raw) > 40:
        return None
    try:
        number = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException:
        number = None
    found = _e164(number) if number is not None else None
    digits = raw.lstrip("+")
    if found is None and digits.isdigit() and not raw.startswith("+"):
        try:
            found = _e164(phonenumbers.parse("+" + digits, None))
        except phonenumbers.NumberParseException:
            found = None
    return found


def caller_key(caller: str, country: str | None) -> str | None:
    """A caller ID's customer key: its E.164 number, or None (withheld, an extension, a name)."""
    return phone_key(caller, country)


def parse_key(raw: Any, country: str | None) -> tuple[str, str]:
    """(key, kind) of what a task, the API or the CLI names a customer by; KeyRefused with the
    reason otherwise. '+...' or 'tel:...' is a phone number (national with `country`), a value
    with '@' an email address, anything else an id (letters, digits, _ . : -, at most 100)."""
    if not isinstance(raw, str) or not raw.strip():
        raise KeyRefused("a customer key: +E.164 number, tel:NUMBER, an email address or an id")
    if len(raw) > KEY_MAX:
        raise KeyRefused(f"a customer key is at most {KEY_MAX} characters, not {len(raw)}")
    if not raw.isprintable():
        raise KeyRefused("a customer key has no control characters")
    text = raw.strip()
    if text.startswith(("+", "tel:")):
        number = phone_key(text.removeprefix("tel:"), country)
        if number is None:
            where = f" (national numbers are read as {country})" if country else " (give it as +CC...)"
            raise KeyRefused(f"{text[:60]!r} is not a valid phone number{where}")
        return number, "phone"
    if "@" in text:
        if not EMAIL_KEY.match(text):
            raise KeyRefused(f"{text[:60]!r} is not an email address")
        return text.lower(), "email"
    if not ID_KEY.match(text):
        raise KeyRefused(f"{text[:60]!r}: an id is letters, digits, _ . : - (at most 100); "
                         "a number starts with + or tel:")
    return text, "id"


def key_kind(key: str) -> str:
    return "phone" if key.startswith("+") else "email" if "@" in key else "id"


@dataclass(frozen=True)
class CustomerContext:
    """What an offer shows of its customer: the key it came with, the customer's id, name and
    tier when known, and its last interactions (newest first, the offered one left out)."""

    key: str
    id: str | None = None
    name: str | None = None
    tier: str | None = None
    history: tuple[dict[str, Any], ...] = ()

    def view(self) -> dict[str, Any]:
        """For MQTT (offers, calls/events): notes cut to NOTES_SHOWN characters."""
        hist = [{**h, "notes": h["notes"][:NOTES_SHOWN] if h.get("notes") else h.get("notes")} for h in self.history]
        return {"key": self.key, "id": self.id, "name": self.name, "tier": self.tier, "history": hist}

    def headers(self, max_bytes: int) -> tuple[tuple[str, str], ...]:
        """X-Ringmaster-Customer (key), -Name, -Tier, -History for the agent leg's INVITE.
        History is '; '-separated 'TIME CHANNEL QUEUE AGENT DISPOSITION CODE' entries, newest
        first, as many as fit in max_bytes (notes never go into SIP: free text, any size)."""
        out = [("X-Ringmaster-Customer", self.key)]
        for name, value in (("Name", self.name), ("Tier", self.tier)):
            text = inputs.header_value(value, 64) if value else None
            if text:
                out.append((f"X-Ringmaster-Customer-{name}", text))
        entries: list[str] = []
        used = 0
        for h in self.history:
            at = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(h["at"]))
            words = [at, h["channel"], h.get("queue") or "-", h.get("agent") or "-", h.get("disposition") or "-",
                     h.get("code") or "-"]
            entry = " ".join(inputs.file_name_part(str(w), 40) for w in words)
            if used + len(entry) + 2 > max_bytes:
                break
            entries.append(entry)
            used += len(entry) + 2
        if entries:
            out.append(("X-Ringmaster-Customer-History", "; ".join(entries)))
        return tuple(out)


@dataclass(frozen=True)
class WrapUp:
    """One wrap-up as it was stored: kind call|task, ref (call or task id), channel, agent,
    code and notes (None: left as it was), via mqtt|api|dtmf|cli, at (epoch seconds)."""

    kind: str
    ref: str
    channel: str
    agent: str
    code: str | None
    notes: str | None
    via: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ref": self.ref, "channel": self.channel, "agent": self.agent,
                "code": self.code, "notes": self.notes, "via": self.via, "at": round(self.at, 3)}


@dataclass
class _Line:
    """An agent's phone kept up after the caller hung up, for a wrap-up code by DTMF."""

    session: CallSession
    agent: str
    leg: str
    collect_id: str = ""
    tries: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class CustomerBook:
    """The daemon's customers: keys of calls and tasks, offer context, wrap-ups and merges.

    cfg: the `customers` section; store: the writer; db_path: the store's file (read through
    ringmaster.reports in a thread of its own); prompts_dir: where `wrapup_prompt` is;
    publish(topic, payload): MQTT (None: no broker)."""

    cfg: CustomersConfig
    store: Store
    db_path: str
    prompts_dir: str = "prompts"
    publish: Callable[[str, dict[str, Any]], None] | None = None
    topic_prefix: str = ""  # MQTT's, for the topic an `errors` message names
    # told of every wrap-up, after it is stored (e.g. a webhook outbox: "task wrapped up")
    listeners: list[Callable[[WrapUp], None]] = field(default_factory=list)
    reader: ReportReader | None = None
    # agent -> its latest tasks (ref, channel), newest last: what it may wrap up
    recent: dict[str, deque[tuple[str, str]]] = field(default_factory=dict)
    lines: dict[str, _Line] = field(default_factory=dict)
    wrapups: int = 0

    async def start(self) -> None:
        self.reader = ReportReader(self.db_path)

    async def stop(self) -> None:
        # the daemon stops its workers first, and they hang up every leg they hold
        for line in self.lines.values():
            if line.timer is not None:
                line.timer.cancel()
        self.lines.clear()
        if self.reader is not None:
            await asyncio.to_thread(self.reader.close)

    # ------------------------------------------------------------ keys of calls and tasks

    def key_for_call(self, session: CallSession) -> str | None:
        """The account in `key_var` when the flow has one that is a valid id, else the caller's
        E.164 number, else None."""
        variables = session.run.variables if session.run is not None else {}
        if self.cfg.key_var and variables.get(self.cfg.key_var) not in (None, ""):
            account = str(variables[self.cfg.key_var])
            if ID_KEY.match(account):
                return account
            session.log.warning("customer.key_refused", variable=self.cfg.key_var, value=account[:40])
        return caller_key(session.caller, self.cfg.default_country)

    def call_identified(self, session: CallSession) -> str | None:
        """Record the call's customer (at arrival, when it enters a queue, when it ends): its
        key, and name/tier from the flow's variables. Returns the key."""
        key = self.key_for_call(session)
        now = time.time()
        if key is not None and key != session.customer_key:
            self.store.customer_seen(key, key_kind(key), now)
            self.store.call_customer(session.call_id, key)
            session.customer_key = key
            session.log.info("customer.identified", customer=key)
        if key is not None and session.run is not None:
            name = self._variable(session, self.cfg.name_var)
            tier = self._variable(session, self.cfg.tier_var)
            if name or tier:
                self.store.customer_details(key, name, tier, now)
        return key

    @staticmethod
    def _variable(session: CallSession, name: str | None) -> str | None:
        if not name or session.run is None:
            return None
        value = session.run.variables.get(name)
        text = inputs.header_value(str(value), 64) if value not in (None, "") else None
        return text or None

    async def call_context(self, session: CallSession) -> CustomerContext | None:
        """The call's customer recorded, and its context for the offer: what the flow just
        learned (name, tier from a lookup) over what is stored."""
        key = self.call_identified(session)
        ctx = await self.context(key, exclude=session.call_id)
        if ctx is None:
            return None
        name, tier = self._variable(session, self.cfg.name_var), self._variable(session, self.cfg.tier_var)
        return replace(ctx, name=name or ctx.name, tier=tier or ctx.tier)

    def task_key(self, task_id: str, raw: Any, at: float) -> str:
        """Record a task's `customer` (KeyRefused if it is not a key); returns the key."""
        key, kind = parse_key(raw, self.cfg.default_country)
        self.store.customer_seen(key, kind, at)
        self.store.task_customer(task_id, key)
        return key

    async def context(self, key: str | None, exclude: str = "") -> CustomerContext | None:
        """The offer's context of `key` (None: no customer). A store that cannot be read, or
        answers later than CONTEXT_TIMEOUT, gives the key alone (logged)."""
        if key is None:
            return None
        if self.reader is None or self.cfg.history == 0:
            return CustomerContext(key)
        try:
            found = await asyncio.wait_for(self.reader.run(reads.customer, key, self.cfg.history, exclude),
                                           CONTEXT_TIMEOUT)
        except (TimeoutError, StoreUnreadable) as exc:
            log.warning("customer.context_unavailable", customer=key, error=str(exc) or "timeout")
            return CustomerContext(key)
        if found is None:  # a first contact: its row is on its way to the store
            return CustomerContext(key)
        return CustomerContext(key, found["id"], found["name"], found["tier"], tuple(found["history"]))

    async def show(self, raw: Any) -> dict[str, Any] | None:
        """The whole record of the customer `raw` names (KeyRefused for a bad key), or None."""
        key, _ = parse_key(raw, self.cfg.default_country)
        assert self.reader is not None
        return await self.reader.run(reads.customer, key)

    async def merge(self, raw_from: Any, raw_into: Any, by: str) -> dict[str, Any]:
        """Merge the customer of raw_from into the customer of raw_into: {"merged": from id,
        "into": into id, "keys": [...]}, or {"error": reason, "code": 400|404|409}."""
        try:
            from_key, _ = parse_key(raw_from, self.cfg.default_country)
            into_key, _ = parse_key(raw_into, self.cfg.default_country)
        except KeyRefused as exc:
            return {"error": str(exc), "code": 400}
        assert self.reader is not None
        from_id = await self.reader.run(reads.customer_id, from_key)
        into_id = await self.reader.run(reads.customer_id, into_key)
        for key, cid in ((from_key, from_id), (into_key, into_id)):
            if cid is None:
                return {"error": f"no customer has the key {key!r}", "code": 404}
        if from_id == into_id:
            return {"error": f"{from_key!r} and {into_key!r} are the same customer ({into_id})", "code": 409}
        assert from_id is not None and into_id is not None
        self.store.customers_merged(from_id, into_id, time.time(), by)
        log.info("customer.merged", merged=from_id, into=into_id, by=by)
        stored = True
        try:  # a failing store keeps the merge and writes it when it recovers: say so, do not hang
            await asyncio.wait_for(asyncio.shield(self.store.flush()), MERGE_WAIT)
        except TimeoutError:
            stored = False
        return {"merged": from_id, "into": into_id, "from_key": from_key, "into_key": into_key, "stored": stored}

    # ------------------------------------------------------------ wrap-up

    def assigned(self, agent: str, ref: str, channel: str) -> None:
        """The agent took this call or task: it may wrap it up from now on."""
        recent = self.recent.setdefault(agent, deque(maxlen=RECENT_TASKS))
        recent.append((ref, channel))

    def wrapup(self, agent: str, ref: str | None, code: str | None, notes: str | None,
               via: str) -> WrapUp:
        """Give the agent's task `ref` (None: its latest) a code and/or notes. KeyRefused with
        the reason (an unknown code, notes too long, a task that is not one of the agent's last
        RECENT_TASKS); nothing is stored then."""
        codes = self.cfg.wrapup_codes
        if code is None and notes is None:
            raise KeyRefused("a wrap-up needs a code, notes or both", "code")
        if code is not None and code not in codes:
            known = ", ".join(sorted(codes)) or "none configured"
            raise KeyRefused(f"unknown wrap-up code {code[:64]!r}; codes: {known}", "code")
        if notes is not None:
            if len(notes) > self.cfg.notes_max:
                raise KeyRefused(f"notes are at most {self.cfg.notes_max} characters, not {len(notes)}", "notes")
            if any(not (c.isprintable() or c in "\n\t") for c in notes):
                raise KeyRefused("notes: printable text (new lines and tabs allowed), no control characters", "notes")
        recent = self.recent.get(agent) or deque()
        if ref is None:
            if not recent:
                raise KeyRefused(f"agent {agent!r} has no task to wrap up", "task")
            ref, channel = recent[-1]
        else:
            found = next((c for r, c in recent if r == ref), None)
            if found is None:
                raise KeyRefused(f"{ref[:100]!r} is not one of agent {agent!r}'s last {RECENT_TASKS} tasks", "task")
            channel = found
        w = WrapUp("call" if channel == "voice" else "task", ref, channel, agent, code, notes, via, time.time())
        self.store.wrapup(w.kind, w.ref, agent, code, notes, w.at)
        if w.kind == "call":
            self.store.event(ref, "WRAPUP", w.at, agent=agent, code=code, via=via)
        self.wrapups += 1
        log.info("customer.wrapup", agent=agent, task=ref, channel=channel, code=code,
                 notes=len(notes) if notes is not None else None, via=via)
        if self.publish is not None:
            payload = {"event": "wrapup", "agent": agent, "channel": channel, "code": code, "notes": notes, "via": via}
            if w.kind == "call":
                self.publish("calls/events", {**payload, "call_id": ref})
            else:
                self.publish(f"tasks/{ref}/events", {**payload, "task": ref})
        for listener in self.listeners:
            try:
                listener(w)
            except Exception:  # a listener's bug must not undo the agent's wrap-up
                log.exception("customer.wrapup_listener_failed", task=ref)
        return w

    # ------------------------------------------------------------ wrap-up by the phone's keys

    def open_line(self, session: CallSession, agent: str, leg: str) -> bool:
        """The caller hung up a connected call: keep the agent's leg up for a code keyed on
        the phone (`wrapup_dtmf`), prompt the agent and collect digits up to '#'. False (the
        caller hangs the leg up as before) when DTMF wrap-up is off or no code has digits."""
        if not self.cfg.wrapup_dtmf or not any(c.digits for c in self.cfg.wrapup_codes.values()):
            return False
        if session.hangup is not None or session.ended:
            return False  # ended by us (a shutdown, the flow) or its worker died: no line to keep
        line = _Line(session, agent, leg)
        self.lines[leg] = line
        session.wrapup_leg = leg
        prompt = Path(self.prompts_dir) / f"{self.cfg.wrapup_prompt}.wav"
        if prompt.is_file():
            session.send(session.worker, p.Play(leg=leg, files=prompts.playable((str(prompt),)),
                                                play_id=f"{leg}-wrapup", barge_in=True))
        else:
            session.log.warning("customer.wrapup_prompt_missing", path=str(prompt))
        self._collect(line, flush=True)
        line.timer = asyncio.get_running_loop().call_later(self.cfg.wrapup_seconds + 2.0, self._close_line, line)
        session.log.info("customer.wrapup_line", agent=agent, agent_leg=leg)
        return True

    def _collect(self, line: _Line, flush: bool = False) -> None:
        line.collect_id = f"{line.leg}-wc{line.tries}"
        longest = max(len(c.digits or "") for c in self.cfg.wrapup_codes.values())
        line.session.send(line.session.worker, p.CollectDigits(
            leg=line.leg, collect_id=line.collect_id, max_digits=longest + 1, terminators="#",
            first_timeout=self.cfg.wrapup_seconds, inter_digit_timeout=3.0, flush=flush))

    def line_event(self, session: CallSession, msg: p.Message) -> None:
        """A worker event of a wrap-up line (CallSession routes them here)."""
        leg = getattr(msg, "leg", "")
        line = self.lines.get(leg)
        if line is None:
            return
        if isinstance(msg, p.CallState) and msg.state == "disconnected":
            self.lines.pop(leg, None)
            if line.timer is not None:
                line.timer.cancel()
            if session.wrapup_leg == leg:
                session.wrapup_leg = ""
        elif isinstance(msg, p.DigitsCollected) and msg.collect_id == line.collect_id:
            digits = inputs.dtmf_digits(msg.digits).rstrip("#")
            if not digits:
                self._close_line(line)  # nothing keyed in time
                return
            code = next((n for n, c in self.cfg.wrapup_codes.items() if c.digits == digits), None)
            if code is None:
                line.tries += 1
                reason = (f"no wrap-up code has the digits {digits[:10]}; codes: "
                          + ", ".join(f"{c.digits}={n}" for n, c in sorted(self.cfg.wrapup_codes.items()) if c.digits))
                session.log.warning("customer.wrapup_refused", agent=line.agent, via="dtmf", reason=reason)
                if self.publish is not None:
                    self.publish("errors", {"topic": f"{self.topic_prefix}agents/{line.agent}/dtmf", "error": reason, "field": "code",
                                            "agent": line.agent, "call_id": session.call_id})
                if line.tries >= LINE_TRIES:
                    self._close_line(line)
                else:
                    self._collect(line, flush=True)
                return
            try:
                self.wrapup(line.agent, session.call_id, code, None, "dtmf")
            except KeyRefused as exc:
                session.log.warning("customer.wrapup_refused", agent=line.agent, via="dtmf", reason=str(exc))
            self._close_line(line)

    def _close_line(self, line: _Line) -> None:
        """Hang the line up; it is forgotten at once (the worker's report of its end is not
        waited for: a dead worker sends none)."""
        if line.timer is not None:
            line.timer.cancel()
            line.timer = None
        if self.lines.pop(line.leg, None) is not None:
            if line.session.wrapup_leg == line.leg:
                line.session.wrapup_leg = ""
            line.session.hangup_leg(line.leg)
