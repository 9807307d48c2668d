"""The daemon's YAML configuration: typed models and validation with file:line:column errors.

Sections: sip (the edge), workers, storage, paths, logging, flows, entry_points. Pydantic does
the type checking; every error it reports is mapped back to the YAML position through
yamlsource.Source, and unknown keys get a did-you-mean. Flow steps are checked by
ringmaster.flows, which knows the node types.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ringmaster import inputs, yamlsource
from ringmaster.acd.config import AgentConfig, PresenceProfile, QueueConfig
from ringmaster.schedules import Schedule
from ringmaster.yamlsource import MAX_ERRORS, ConfigError, ConfigInvalid, Source, did_you_mean

_HOSTPORT = re.compile(r"^(?P<host>[^:\s]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d{1,5}))?$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_hostport(value: str, default_port: int | None = None) -> tuple[str, int | None]:
    m = _HOSTPORT.match(value.strip())
    if not m:
        raise ValueError(f"expected HOST or HOST:PORT, got {value!r}")
    port = int(m["port"]) if m["port"] else default_port
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port {port} out of range 1-65535")
    return m["host"].strip("[]"), port


def _check_ip(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address, got {host!r} (the edge does no DNS)") from None
    return host


class TrustedPeer(Strict):
    """A trunk or PBX allowed to send calls in. Without a port, any port of that IP."""

    name: str
    address: str

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        host, _ = split_hostport(v)
        _check_ip(host)
        return v

    @property
    def host(self) -> str:
        return split_hostport(self.address)[0]

    @property
    def port(self) -> int | None:
        return split_hostport(self.address)[1]


class UpstreamRegistration(Strict):
    """Register at the company PBX / trunk so it sends our service numbers to the edge."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    registrar: str = Field(description="registrar URI, e.g. sip:pbx.example.com:5060")
    username: str
    password: str
    aor: str = Field(default="", description="address of record; default sip:USERNAME@registrar host")
    expires: int = Field(default=300, ge=30, le=86400)

    @field_validator("registrar")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not v.startswith(("sip:", "sips:")):
            raise ValueError("expected a SIP URI such as sip:192.0.2.10:5060")
        return v

    @property
    def address_of_record(self) -> str:
        if self.aor:
            return self.aor
        # an address of record is user@domain: the registrar's port and parameters are not part of it
        hostport = self.registrar.split(":", 1)[1].split(";", 1)[0]
        host = split_hostport(hostport)[0] if not hostport.startswith("[") else hostport
        return f"sip:{self.username}@{host}"


class Trunk(Strict):
    """An outbound route: a carrier or gateway that legs leave the edge through (today the
    mobile agents' legs). Its digest credentials answer its 401/407 challenges at the edge
    (Kamailio's uac module: uac_auth(), RFC 3261 22.2/22.3), so a carrier that challenges
    INVITEs, as most do, is usable; the password never reaches a worker."""

    address: str = Field(description="HOST:PORT where the edge sends the trunk's INVITEs")
    username: str = Field(default="", pattern=r"^[^\s:\"]*$", description="digest user name; empty: the trunk does not challenge")
    password: str = Field(default="", pattern=r"^[^\s\"]*$")
    realm: str = Field(default="", pattern=r"^[^\s\"]*$", description=(
        "the realm the credentials are for; empty: whatever realm the trunk's own challenge names "
        "(only a challenge coming from the trunk's address is ever answered)"))
    allowed: list[str] = Field(default_factory=list, description=(
        "regular expressions (full match) of the numbers that may leave through this trunk; "
        "empty: any. Premium-rate or international numbers stay out unless a pattern lists them"))
    caller_id: str = Field(default="", pattern=r"^(\+?[0-9]{2,20})?$", description=(
        "the number outbound calls through this trunk present when their rule names none (docs/outbound.md)"))
    identity: Literal["from", "pai", "both"] = Field(default="from", description=(
        "where an outbound call's caller ID goes: the From user, P-Asserted-Identity (RFC 3325; From is "
        "then the trunk's caller_id or the edge's own), or both"))

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        host, port = split_hostport(v)
        _check_ip(host)
        if port is None:
            raise ValueError("expected HOST:PORT")
        return v

    @field_validator("allowed")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _credentials(self) -> Trunk:
        if bool(self.username) != bool(self.password):
            raise ValueError("give both username and password, or neither")
        return self

    def allows(self, number: str) -> bool:
        """Whether `number` (as dialled, e.g. '+4512345678') may leave through this trunk."""
        return not self.allowed or any(re.fullmatch(p, number) for p in self.allowed)


class TransferTarget(Strict):
    """An external party agents may transfer callers to (issue 11): a number dialled through a
    trunk of `sip.trunks`. Only listed targets are ever dialled: the edge relays a worker's
    INVITE to `NUMBER@edge` to the trunk only for a number listed here (or a mobile agent's)."""

    number: str = Field(pattern=r"^\+?[0-9]{1,20}$", description="the number as the trunk dials it, e.g. +4533445566")
    trunk: str = Field(default="", description="a trunk of sip.trunks (default: sip.mobile_trunk)")
    ring_timeout: float = Field(default=30.0, gt=0, le=300, description="seconds the target may ring")


class OutboundRule(Strict):
    """Which numbers which agents may dial themselves (softphone INVITE, click-to-dial, a call
    from a chat), over which trunk, with which caller ID (docs/outbound.md). Rules are tried in
    order; the first that applies to the agent and matches the number decides."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    numbers: list[str] = Field(min_length=1, description=(
        "regular expressions (full match) of the numbers this rule lets through; each must mean the same "
        "in Python and POSIX (digits, classes, groups, alternation, repetition, \\d), as the edge checks it too"))
    route: str = Field(description="the trunk (a name of sip.trunks) the calls leave through")
    agents: list[str] = Field(default_factory=list, description="agents this rule is for ('*': every agent)")
    profiles: list[str] = Field(default_factory=list, description="or agents with one of these profiles")
    caller_id: str = Field(default="trunk", pattern=r"^(trunk|agent|\+?[0-9]{2,20})$", description=(
        "trunk: the trunk's caller_id; agent: the agent's caller_id (else the trunk's); or a fixed number"))
    record: bool = Field(default=False, description="record the call (paths.recordings/outbound/DATE/CALL_ID.wav)")
    ring_timeout: float = Field(default=45.0, ge=5, le=300, description="seconds the customer's phone may ring")

    @field_validator("numbers")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r}: {exc}") from None
        return v

    def matches(self, number: str) -> bool:
        return any(re.fullmatch(p, number) for p in self.numbers)

    def applies_to(self, agent: str, profile: str | None) -> bool:
        return "*" in self.agents or agent in self.agents or (profile or "default") in self.profiles


DEFAULT_SCANNERS = ["friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent",
                    "sipsak", "sundayddr", "iWar", "SIVuS", "Gulp", "sip-scan", "smap"]


class EdgeSecurity(Strict):
    flood_requests: int = Field(default=30, ge=1, description="requests per flood_window from one untrusted IP before a ban")
    flood_window: int = Field(default=2, ge=1, le=60, description="seconds")
    ban_seconds: int = Field(default=60, ge=1)
    # password guessing (REGISTER digest failures), counted per source IP and per user over a
    # sliding minute; fail2ban's and Asterisk's defaults are of the same order
    auth_failures_per_source: int = Field(default=5, ge=1, le=1000,
                                          description="failed logins from one IP before it is banned")
    auth_failures_per_user: int = Field(default=10, ge=1, le=10000,
                                        description="failed logins for one user (any IP) before only IPs it "
                                                    "already logged in from are served")
    auth_ban_seconds: int = Field(default=60, ge=1, description="first ban; doubled for each repeat within an hour")
    auth_ban_max_seconds: int = Field(default=3600, ge=1, le=86400)
    max_message_bytes: int = Field(default=12288, ge=2048, le=65535,
                                   description="larger requests get 513 at the edge")
    max_via_headers: int = Field(default=10, ge=2, le=70)
    scanner_user_agents: list[str] = Field(default_factory=lambda: list(DEFAULT_SCANNERS))


class WebRtcConfig(Strict):
    """Browser phones (the desk's WebRTC phone): the edge takes SIP over secure WebSocket
    (RFC 7118) on `listen`, and rtpengine, started and supervised by the daemon, bridges the
    browser's media (DTLS-SRTP, ICE, RFC 8827) to the workers' plain RTP (G.711), on its own
    `rtp_ports`. certificate/key: PEM files for WSS (default: http.desk's)."""

    listen: str = Field(default="127.0.0.1:8089", description="the edge's WSS address (HOST:PORT)")
    certificate: str | None = Field(default=None, description="PEM certificate for WSS (default: http.desk's)")
    key: str | None = Field(default=None, description="PEM key for WSS (default: http.desk's)")
    rtp_ports: str = Field(default="30000-30999", pattern=r"^\d{4,5}-\d{4,5}$",
                           description="rtpengine's media ports (both the browser's and the workers' side)")
    control_port: int | None = Field(default=None, ge=1024, le=65535,
                                     description="rtpengine's ng control port on loopback (default: listen port + 1)")
    rtpengine: str = Field(default="/usr/bin/rtpengine", description="the rtpengine binary (Debian: rtpengine-daemon)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, port = split_hostport(v)
        _check_ip(host)
        if port is None:
            raise ValueError("expected HOST:PORT")
        return v

    @field_validator("rtp_ports")
    @classmethod
    def _rtp(cls, v: str) -> str:
        lo, hi = (int(x) for x in v.split("-"))
        if not 1024 <= lo < hi <= 65535 or hi - lo < 3:
            raise ValueError("LOW-HIGH within 1024-65535, at least 4 ports")
        return v

    @property
    def host(self) -> str:
        return split_hostport(self.listen)[0]

    @property
    def port(self) -> int:
        port = split_hostport(self.listen)[1]
        assert port is not None
        return port

    @property
    def rtp_range(self) -> tuple[int, int]:
        lo, hi = (int(x) for x in self.rtp_ports.split("-"))
        return lo, hi

    @property
    def ng_port(self) -> int:
        return self.control_port or self.port + 1


class SipConfig(Strict):
    listen: str = Field(default="127.0.0.1:5060", description="the edge's SIP address (UDP and TCP)")
    transports: list[Literal["udp", "tcp"]] = Field(default=["udp", "tcp"], min_length=1)
    advertised_address: str = Field(default="", description="address put in SIP headers when behind NAT")
    trusted: list[TrustedPeer] = Field(default_factory=list)
    registrations: list[UpstreamRegistration] = Field(default_factory=list)
    security: EdgeSecurity = Field(default_factory=EdgeSecurity)
    events_port: int | None = Field(default=None, ge=1024, le=65535, description="loopback TCP port where the edge pushes registration events (default: listen port + 2)")
    trunks: dict[str, Trunk] = Field(default_factory=dict, description="outbound routes by name")
    mobile_trunk: str = Field(default="", description="the trunk that reaches mobile agents: a name from `trunks`, or HOST:PORT (no credentials)")
    kamailio: str = "/usr/sbin/kamailio"
    kamailio_modules: str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
    shared_memory_mb: int = Field(default=256, ge=64)
    direct_media: bool = Field(default=False, description=(
        "once caller and agent (or a transfer target) are bridged and the call is not recorded, "
        "re-INVITE both so their RTP flows between them, not through a worker (Asterisk's "
        "direct_media, FreeSWITCH's bypass_media_after_bridge): talk time then costs the server "
        "only signalling. Both parties must reach each other's RTP address (no NAT between them)"))
    webrtc: WebRtcConfig | None = Field(default=None, description="browser phones over WSS, media through rtpengine")
    send_pai: bool = Field(default=False, description=(
        "agent legs also carry the caller's identity in P-Asserted-Identity (RFC 3325; Asterisk's "
        "send_pai): only where the agents' side is a trust domain that honours it, e.g. a mobile "
        "trunk that shows PAI. The caller's number and name are in From either way"))

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _ = split_hostport(v, 5060)
        _check_ip(host)
        return v

    @property
    def host(self) -> str:
        return split_hostport(self.listen, 5060)[0]

    @property
    def port(self) -> int:
        return split_hostport(self.listen, 5060)[1] or 5060

    @property
    def mobile_route(self) -> Trunk | None:
        """The trunk mobile agents are reached through (a bare HOST:PORT is a trunk without
        credentials), or None when none is configured."""
        if not self.mobile_trunk:
            return None
        return self.trunks.get(self.mobile_trunk) or Trunk(address=self.mobile_trunk)


class WorkersConfig(Strict):
    count: int = Field(default=2, ge=1, le=200, description="warm pjsua2 worker processes (the pool never shrinks below)")
    max: int | None = Field(default=None, ge=1, le=500,
                            description="most workers the pool grows to under load (default: count, a fixed pool)")
    spare: int = Field(default=1, ge=0, le=50,
                       description="workers kept free of calls ahead of the load, so no caller waits for a spawn")
    idle_retire: float = Field(default=60.0, ge=1, le=86400,
                               description="seconds a worker above the warm count may sit without a call before it stops")
    max_inbound_calls: int = Field(default=2, ge=1, le=3, description="inbound calls per worker; the rest of its 4 legs are for agent legs")
    address: str = "127.0.0.1"
    sip_port_base: int = Field(default=5100, ge=1024, le=65000)
    rtp_ports: str = Field(default="20000-29999", pattern=r"^\d{4,5}-\d{4,5}$")
    restart_delay: float = Field(default=0.2, ge=0, le=30, description="seconds before respawning a dead worker")
    audio_frame_ptime: Literal[20, 40] = Field(
        default=40, description="ms of audio each worker's conference bridge mixes per tick (pjsua's"
        " audio_frame_ptime). 40 wakes the mixing clock 25 times a second instead of 50: recorded calls"
        " cost ~20 % less CPU (docs/engine-findings.md 107); 20 gives 20 ms less delay on media the"
        " worker carries (prompts, hold music, recorded or supervised bridges). RTP keeps the"
        " negotiated ptime either way (two 20 ms packets per 40 ms frame).")
    spawn: Literal["zygote", "exec"] = Field(
        default="zygote", description="zygote: fork workers from one process that imported pjsua2 once (their"
        " import memory is shared); exec: start a new interpreter per worker")
    per_process: int = Field(
        default=4, ge=1, le=8, description="workers one process runs, each a pjsua instance of its own (4 legs)"
        " on a thread: they share the interpreter's memory (~4 of a worker's ~7 MB). A process that"
        " dies or is killed takes all its workers' calls. Needs spawn: zygote (docs/design.md)")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_ip(v)

    @model_validator(mode="after")
    def _rtp(self) -> WorkersConfig:
        lo, hi = self.rtp_range
        if not 1024 <= lo < hi <= 65535:
            raise ValueError("rtp_ports: expected LOW-HIGH within 1024-65535, LOW < HIGH")
        if self.spawn != "zygote" and self.per_process > 1:
            if "per_process" in self.model_fields_set:
                raise ValueError("per_process above 1 needs spawn: zygote (the zygote forks the processes that host several workers)")
            self.per_process = 1  # the default is the zygote's; an exec'd worker is its own process
        if self.max is not None and self.max < self.count:
            raise ValueError(f"max ({self.max}) is below count ({self.count}): the pool cannot shrink below its warm count")
        if (hi - lo + 1) // self.ceiling < 8:
            raise ValueError(f"rtp_ports: {hi - lo + 1} ports are too few for {self.ceiling} workers (8 each: 4 legs x RTP+RTCP)")
        return self

    @property
    def ceiling(self) -> int:
        """The most workers that may run at once (every one has its SIP port and RTP slice)."""
        return self.max if self.max is not None else self.count

    @property
    def rtp_range(self) -> tuple[int, int]:
        lo, hi = self.rtp_ports.split("-")
        return int(lo), int(hi)


class StorageConfig(Strict):
    path: str = "var/ringmaster.db"
    recording_retention_days: float | None = Field(default=None, gt=0, description="delete call recordings older than this; calls keep their record, marked")
    voicemail_retention_days: float | None = Field(
        default=None, gt=0, description="delete voicemail messages (heard or not) older than this; the row stays, marked deleted")


class PathsConfig(Strict):
    prompts: str = "prompts"
    recordings: str = "var/recordings"
    runtime: str = Field(default="var/run", description="private runtime dir for the edge's config, sockets, pid")


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ApiToken(Strict):
    """A bearer token and its role. agent: only the voicemail boxes `agent` may read (an agent's
    desk); operator: read; supervisor: + agent states, recordings, every voicemail box; admin: + reload.
    supervisor: may name the supervisor it is (`supervisor: NAME` of supervision.supervisors): it
    then listens, whispers and barges only as that supervisor, on that supervisor's queues."""

    name: str
    token: str = Field(min_length=16, description="a bearer token; generate with `openssl rand -hex 24`")
    role: Literal["agent", "operator", "supervisor", "admin"] = "operator"
    agent: str | None = Field(default=None, description="role agent: the agent (in `agents`) this token is")
    supervisor: str | None = Field(default=None, description="role supervisor: the supervisor (in "
                                   "supervision.supervisors) this token is (default: any of them)")

    @model_validator(mode="after")
    def _agent(self) -> ApiToken:
        if (self.role == "agent") != (self.agent is not None):
            raise ValueError("a token of role agent names its agent (agent: NAME); other roles name none")
        if self.supervisor is not None and self.role != "supervisor":
            raise ValueError("only a token of role supervisor names a supervisor (supervisor: NAME)")
        return self


class SupervisorSpec(Strict):
    """One who may listen, whisper and barge (supervision.supervisors.NAME, NAME an agent of
    `agents`: that agent's phone, softphone or mobile, is the one rung), and on which queues."""

    queues: list[str] | None = Field(default=None, max_length=200,
                                     description="the queues whose calls this supervisor may join (default: every queue)")


class TellAgent(Strict):
    """How the agent learns that a supervisor joined (or changed mode, or left)."""

    beep: bool = Field(default=False, description="play the `beep` prompt to the agent (never to the caller)")
    mqtt: bool = Field(default=True, description="a `supervision` message on agents/ID/offers")


class SupervisionConfig(Strict):
    """Listen, whisper and barge on live queue calls (docs/supervision.md): who may, how long the
    supervisor's phone rings, what the agent is told, and the feature-code digits a connected
    supervisor presses to change mode (FreeSWITCH eavesdrop's 1/2/3)."""

    supervisors: dict[str, SupervisorSpec] = Field(default_factory=dict,
                                                   description="agent name -> the queues it may supervise")
    ring_timeout: float = Field(default=30.0, gt=0, le=300, description="seconds the supervisor's phone rings")
    tell_agent: TellAgent = Field(default_factory=TellAgent)
    beep: str = Field(default="beep", pattern=r"^[A-Za-z0-9_./-]{1,128}$", description="the prompt of tell_agent.beep")


BOX_NAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"  # a folder under recordings/voicemail: no leading dot


class VoicemailBox(Strict):
    """A mailbox the flows' voicemail step records into, owned by an agent or by a queue.

    An agent box is read by its agent; a queue box by the queue's members (unless members is
    false: then supervisors only). Whoever may read a box sees its messages in the API and on
    MQTT, and their softphone's message-waiting lamp counts them (RFC 3842)."""

    agent: str | None = Field(default=None, description="the agent who owns the box")
    queue: str | None = Field(default=None, description="the queue that owns the box")
    members: bool = Field(default=True, description="queue box: its members may read it")

    @model_validator(mode="after")
    def _owner(self) -> VoicemailBox:
        if (self.agent is None) == (self.queue is None):
            raise ValueError("a box has exactly one owner: agent: NAME or queue: NAME")
        return self


class VoicemailConfig(Strict):
    """Voicemail boxes, by name (the name a flow's `voicemail: {box: NAME}` step uses)."""

    boxes: dict[str, VoicemailBox] = Field(default_factory=dict)
    url_base: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
                                 description="how clients reach the HTTP API, for the message URL on MQTT "
                                             "(default: http:// + http.listen)")


class _Listening(Strict):
    """A service of the daemon on an IP address and port (`listen: HOST:PORT`)."""

    listen: str

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, port = split_hostport(v)
        _check_ip(host)
        if port is None:
            raise ValueError("expected HOST:PORT")
        return v

    @property
    def host(self) -> str:
        return split_hostport(self.listen)[0]

    @property
    def port(self) -> int:
        port = split_hostport(self.listen)[1]
        assert port is not None  # the validator requires one
        return port


PAUSE_REASON = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,31}$"


class DeskSupervisor(Strict):
    """A supervisor who signs in to the desk (http.desk.supervisors.NAME): the password (compared
    like the agents', as scrypt digests), the name shown, and the queues the supervisor sees and
    acts on (None: every queue). The actions are the API's supervisor role's: an agent's
    presence (pause, unpause, log in, log out) and the queues' members at run time."""

    password: str = Field(min_length=8, pattern=r"^[^\x00-\x1f\x7f]+$", description="no control characters")
    name: str = Field(default="", max_length=64, description="shown on the page (default: the supervisor's id)")
    queues: list[str] | None = Field(default=None, max_length=200,
                                     description="the queues this supervisor oversees (default: every queue)")


class DeskConfig(_Listening):
    """The agents' desk (/desk): a page served over HTTPS on its own listener, where an agent
    signs in with their own password (desk_password, else their SIP password) and gets a session
    cookie (HttpOnly, Secure, SameSite=Strict) that ends after `idle_minutes` without a request
    or `session_hours` after sign-in, whichever comes first. Browsers give microphones and
    WebRTC only to secure pages, hence TLS. certificate/key: PEM files (relative to the config
    file); scripts/run-demo makes a self-signed pair for the demo."""

    listen: str = Field(default="127.0.0.1:8443")
    certificate: str = Field(description="PEM certificate (chain) file the desk presents")
    key: str = Field(description="PEM private key file of the certificate")
    idle_minutes: int = Field(default=60, ge=1, le=24 * 60, description="a session ends after this long unused")
    session_hours: int = Field(default=12, ge=1, le=7 * 24, description="a session ends this long after sign-in")
    pause_reasons: list[str] = Field(default_factory=lambda: ["break", "lunch", "training", "meeting"],
                                     min_length=1, max_length=32,
                                     description="the reasons an agent may pick when pausing at the desk")
    supervisors: dict[str, DeskSupervisor] = Field(
        default_factory=dict, description="who signs in to the desk's supervisor view: name -> password, queues")

    @field_validator("pause_reasons")
    @classmethod
    def _reasons(cls, v: list[str]) -> list[str]:
        for r in v:
            if not re.match(PAUSE_REASON, r):
                raise ValueError(f"pause reason {r[:40]!r}: 1-32 letters, digits, space, _ . -")
        if len(set(v)) != len(v):
            raise ValueError("pause reasons repeat")
        return v


class HttpConfig(_Listening):
    """The HTTP API and /metrics. operator: read; supervisor: + agent states, recordings; admin: + reload.
    desk: the agents' desk page on its own HTTPS listener (None: no desk)."""

    listen: str = Field(default="127.0.0.1:8080")
    tokens: list[ApiToken] = Field(default_factory=list)
    desk: DeskConfig | None = None


class MqttClient(Strict):
    """An integration (the chat or email system, a CRM): may publish tasks/new, tasks/+/commands and
    agents/+/commands, and read everything under the prefix."""

    username: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=8, pattern=r"^[^\x00-\x1f\x7f]+$", description="no control characters")


class MqttConfig(_Listening):
    """The MQTT broker for chat/email tasks, presence and events.

    embedded: the daemon runs mosquitto itself on `listen` (loopback) with a generated password
    file and ACL; the controller gets its own generated credentials. Otherwise it connects to
    `listen` with `username`/`password`.
    """

    embedded: bool = False
    listen: str = Field(default="127.0.0.1:1883")
    username: str | None = None
    password: str | None = None
    topic_prefix: str = Field(default="ringmaster/", pattern=r"^[A-Za-z0-9_./-]*$")
    client_id: str = Field(default="ringmaster-controller", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    keepalive: int = Field(default=30, ge=5, le=600)
    clients: list[MqttClient] = Field(default_factory=list)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return v if not v or v.endswith("/") else v + "/"


class EntryPoint(Strict):
    """Maps the called number (user part of the Request-URI) to a flow, with the call's first
    variables (e.g. `variables: {language: da}` for a Danish number)."""

    number: str | None = None
    prefix: str | None = None
    pattern: str | None = Field(default=None, description="Python regular expression, full match")
    flow: str
    variables: dict[str, str] = Field(default_factory=dict, description="variables the call starts with")

    @field_validator("variables")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"variable name {name!r}: letters, digits and _ (not starting with a digit)")
            if name in ("caller", "called"):
                raise ValueError(f"{name!r} is set from the call itself")
        return v

    @model_validator(mode="after")
    def _one_match(self) -> EntryPoint:
        given = [k for k in ("number", "prefix", "pattern") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of number, prefix, pattern")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self


class UnknownNumber(Strict):
    """What a call to a number no entry point matches gets: a flow, or a SIP rejection."""

    flow: str | None = None
    reject: int = Field(default=404, ge=400, le=699)


NAME = inputs.PLAIN_NAME
LANGUAGE_CODE = r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$"  # BCP 47 primary language and subtags, lower case


class LanguagesConfig(Strict):
    """The languages callers are served in. A prompt name `welcome` plays
    `<prompts>/<language>/welcome.wav` for the call's `language` variable; the fallback
    language's prompts may also sit directly in `<prompts>/`. A call with no language, or one
    not listed (a CRM answered `fr`), hears the fallback."""

    supported: list[Annotated[str, Field(pattern=LANGUAGE_CODE)]] = Field(
        min_length=1, description="every prompt a flow names must exist in each of these (checked)")
    fallback: str = Field(pattern=LANGUAGE_CODE, description="one of supported")

    @model_validator(mode="after")
    def _fallback(self) -> LanguagesConfig:
        if self.fallback not in self.supported:
            raise ValueError(f"fallback {self.fallback!r} is not one of supported ({', '.join(self.supported)})")
        if len(set(self.supported)) != len(self.supported):
            raise ValueError("a language is listed twice in supported")
        return self


class TtsConfig(Strict):
    """Text to speech for `say` steps and spoken queue announcements: espeak-ng (Debian),
    converted with sox to the workers' 8 kHz mono WAV and cached by (engine, voice, language, text)."""

    engine: Literal["espeak-ng"] = "espeak-ng"
    command: str = Field(default="espeak-ng", description="the engine's executable")
    voices: dict[str, str] = Field(default_factory=dict,
                                   description="language -> voice (default: the language code, e.g. da, en-us)")
    language: str = Field(default="en", pattern=LANGUAGE_CODE,
                          description="the language spoken when the plan has no `languages:` and a step names none")
    speed: int = Field(default=150, ge=80, le=450, description="words per minute")
    cache: str = Field(default="", description="directory of rendered speech (default: <runtime>/tts)")
    timeout: float = Field(default=10.0, gt=0, le=60, description="seconds one rendering may take")

    @field_validator("voices")
    @classmethod
    def _voices(cls, v: dict[str, str]) -> dict[str, str]:
        for lang, voice in v.items():
            if not re.match(LANGUAGE_CODE, lang):
                raise ValueError(f"{lang!r} is not a language code such as da or en-us")
            if not re.match(r"^[A-Za-z0-9_+-][A-Za-z0-9_+/.-]{0,63}$", voice) or ".." in voice:
                raise ValueError(f"voice {voice!r}: an espeak-ng voice name such as da, en-us or en+f3")
        return v

    def voice(self, language: str) -> str:
        return self.voices.get(language) or self.voices.get(language.split("-", 1)[0]) or language


class EndpointTls(Strict):
    verify: bool = Field(default=True, description="check the server's certificate (never turn off in production)")
    ca_file: str | None = Field(default=None, description="PEM file of the CA(s) to trust instead of the system's")


class HttpEndpoint(Strict):
    """A CRM or other service an `http` flow step may call. The URL is fixed here: a flow
    adds the call's variables to its query (GET) or JSON body (POST), never to the URL, so no
    caller input can make the server call another address."""

    url: str = Field(description="http:// or https:// URL, without variables")
    method: Literal["GET", "POST"] = "GET"
    timeout: float = Field(default=2.0, gt=0, le=30,
                           description="seconds the caller waits at most, retries included; then on_timeout")
    retries: int = Field(default=1, ge=0, le=5,
                         description="further attempts after a connection failure or a 5xx, within the timeout")
    retry_delay: float = Field(default=0.1, ge=0, le=5, description="seconds between attempts")
    bearer_token: str | None = Field(default=None, min_length=8, description="sent as Authorization: Bearer ...")
    hmac_secret: str | None = Field(default=None, min_length=16,
                                    description="signs each request: X-Ringmaster-Signature: sha256=HMAC(secret, timestamp.payload)")
    headers: dict[str, str] = Field(default_factory=dict, description="further request headers")
    tls: EndpointTls = Field(default_factory=EndpointTls)
    max_bytes: int = Field(default=65536, ge=256, le=1048576, description="a larger answer is an error")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        if "${" in v or "{" in v:
            raise ValueError("the URL is fixed: variables go into the query or body, not the URL")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL: use bearer_token or hmac_secret")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not inputs.header_name_ok(name) or inputs.header_value(value) != value:
                raise ValueError(f"header {name!r}: a token name and a printable value")
        return v


WEBHOOK_EVENTS = ("call.offered", "call.answered", "call.ended", "task.offered", "task.accepted",
                  "task.completed", "callback.requested", "voicemail.new", "agent.state")


class WebhookConfig(Strict):
    """An HTTP endpoint that receives events as signed POSTs (Standard Webhooks 1.0:
    webhook-id, webhook-timestamp, webhook-signature; docs/webhooks.md). Deliveries wait in a
    persistent outbox (SQLite) and are retried with exponential backoff and jitter until the
    endpoint answers 2xx, or become dead letters after `max_attempts` or `max_age_hours`."""

    url: str = Field(description="http:// or https:// URL the events are POSTed to")
    secret: str = Field(description="whsec_ + base64 of 24-64 random bytes (Standard Webhooks); "
                                    "generate with `echo whsec_$(openssl rand -base64 32)`")
    events: list[str] = Field(min_length=1, description="event types to send (" + ", ".join(WEBHOOK_EVENTS)
                                                         + "), or [\"*\"] for all")
    timeout: float = Field(default=15.0, gt=0, le=60,
                           description="seconds one attempt may take (connect and answer); then it is retried")
    max_attempts: int = Field(default=20, ge=1, le=100, description="attempts before a delivery is a dead letter")
    max_age_hours: float = Field(default=72.0, gt=0, le=720,
                                 description="a delivery not made this long after its event is a dead letter")
    backoff_initial: float = Field(default=5.0, ge=0.05, le=3600, description="seconds before the first retry; doubled after each")
    backoff_max: float = Field(default=3600.0, ge=0.05, le=86400, description="the longest wait between two attempts (seconds)")
    max_in_flight: int = Field(default=4, ge=1, le=64,
                               description="requests at once to this endpoint (each for another call, task or agent)")
    tls: EndpointTls = Field(default_factory=EndpointTls)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL: the signature authenticates each request")
        if any(c.isspace() for c in v):
            raise ValueError("no spaces in the URL")
        return v

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        from ringmaster.webhooks.signing import SecretInvalid, secret_key

        try:
            secret_key(v)
        except SecretInvalid as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        for name in v:
            if name != "*" and name not in WEBHOOK_EVENTS:
                raise ValueError(f"unknown event type {name!r}{did_you_mean(name, set(WEBHOOK_EVENTS))}; "
                                 f"types: {', '.join(WEBHOOK_EVENTS)}, or * for all")
        if len(set(v)) != len(v):
            raise ValueError("an event type is listed twice")
        return v

    @model_validator(mode="after")
    def _backoff(self) -> WebhookConfig:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max is shorter than backoff_initial")
        return self

    def wants(self, event: str) -> bool:
        """True if this endpoint is sent events of type `event`."""
        return "*" in self.events or event in self.events

class WrapupCode(Strict):
    """One wrap-up (disposition) code agents may give a finished task, like mod_callcenter's
    and Genesys' "wrap-up codes": its name is the key under customers.wrapup_codes."""

    digits: str | None = Field(default=None, pattern=r"^[0-9]{1,6}$",
                               description="what the agent keys on the phone during wrap-up (then #)")
    description: str = Field(default="", max_length=200)


class CustomersConfig(Strict):
    """One customer, one history across voice, chat and email (docs/customers.md). Without this
    section no customer is recorded and offers carry no history."""

    default_country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$",
        description="ISO 3166 country of caller IDs in national form (DK: 20123456 -> +4520123456); "
                    "without it only international numbers (+45..., 0045...) are customers")
    history: int = Field(default=5, ge=0, le=50, description="interactions shown with each offer")
    key_var: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="flow variable holding an account number (collected or from an http lookup): "
                    "when set, the call's customer is that account, else its caller ID")
    name_var: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                                 description="flow variable with the customer's name (e.g. from a lookup)")
    tier_var: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                                 description="flow variable with the customer's tier (vip, gold, ...)")
    wrapup_codes: dict[str, WrapupCode] = Field(default_factory=dict, max_length=200,
                                                description="codes agents may give a finished task")
    notes_max: int = Field(default=2000, ge=0, le=20000, description="characters of wrap-up notes")
    wrapup_dtmf: bool = Field(default=False, description=(
        "when the caller hangs up, the agent's phone stays connected for `wrapup_seconds` to key a code's "
        "digits and #"))
    wrapup_prompt: str = Field(default="wrapup-code", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$",
                               description="prompt the agent hears then (NAME.wav in paths.prompts)")
    wrapup_seconds: float = Field(default=10.0, gt=0, le=120, description="how long the agent's line stays open")
    header_bytes: int = Field(default=400, ge=100, le=2000,
                              description="at most this much history in the agent leg's X-Ringmaster-Customer-History")

    @field_validator("default_country")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is not None:
            import phonenumbers

            if v not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"{v!r} is not a country phonenumbers knows (ISO 3166 alpha-2, e.g. DK, SE, US)")
        return v

    @field_validator("wrapup_codes")
    @classmethod
    def _codes(cls, v: dict[str, WrapupCode]) -> dict[str, WrapupCode]:
        seen: dict[str, str] = {}
        for name, code in v.items():
            if not inputs.PLAIN_NAME.match(name):
                raise ValueError(f"code {name[:70]!r}: letters, digits, _ . - (at most 64)")
            if code.digits is not None:
                if code.digits in seen:
                    raise ValueError(f"codes {seen[code.digits]!r} and {name!r} have the same digits {code.digits}")
                seen[code.digits] = name
        return v


class Config(Strict):
    def placeholder_secrets(self) -> list[str]:
        """Where a password or token still ends in `-change-me` (the committed demo config's
        placeholders; scripts/run-demo replaces them), as dotted places, e.g. `agents.alice.mqtt_password`."""
        found: list[tuple[str, str | None]] = []
        found += [(f"sip.registrations.{r.name}.password", r.password) for r in self.sip.registrations]
        if self.http is not None:
            found += [(f"http.tokens.{t.name}", t.token) for t in self.http.tokens]
            if self.http.desk is not None:
                found += [(f"http.desk.supervisors.{n}.password", v.password)
                          for n, v in self.http.desk.supervisors.items()]
        if self.mqtt is not None:
            found += [(f"mqtt.clients.{c.username}.password", c.password) for c in self.mqtt.clients]
            found.append(("mqtt.password", self.mqtt.password))
        for name, e in self.http_endpoints.items():
            found += [(f"http_endpoints.{name}.bearer_token", e.bearer_token),
                      (f"http_endpoints.{name}.hmac_secret", e.hmac_secret)]
        for name, a in self.agents.items():
            found.append((f"agents.{name}.mqtt_password", a.mqtt_password))
            found.append((f"agents.{name}.desk_password", a.desk_password))
            if a.softphone is not None:
                found.append((f"agents.{name}.softphone.password", a.softphone.password))
        return [place for place, value in found if value and value.endswith("-change-me")]

    def transfer_route(self, target: TransferTarget) -> Trunk | None:
        """The trunk an external transfer target is dialled through, or None if there is none."""
        return self.sip.trunks.get(target.trunk) if target.trunk else self.sip.mobile_route

    def transfer_target(self, name_or_number: str) -> tuple[str, TransferTarget] | None:
        """(name, target) of the listed external target named or numbered `name_or_number`."""
        if name_or_number in self.transfer_targets:
            return name_or_number, self.transfer_targets[name_or_number]
        return next(((n, t) for n, t in self.transfer_targets.items() if t.number == name_or_number), None)

    def presence_of(self, agent: str) -> PresenceProfile:
        """The agent's presence: its own, its profile's, the profile named default, or the defaults."""
        spec = self.agents[agent]
        if spec.presence is not None:
            return spec.presence
        return self.profiles.get(spec.profile or "default") or PresenceProfile()

    run_as: str | None = Field(
        default=None, pattern=r"^[a-z_][a-z0-9_-]*$",
        description="when started as root, Kamailio and mosquitto drop to this user (and its group); "
                    "ignored when not root")
    sip: SipConfig = Field(default_factory=SipConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    http: HttpConfig | None = None
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    mqtt: MqttConfig | None = None
    profiles: dict[str, PresenceProfile] = Field(default_factory=dict, description="presence profiles agents refer to")
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    queues: dict[str, QueueConfig] = Field(default_factory=dict)
    voicemail: VoicemailConfig = Field(default_factory=VoicemailConfig)
    languages: LanguagesConfig | None = None
    tts: TtsConfig = Field(default_factory=TtsConfig)
    http_endpoints: dict[str, HttpEndpoint] = Field(
        default_factory=dict, description="services `http` flow steps may call, by name")
    webhooks: dict[str, WebhookConfig] = Field(
        default_factory=dict, description="endpoints that receive events as signed HTTP POSTs, by name (docs/webhooks.md)")
    transfer_targets: dict[str, TransferTarget] = Field(
        default_factory=dict, description="external numbers agents may transfer or consult to, by name "
        "(docs/agent-calls.md)")
    flows: dict[str, list[Any]] = Field(default_factory=dict)
    entry_points: list[EntryPoint] = Field(default_factory=list)
    unknown_number: UnknownNumber = Field(default_factory=UnknownNumber)
    customers: CustomersConfig | None = Field(default=None, description="customer keys, history and wrap-up codes")
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig,
                                           description="listen / whisper / barge on live queue calls")
    outbound: list[OutboundRule] = Field(default_factory=list, description=(
        "calls agents place themselves: which numbers, over which trunk, with which caller ID (docs/outbound.md)"))


# ---------------------------------------------------------------- loading


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> set[str]:
    """Field names of the model found at loc (for did-you-mean on unknown keys)."""
    t: Any = model
    for part in loc:
        origin = typing.get_origin(t)
        if origin is Annotated:
            t = typing.get_args(t)[0]
            origin = typing.get_origin(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            f = t.model_fields.get(str(part))
            if f is None:
                return set()
            t = f.annotation
        elif origin in (list, tuple):
            t = typing.get_args(t)[0]
        elif origin is dict:
            t = typing.get_args(t)[1]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            models = [a for a in typing.get_args(t) if isinstance(a, type) and issubclass(a, BaseModel)]
            if not models:
                return set()
            t = models[0]
            if isinstance(part, int):
                continue
            f = t.model_fields.get(str(part))
            if f is None:
                return set()
            t = f.annotation
        else:
            return set()
    if typing.get_origin(t) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        models = [a for a in typing.get_args(t) if isinstance(a, type) and issubclass(a, BaseModel)]
        t = models[0] if models else t
    if isinstance(t, type) and issubclass(t, BaseModel):
        return set(t.model_fields)
    return set()


def pydantic_errors(src: Source, exc: ValidationError, model: Any, prefix: tuple[Any, ...] = ()) -> list[ConfigError]:
    out = []
    for n, err in enumerate(exc.errors()):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = prefix + loc
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            # difflib costs ~0.1 ms a key: past what is shown (MAX_ERRORS), a file of 20 000
            # unknown keys must not take seconds to refuse
            hint = did_you_mean(key, _allowed_keys(model, loc[:-1])) if n < MAX_ERRORS else ""
            out.append(src.error(path, f"unknown key {key!r}{hint}", key=True))
        elif kind == "missing":
            out.append(src.error(path[:-1], f"missing required key {loc[-1]!r}"))
        else:
            where = ".".join(str(p) for p in path) or "top level"
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, (dict, list)) and got is not None else ""
            out.append(src.error(path, f"{where}: {msg}{shown}"))
    return out


def load_config(path: str | Path) -> Config:
    """Load and fully validate a config file; raise ConfigInvalid with every error found."""
    src = yamlsource.load(path)
    return validate(src, base_dir=Path(path).resolve().parent)


def validate(src: Source, base_dir: Path) -> Config:
    from ringmaster.flows.dialplan import check_flows, config_flow_refs, node_context  # flows import config

    if not isinstance(src.data, dict):
        raise ConfigInvalid([src.error((), "the top level must be a mapping of sections")])
    try:
        cfg = Config.model_validate(src.data)
    except ValidationError as exc:
        # report the flows' own errors too, not only the first section's: admins fix all at once
        errors = pydantic_errors(src, exc, Config) + _raw_flow_errors(src, base_dir)
        raise ConfigInvalid(errors) from None
    cfg = cfg.model_copy(update={"paths": _resolve_paths(cfg.paths, base_dir),
                                 "storage": cfg.storage.model_copy(update={"path": str(base_dir / cfg.storage.path)})})
    if cfg.sip.webrtc is not None:  # WSS's PEM files: its own, else the desk's (checked in _check_ports)
        w = cfg.sip.webrtc
        desk = cfg.http.desk if cfg.http is not None else None
        cert = w.certificate or (desk.certificate if desk else None)
        key = w.key or (desk.key if desk else None)
        webrtc = w.model_copy(update={"certificate": str(base_dir / cert) if cert else None,
                                      "key": str(base_dir / key) if key else None})
        cfg = cfg.model_copy(update={"sip": cfg.sip.model_copy(update={"webrtc": webrtc})})
    if cfg.http is not None and cfg.http.desk is not None:  # the desk's PEM files, relative to the config too
        desk = cfg.http.desk.model_copy(update={"certificate": str(base_dir / cfg.http.desk.certificate),
                                                "key": str(base_dir / cfg.http.desk.key)})
        cfg = cfg.model_copy(update={"http": cfg.http.model_copy(update={"desk": desk})})
    errors = check_flows(cfg.flows, config_flow_refs(cfg), node_context(cfg), src)
    errors += _check_acd(cfg, src)
    errors += _check_ports(cfg, src)
    errors += _check_trunks(cfg, src)
    errors += _check_outbound(cfg, src)
    errors += _check_callback_steps(cfg, src)

    errors += _check_customers(cfg, src)
    if errors:
        raise ConfigInvalid(errors)
    return cfg


def _check_customers(cfg: Config, src: Source) -> list[ConfigError]:
    """Wrap-up on the phone needs codes with digits and the prompt the agent hears."""
    c = cfg.customers
    if c is None or not c.wrapup_dtmf:
        return []
    errors = []
    if not any(code.digits for code in c.wrapup_codes.values()):
        errors.append(src.error(("customers", "wrapup_dtmf"), "wrapup_dtmf: no wrap-up code has `digits` to key"))
    prompt = Path(cfg.paths.prompts) / f"{c.wrapup_prompt}.wav"
    if not prompt.is_file():
        errors.append(src.error(("customers", "wrapup_prompt"), f"wrapup_prompt: file not found: {prompt}"))
    return errors


def _raw_flow_errors(src: Source, base_dir: Path) -> list[ConfigError]:
    """Best-effort flow check on unvalidated data (other sections are broken)."""
    from ringmaster.flows.dialplan import check_flows
    from ringmaster.flows.nodes import NodeContext

    data = src.data
    flows = data.get("flows")
    if not isinstance(flows, dict):
        return []
    try:
        paths = _resolve_paths(PathsConfig.model_validate(data.get("paths") or {}), base_dir)
    except ValidationError:
        paths = _resolve_paths(PathsConfig(), base_dir)
    refs = []
    eps = data.get("entry_points")
    for i, ep in enumerate(eps if isinstance(eps, list) else []):
        if isinstance(ep, dict) and isinstance(ep.get("flow"), str):
            refs.append((("entry_points", i, "flow"), ep["flow"]))
    schedules = data.get("schedules")
    names = frozenset(schedules) if isinstance(schedules, dict) else frozenset()
    queues = data.get("queues")
    qnames = frozenset(queues) if isinstance(queues, dict) else frozenset()
    endpoints = data.get("http_endpoints")
    enames = frozenset(endpoints) if isinstance(endpoints, dict) else frozenset()
    vm = data.get("voicemail")
    boxes = vm.get("boxes") if isinstance(vm, dict) else None
    bnames = frozenset(boxes) if isinstance(boxes, dict) else frozenset()
    langs = None
    if data.get("languages") is not None:
        try:
            lc = LanguagesConfig.model_validate(data["languages"])
        except ValidationError:
            return []  # its own error is reported; every prompt would be misjudged without it
        from ringmaster.flows.language import Languages
        langs = Languages(tuple(lc.supported), lc.fallback)
    return check_flows(flows, refs, NodeContext(Path(paths.prompts), schedules=names, queues=qnames,
                                                endpoints=enames, languages=langs, boxes=bnames), src)


def _resolve_paths(paths: PathsConfig, base: Path) -> PathsConfig:
    # relative paths are relative to the config file, so `-c /etc/ringmaster/x.yaml` works
    return PathsConfig(prompts=str(base / paths.prompts), recordings=str(base / paths.recordings),
                       runtime=str(base / paths.runtime))


def _check_acd(cfg: Config, src: Source) -> list[ConfigError]:
    """Queues name agents, queues and flows that must exist; softphone usernames are unique."""
    from ringmaster.flows.nodes.base import NodeContext

    errors = []
    ctx = NodeContext(Path(cfg.paths.prompts))
    users: dict[str, str] = {}
    # agent and queue names are MQTT topic levels and broker user names: keep them plain
    for section, names in (("agents", cfg.agents), ("queues", cfg.queues), ("webhooks", cfg.webhooks)):
        for name in names:
            if not NAME.match(name):
                errors.append(src.error((section, name),
                                        f"{section[:-1]} name {name!r}: use letters, digits, '_', '.' and '-' (at most 64)"))
    for name, agent in cfg.agents.items():
        if agent.softphone is not None:
            other = users.setdefault(agent.softphone.username, name)
            if other != name:
                errors.append(src.error(("agents", name, "softphone", "username"),
                                        f"softphone username {agent.softphone.username!r} is also agent {other!r}'s"))
        if agent.profile is not None and agent.profile not in cfg.profiles:
            errors.append(src.error(("agents", name, "profile"),
                                    f"agent {name!r}: unknown profile {agent.profile!r}{did_you_mean(agent.profile, set(cfg.profiles))}"))
        if agent.profile is not None and agent.presence is not None:
            errors.append(src.error(("agents", name, "presence"), f"agent {name!r}: give a profile or its own presence, not both"))
    for box, spec in cfg.voicemail.boxes.items():
        if not re.match(BOX_NAME, box):
            errors.append(src.error(("voicemail", "boxes", box), f"box name {box!r}: a folder name (letters, digits, "
                                                                 "'_', '.', '-'; no leading dot; at most 64)"))
        if spec.agent is not None and spec.agent not in cfg.agents:
            errors.append(src.error(("voicemail", "boxes", box, "agent"),
                                    f"box {box!r}: unknown agent {spec.agent!r}{did_you_mean(spec.agent, set(cfg.agents))}"))
        if spec.queue is not None and spec.queue not in cfg.queues:
            errors.append(src.error(("voicemail", "boxes", box, "queue"),
                                    f"box {box!r}: unknown queue {spec.queue!r}{did_you_mean(spec.queue, set(cfg.queues))}"))
    for spname, sv in cfg.supervision.supervisors.items():
        at = ("supervision", "supervisors", spname)
        if spname not in cfg.agents:
            errors.append(src.error(at, f"supervisor {spname!r} is not an agent: a supervisor's phone is an "
                                        f"agent's (agents.NAME){did_you_mean(spname, set(cfg.agents))}"))
        for j, sq in enumerate(sv.queues or ()):
            if sq not in cfg.queues:
                errors.append(src.error((*at, "queues", j),
                                        f"supervisor {spname!r}: unknown queue {sq!r}{did_you_mean(sq, set(cfg.queues))}"))
    if cfg.http is not None:
        for i, tok in enumerate(cfg.http.tokens):
            if tok.agent is not None and tok.agent not in cfg.agents:
                errors.append(src.error(("http", "tokens", i, "agent"),
                                        f"token {tok.name!r}: unknown agent {tok.agent!r}{did_you_mean(tok.agent, set(cfg.agents))}"))
            if tok.supervisor is not None and tok.supervisor not in cfg.supervision.supervisors:
                errors.append(src.error(("http", "tokens", i, "supervisor"),
                                        f"token {tok.name!r}: unknown supervisor {tok.supervisor!r}"
                                        f"{did_you_mean(tok.supervisor, set(cfg.supervision.supervisors))}"))
        # one sign-in form for agents and supervisors: a name is one or the other
        for sname, sup in (cfg.http.desk.supervisors.items() if cfg.http.desk is not None else ()):
            where = ("http", "desk", "supervisors", sname)
            if not NAME.match(sname):
                errors.append(src.error(where, f"supervisor name {sname!r}: use letters, digits, '_', '.' and '-' "
                                               "(at most 64)"))
            if sname in cfg.agents:
                errors.append(src.error(where, f"supervisor {sname!r} has the name of an agent: agents and "
                                               "supervisors sign in to the desk by name"))
            for j, sq in enumerate(sup.queues or ()):
                if sq not in cfg.queues:
                    errors.append(src.error((*where, "queues", j),
                                            f"supervisor {sname!r}: unknown queue {sq!r}{did_you_mean(sq, set(cfg.queues))}"))
    if cfg.mqtt is not None:
        for i, client in enumerate(cfg.mqtt.clients):
            if client.username in cfg.agents or client.username == cfg.mqtt.client_id:
                errors.append(src.error(("mqtt", "clients", i, "username"),
                                        f"MQTT client {client.username!r} has the name of an agent or of the controller"))
    from ringmaster.flows.dialplan import languages_of

    langs = cfg.languages
    picker = languages_of(cfg)
    if langs is not None and picker is not None:
        for i, ep in enumerate(cfg.entry_points):
            value = ep.variables.get("language")
            if value is not None and not picker.supports(value):
                errors.append(src.error(("entry_points", i, "variables", "language"),
                                        f"language {value!r} is not supported (languages.supported: "
                                        f"{', '.join(langs.supported)})"))
        for qname, q in cfg.queues.items():
            say = q.announce.say if q.announce is not None else None
            for part in ("position", "wait"):
                text = getattr(say, part) if say is not None else None
                missing = [lang for lang in langs.supported if isinstance(text, dict) and lang not in text]
                if missing:
                    errors.append(src.error(("queues", qname, "announce", "say", part),
                                            f"no text for language(s) {', '.join(missing)} "
                                            f"(languages.supported: {', '.join(langs.supported)})"))
    for qname, q in cfg.queues.items():
        seen = set()
        for i, m in enumerate(q.members):
            if m.agent not in cfg.agents:
                errors.append(src.error(("queues", qname, "members", i),
                                        f"queue {qname!r}: unknown agent {m.agent!r}{did_you_mean(m.agent, set(cfg.agents))}"))
            if m.agent in seen:
                errors.append(src.error(("queues", qname, "members", i), f"queue {qname!r}: agent {m.agent!r} listed twice"))
            seen.add(m.agent)
        if q.overflow is not None:
            if q.overflow.queue is not None and q.overflow.queue not in cfg.queues:
                errors.append(src.error(("queues", qname, "overflow", "queue"),
                                        f"overflow to unknown queue {q.overflow.queue!r}{did_you_mean(q.overflow.queue, set(cfg.queues))}"))
            if q.overflow.queue == qname:
                errors.append(src.error(("queues", qname, "overflow", "queue"), "a queue cannot overflow into itself"))
            if q.overflow.flow is not None and q.overflow.flow not in cfg.flows:
                errors.append(src.error(("queues", qname, "overflow", "flow"),
                                        f"overflow to unknown flow {q.overflow.flow!r}{did_you_mean(q.overflow.flow, set(cfg.flows))}"))
        after = q.continue_on_agent_hangup
        if after is not None and after not in cfg.flows:
            errors.append(src.error(("queues", qname, "continue_on_agent_hangup"),
                                    f"continue_on_agent_hangup to unknown flow {after!r}{did_you_mean(after, set(cfg.flows))}"))
        if q.exit_key is not None and q.exit_key.flow not in cfg.flows:
            errors.append(src.error(("queues", qname, "exit_key", "flow"),
                                    f"exit key goes to unknown flow {q.exit_key.flow!r}{did_you_mean(q.exit_key.flow, set(cfg.flows))}"))
        errors += _check_callback(cfg, src, qname)
        moh = Path(q.moh) if Path(q.moh).is_absolute() else Path(cfg.paths.prompts) / q.moh
        try:
            found = moh.is_dir() or ctx.prompt_path(q.moh).is_file()
        except (OSError, ValueError):  # '' or a name longer than NAME_MAX: not found either
            found = False
        if not found:
            errors.append(src.error(("queues", qname, "moh"), f"music on hold not found: {q.moh} (a prompt name or a directory)"))
        confirming = q.confirm_answer or any(cfg.agents[m.agent].confirm_answer for m in q.members if m.agent in cfg.agents)
        if confirming and q.confirm_prompt:
            try:
                found = ctx.prompt_path(q.confirm_prompt).is_file()
            except (OSError, ValueError):
                found = False
            if not found:
                errors.append(src.error(("queues", qname, "confirm_prompt"),
                                        f"confirm prompt not found: {q.confirm_prompt} (a prompt name)"))
    return errors


def _check_callback(cfg: Config, src: Source, qname: str) -> list[ConfigError]:
    """A queue's `callback:` (docs/callbacks.md): its route is a trunk of sip.trunks, its
    number patterns are ones that trunk allows (no number the route would not carry), its
    schedule exists, its key is not the exit key."""
    cb = cfg.queues[qname].callback
    if cb is None:
        return []
    errors = []
    where = ("queues", qname, "callback")
    trunk = cfg.sip.trunks.get(cb.route)
    if trunk is None:
        errors.append(src.error((*where, "route"), f"callback route {cb.route!r}: not a trunk of sip.trunks"
                                                   f"{did_you_mean(cb.route, set(cfg.sip.trunks))}"))
    elif trunk.allowed:
        for i, pattern in enumerate(cb.allowed):
            if pattern not in trunk.allowed:
                errors.append(src.error((*where, "allowed", i),
                                        f"callback number pattern {pattern!r} is not one route {cb.route!r} allows "
                                        f"(sip.trunks.{cb.route}.allowed: {', '.join(trunk.allowed)})"))
    if cb.schedule is not None and cb.schedule not in cfg.schedules:
        errors.append(src.error((*where, "schedule"), f"callback schedule {cb.schedule!r}: not a schedule"
                                                      f"{did_you_mean(cb.schedule, set(cfg.schedules))}"))
    ek = cfg.queues[qname].exit_key
    if cb.key is not None and ek is not None and ek.key == cb.key:
        errors.append(src.error((*where, "key"), f"callback key {cb.key!r} is also the queue's exit key"))
    return errors


def _check_callback_steps(cfg: Config, src: Source) -> list[ConfigError]:
    """A flow's `callback` step names a queue with `callback:` settings (its route and
    number rules are the queue's)."""
    errors = []
    for fname, steps in cfg.flows.items():
        for i, step in enumerate(steps if isinstance(steps, list) else []):
            if not isinstance(step, dict) or "callback" not in step:
                continue
            opts = step["callback"]
            queue = opts if isinstance(opts, str) else opts.get("queue") if isinstance(opts, dict) else None
            if isinstance(queue, str) and queue in cfg.queues and cfg.queues[queue].callback is None:
                path: tuple[str | int, ...] = ("flows", fname, i, "callback")
                errors.append(src.error(path if isinstance(opts, str) else (*path, "queue"),
                                        f"callback: queue {queue!r} has no callback settings (queues.{queue}.callback)"))
    return errors


def _check_trunks(cfg: Config, src: Source) -> list[ConfigError]:
    """mobile_trunk names a trunk (or is HOST:PORT); mobile agents' numbers are ones it allows."""
    errors = []
    sip = cfg.sip
    if sip.mobile_trunk and sip.mobile_trunk not in sip.trunks:
        host, port = split_hostport(sip.mobile_trunk)
        try:
            _check_ip(host)
            ok = port is not None
        except ValueError:
            ok = False
        if not ok:
            errors.append(src.error(("sip", "mobile_trunk"), f"sip.mobile_trunk {sip.mobile_trunk!r}: not a trunk of "
                                    f"sip.trunks{did_you_mean(sip.mobile_trunk, set(sip.trunks))} nor HOST:PORT"))
            return errors
    trunk = sip.mobile_route
    for name, agent in cfg.agents.items():
        if agent.mobile is not None and trunk is not None and not trunk.allows(agent.mobile):
            errors.append(src.error(("agents", name, "mobile"), f"agent {name!r}: {agent.mobile} is not a number "
                                    f"trunk {sip.mobile_trunk!r} allows (sip.trunks.{sip.mobile_trunk}.allowed)"))
    for name, target in cfg.transfer_targets.items():
        route = cfg.transfer_route(target)
        where = ("transfer_targets", name)
        if target.trunk and target.trunk not in sip.trunks:
            errors.append(src.error((*where, "trunk"), f"transfer target {name!r}: trunk {target.trunk!r} is not one "
                                    f"of sip.trunks{did_you_mean(target.trunk, set(sip.trunks))}"))
        elif route is None:
            errors.append(src.error(where, f"transfer target {name!r}: no trunk (set its trunk, or sip.mobile_trunk)"))
        elif not route.allows(target.number):
            errors.append(src.error((*where, "number"), f"transfer target {name!r}: {target.number} is not a number "
                                    f"its trunk allows (sip.trunks.{target.trunk or sip.mobile_trunk}.allowed)"))
        if name in cfg.queues or name in cfg.agents or name in cfg.flows:
            errors.append(src.error(where, f"transfer target {name!r}: also the name of a queue, agent or flow "
                                    "(a phone's REFER names one of them)"))
    return errors


def _check_outbound(cfg: Config, src: Source) -> list[ConfigError]:
    """Each outbound rule: a known trunk, known agents and profiles, patterns the edge can
    check too (it refuses what no rule lists, whatever a worker is told) and numbers the
    trunk's own `allowed` lets through (tried on sample numbers of each pattern)."""
    from ringmaster.edge.policy import posix_pattern
    from ringmaster.numberpatterns import sample_numbers

    errors = []
    names: set[str] = set()
    for i, rule in enumerate(cfg.outbound):
        where = ("outbound", i)
        if rule.name in names:
            errors.append(src.error((*where, "name"), f"outbound rule {rule.name!r} is named twice"))
        names.add(rule.name)
        trunk = cfg.sip.trunks.get(rule.route)
        if trunk is None:
            errors.append(src.error((*where, "route"), f"outbound rule {rule.name!r}: route {rule.route!r} is not a "
                                    f"trunk of sip.trunks{did_you_mean(rule.route, set(cfg.sip.trunks))}"))
        for j, agent in enumerate(rule.agents):
            if agent != "*" and agent not in cfg.agents:
                errors.append(src.error((*where, "agents", j), f"outbound rule {rule.name!r}: unknown agent "
                                        f"{agent!r}{did_you_mean(agent, set(cfg.agents))}"))
        for j, prof in enumerate(rule.profiles):
            if prof not in cfg.profiles and prof != "default":
                errors.append(src.error((*where, "profiles", j), f"outbound rule {rule.name!r}: unknown profile "
                                        f"{prof!r}{did_you_mean(prof, set(cfg.profiles))}"))
        if not rule.agents and not rule.profiles:
            errors.append(src.error(where, f"outbound rule {rule.name!r} is for nobody: give agents (or '*') or profiles"))
        for j, pattern in enumerate(rule.numbers):
            if posix_pattern(pattern) is None:
                errors.append(src.error((*where, "numbers", j), f"outbound rule {rule.name!r}: pattern {pattern!r} "
                                        "cannot be checked at the edge: use digits, classes, groups, alternation, "
                                        "repetition and \\d only"))
                continue
            if trunk is not None:
                bad = [n for n in sample_numbers(pattern) if not trunk.allows(n)]
                if bad:
                    errors.append(src.error((*where, "numbers", j), f"outbound rule {rule.name!r}: pattern {pattern!r} "
                                            f"lets {bad[0]} through, a number trunk {rule.route!r} does not allow "
                                            f"(sip.trunks.{rule.route}.allowed)"))
    return errors


def trunk_warnings(cfg: Config) -> list[str]:
    """Valid but doubtful trunk settings, as sentences for `ringmaster check`."""
    out = []
    trunk = cfg.sip.mobile_route
    mobiles = {name for name, a in cfg.agents.items() if a.mobile is not None}
    if trunk is None:
        out += [f"agent {name!r} has a mobile number but no sip.mobile_trunk is set: offers to it fail"
                for name in sorted(mobiles)]
    elif trunk.username:
        for qname, q in cfg.queues.items():
            if q.strategy == "ring-all" and any(m.agent in mobiles for m in q.members):
                out.append(f"queue {qname!r} rings all, with mobile agents: trunk {cfg.sip.mobile_trunk!r} "
                           "challenges are answered only on a leg to one agent (Kamailio 5.6 cannot per branch), "
                           "so a challenged mobile branch of a ring-all fails")
    return out


def _check_ports(cfg: Config, src: Source) -> list[ConfigError]:
    errors = []
    w = cfg.workers
    first, last = w.sip_port_base, w.sip_port_base + w.ceiling  # + the registration agent
    if last > 65535:
        errors.append(src.error(("workers", "sip_port_base"), f"workers.sip_port_base: {w.ceiling} workers need ports up to {last}"))
    lo, hi = w.rtp_range
    if first <= cfg.sip.port <= last and w.address == cfg.sip.host:
        errors.append(src.error(("workers", "sip_port_base"), f"workers' SIP ports {first}-{last} overlap the edge's {cfg.sip.listen}"))
    if lo <= last and first <= hi:
        errors.append(src.error(("workers", "rtp_ports"), f"RTP ports {lo}-{hi} overlap the workers' SIP ports {first}-{last}"))
    wr = cfg.sip.webrtc
    if wr is not None:
        if wr.certificate is None or wr.key is None:
            errors.append(src.error(("sip", "webrtc"), "sip.webrtc: WSS needs a certificate and key "
                                                       "(its own, or http.desk's)"))
        rlo, rhi = wr.rtp_range
        if rlo <= hi and lo <= rhi:
            errors.append(src.error(("sip", "webrtc", "rtp_ports"),
                                    f"rtpengine's ports {rlo}-{rhi} overlap the workers' RTP ports {lo}-{hi}"))
        if wr.port in (cfg.sip.port, wr.ng_port) or rlo <= wr.ng_port <= rhi:
            errors.append(src.error(("sip", "webrtc", "listen"),
                                    "sip.webrtc: the WSS port, rtpengine's control port and its media ports must differ "
                                    "from each other and from the edge's"))
    if cfg.http is not None and cfg.http.desk is not None and cfg.http.desk.listen == cfg.http.listen:
        errors.append(src.error(("http", "desk", "listen"), f"http.desk.listen: the desk needs its own address, "
                                                            f"not the API's {cfg.http.listen}"))
    return errors
