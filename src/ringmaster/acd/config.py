"""Queue and agent configuration (the `agents:` and `queues:` sections of the YAML).

Option names follow Asterisk app_queue / FreeSWITCH mod_callcenter where users know them:
ring timeout, retry, wrapup, max wait, join-empty, leave-when-empty, auto-pause.
"""

from __future__ import annotations

import string
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Channel(StrEnum):
    """How a task reaches an agent. A StrEnum: a member equals its value ("voice"), so stored
    rows, MQTT payloads and config keys stay plain strings."""

    VOICE = "voice"
    CHAT = "chat"
    EMAIL = "email"


CHANNELS: tuple[str, ...] = tuple(Channel)  # typed str: code and stored rows compare plain strings
RECORDING_FIELDS = ("queue", "date", "call_id", "agent", "caller")
STRATEGY_NAMES = ("ring-all", "linear", "round-robin", "longest-idle", "fewest-calls", "least-talk-time", "random")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Softphone(_Strict):
    """An agent on a SIP phone registered at the edge with digest auth."""

    username: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=6)


class PresenceProfile(_Strict):
    """How much an agent takes at once, per channel, and whether channels may mix."""

    policy: Literal["exclusive", "concurrent"] = Field(
        default="exclusive",
        description="exclusive: one channel at a time (no chat during a call, no call while holding a chat); "
                    "concurrent: chats and emails beside a call (voice is always at most one)")
    capacity: dict[str, int] = Field(
        default_factory=lambda: {"chat": 1, "email": 1},
        description="tasks at once per channel (voice is always 1)")
    wrapup: dict[str, float] = Field(default_factory=dict, description="seconds of wrap-up after a task, per channel")

    def capacity_of(self, channel: str) -> int:
        return self.capacity.get(channel, 0)

    def wrapup_of(self, channel: str) -> float:
        return self.wrapup.get(channel, 0.0)

    @field_validator("wrapup")
    @classmethod
    def _wrapup(cls, v: dict[str, float]) -> dict[str, float]:
        for ch, t in v.items():
            if ch not in CHANNELS:
                raise ValueError(f"unknown channel {ch!r}: voice, chat or email")
            if not 0 <= t <= 3600:
                raise ValueError(f"wrap-up of {ch} must be 0-3600 seconds, not {t}")
        return v

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, v: dict[str, int]) -> dict[str, int]:
        for ch, n in v.items():
            if ch not in ("chat", "email"):
                raise ValueError(f"capacity is set for chat and email (voice is always 1), not {ch!r}")
            if not 0 <= n <= 50:
                raise ValueError(f"capacity of {ch} must be 0-50, not {n}")
        return v


class AgentConfig(_Strict):
    name: str = ""
    softphone: Softphone | None = None
    mobile: str | None = Field(default=None, pattern=r"^\+?[0-9]{3,20}$", description="reached through the mobile trunk")
    skills: dict[str, int] = Field(default_factory=dict, description="skill -> level 1-10")
    caller_id: str | None = Field(default=None, pattern=r"^\+?[0-9]{2,20}$",
                                  description="the number this agent's outbound calls present (rules with caller_id: agent)")
    auto_login: bool = Field(default=True, description="a static member: logged in whenever reachable (softphone registered)")
    profile: str | None = Field(default=None, description="a presence profile from `profiles:` (default: the profile named default)")
    presence: PresenceProfile | None = Field(default=None, description="this agent's own presence settings")
    mqtt_password: str | None = Field(default=None, min_length=8, pattern=r"^[^\x00-\x1f\x7f]+$",
                                      description="the agent's MQTT password (user name: the agent's id) for the embedded broker")
    confirm_answer: bool | None = Field(
        default=None, description="a queue call this agent answers is bridged only after the agent presses 1 "
                                  "(a mobile whose voicemail answers counts as no answer); default: the queue's")
    desk_password: str | None = Field(default=None, min_length=8, pattern=r"^[^\x00-\x1f\x7f]+$",
                                      description="the agent's password at the desk (http.desk); default: the "
                                                  "softphone's SIP password")

    @model_validator(mode="after")
    def _reachable(self) -> AgentConfig:
        if (self.softphone is None) == (self.mobile is None):
            raise ValueError("an agent has exactly one of softphone (registers at the edge) or mobile (a number)")
        return self


class Member(_Strict):
    agent: str
    tier: int = Field(default=1, ge=1, le=9, description="tier 1 rings first; later tiers after tier_wait")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        return {"agent": v} if isinstance(v, str) else v


class Overflow(_Strict):
    """Where a caller goes when the queue cannot serve them: another queue, or a flow."""

    queue: str | None = None
    flow: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Overflow:
        if (self.queue is None) == (self.flow is None):
            raise ValueError("overflow goes to exactly one of queue or flow")
        return self


class AutoPause(_Strict):
    after: int = Field(default=3, ge=1, le=20, description="unanswered offers in a row")
    reason: str = "no-answer"


class AnnounceSay(_Strict):
    """Spoken (TTS) announcements instead of the recorded prompts: a template, or language ->
    template, with ${position} and ${wait} (seconds; ${wait:minutes} says "3 minutes") and the
    call's variables (ringmaster.flows.spoken)."""

    position: str | dict[str, str] | None = None
    wait: str | dict[str, str] | None = None

    @field_validator("position", "wait")
    @classmethod
    def _texts(cls, v: str | dict[str, str] | None) -> str | dict[str, str] | None:
        from ringmaster.flows.spoken import check_texts

        if v is not None:
            check_texts(v)
        return v


class Announce(_Strict):
    """Position and estimated wait, every `every` seconds while the caller waits: recorded
    prompts (you-are-caller, digits/N, in-line, estimated-wait, minutes, in the call's
    language's folder when there is one), or `say` texts spoken by TTS."""

    every: float = Field(default=30.0, ge=5, le=600, description="seconds between announcements")
    position: bool = True
    wait_time: bool = True
    say: AnnounceSay | None = None


class Recording(_Strict):
    template: str = Field(default="{queue}/{date}/{call_id}.wav", max_length=200,
                          description="path under paths.recordings; {queue} {date} {call_id} {agent} {caller}")

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        # a relative path of plain fields: no attribute or index lookups ({caller.__class__}),
        # no format specs, nothing that leaves paths.recordings; the values are made safe file
        # name parts when a call is recorded (ringmaster.inputs.file_name_part)
        try:
            parsed = list(string.Formatter().parse(v))
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        for _, name, spec, conv in parsed:
            if name is not None and (name not in RECORDING_FIELDS or spec or conv):
                raise ValueError(f"{{{name}}} is not a template field; fields: "
                                 + " ".join(f"{{{f}}}" for f in RECORDING_FIELDS))
        if v.startswith("/") or ".." in v.split("/") or not v.endswith(".wav"):
            raise ValueError("a relative path under paths.recordings ending in .wav, without '..'")
        return v


class ExitKey(_Strict):
    key: str = Field(pattern=r"^[0-9*#]$")
    flow: str


class NumberRefused(ValueError):
    """A number that cannot be called back, with the reason (said in logs and API errors).
    Raised by callbacks.callback_number; here so that the call adapter can catch it without
    importing callbacks.py."""


class CallbackConfig(_Strict):
    """Queued callback (docs/callbacks.md): a waiting caller presses `key` (app_queue's exit
    digit, here kept in line) or a flow's `callback` step asks for one; the caller hangs up
    and the callback keeps the caller's priority and arrival time in this queue. When its turn
    comes an agent's phone rings for `preview` seconds with the number on screen; when she
    answers, the customer is dialled through `route` (a trunk of sip.trunks) showing
    `caller_id`, hears `customer_prompt`, then is bridged to her (recorded as the queue says)."""

    key: str | None = Field(default=None, pattern=r"^[0-9*#]$",
                            description="the key a waiting caller presses to be called back")
    route: str = Field(description="the trunk (a name from sip.trunks) the customer is dialled through")
    caller_id: str = Field(pattern=r"^\+?[0-9]{2,20}$", description="the number the customer's phone shows (From)")
    number: Literal["caller", "ask"] = Field(
        default="caller", description="caller: the caller ID; ask: the caller keys in a number after the key")
    prefix: str = Field(default="", pattern=r"^\+?[0-9]{0,6}$",
                        description="put before a keyed-in number or caller ID without it (e.g. +45)")
    min_digits: int = Field(default=6, ge=2, le=20, description="a keyed-in number's least length")
    max_digits: int = Field(default=16, ge=2, le=20, description="a keyed-in number's greatest length")
    allowed: list[str] = Field(default_factory=list, description=(
        "patterns (full match) of the numbers called back: each must be one of the route's own "
        "`allowed` patterns; empty: the route's"))
    preview: float = Field(default=15.0, ge=1, le=300, description="seconds the agent's phone rings with the screen pop")
    ring_timeout: float = Field(default=30.0, ge=5, le=120, description="seconds the customer's phone rings")
    attempts: int = Field(default=3, ge=1, le=10, description="dial attempts before the callback fails")
    retry_delay: float = Field(default=300.0, ge=0, le=86400, description="seconds between attempts")
    on_busy: Literal["retry", "fail"] = Field(default="retry", description="a busy customer: try again, or fail now")
    schedule: str | None = Field(default=None, description="a schedule of `schedules:`: nothing is dialled outside it")
    ask_prompt: str = Field(default="callback-ask", description="asks for the number (number: ask)")
    confirm_prompt: str = Field(default="callback-confirm", description="played before the position and wait")
    invalid_prompt: str = Field(default="callback-invalid", description="a keyed-in number that cannot be called")
    offer_prompt: str | None = Field(default=None, description="added to the periodic announcement (press N to be called back)")
    customer_prompt: str | None = Field(default=None, description="played to the customer before the agent is joined")

    @field_validator("allowed")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        import re

        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _digits(self) -> CallbackConfig:
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits is above max_digits")
        return self


class QueueConfig(_Strict):
    strategy: Literal["ring-all", "linear", "round-robin", "longest-idle", "fewest-calls", "least-talk-time", "random"] = "longest-idle"
    members: list[Member] = Field(default_factory=list)
    skills: dict[str, int] = Field(default_factory=dict, description="required skill -> minimum level")
    tier_wait: float = Field(default=30.0, ge=0, description="seconds of waiting before each next tier may ring")
    ring_timeout: float = Field(default=15.0, ge=1, le=300)
    offer_timeout: float = Field(default=30.0, ge=1, le=3600, description="seconds a chat or email offer waits for accept")
    retry: float = Field(default=2.0, ge=0, le=300, description="pause before ringing again after no answer")
    max_wait: float | None = Field(default=None, ge=1)
    max_length: int | None = Field(default=None, ge=1)
    overflow: Overflow | None = None
    join_empty: bool = Field(default=True, description="callers may join while no agent is logged in")
    leave_when_empty: bool = Field(default=False, description="callers leave (EXITEMPTY) when no agent is logged in")
    moh: str = Field(default="please-hold", description="a prompt, or a directory of prompts played in turn")
    announce: Announce | None = None
    exit_key: ExitKey | None = None
    service_level: float = Field(default=20.0, ge=1, description="answered within this many seconds counts as in service level")
    wrapup: float = Field(default=0.0, ge=0, le=3600)
    auto_pause: AutoPause | None = None
    record: Recording | None = None
    confirm_answer: bool = Field(
        default=False, description="an answering agent hears confirm_prompt and must press 1 within confirm_timeout "
                                   "to take the call, else it counts as no answer (app_queue's M(confirm), "
                                   "FreeSWITCH's group_confirm_key); an agent's own confirm_answer wins")
    confirm_prompt: str | None = Field(default="beep", max_length=100,
                                       description="the prompt played to the agent before the 1 (None: none)")
    confirm_timeout: float = Field(default=8.0, ge=1, le=60, description="seconds after the prompt to press 1")
    callback: CallbackConfig | None = Field(default=None, description="queued callback: docs/callbacks.md")
    continue_on_agent_hangup: str | None = Field(
        default=None, max_length=100,
        description="flow the caller goes on to when the agent hangs up, instead of being hung up "
                    "(Asterisk's Queue option c), e.g. an after-call survey")

    @field_validator("members", mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


def routing_warnings(queues: dict[str, QueueConfig], agents: dict[str, AgentConfig]) -> list[str]:
    """Queues whose callers and tasks no agent can ever take, as sentences for `ringmaster check`
    and the daemon's start: no members, or no member with the queue's required skills. Valid
    configs (a queue may be staffed later by a reload of the agents), hence warnings, not errors."""
    out = []
    for name, q in queues.items():
        if not q.members:
            wait = f"max_wait {q.max_wait:g} s" if q.max_wait is not None else "forever (no max_wait)"
            out.append(f"queue {name!r} has no members: its callers and tasks wait {wait}")
            continue
        skilled = [m.agent for m in q.members if m.agent in agents
                   and all(agents[m.agent].skills.get(s, 0) >= lv for s, lv in q.skills.items())]
        if not skilled:
            need = ", ".join(f"{s}>={lv}" for s, lv in sorted(q.skills.items()))
            out.append(f"queue {name!r}: no member has its required skills ({need})")
    return out
