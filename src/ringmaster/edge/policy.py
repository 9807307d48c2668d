"""What the edge may let in and send out, computed from the config and handed to Kamailio.

The edge is the security boundary (docs/design.md): it relays an INVITE only where the dial
plan says a call may go. Four tables, loaded by Kamailio's htable module from db_text files in
the edge's runtime dir and re-read on `htable.reload` when a reload changes the plan:

- `dialin`  numbers a trusted trunk may call: `n:NUMBER` (exact), `p:PREFIX`, `any` (the plan
            routes every number: an `unknown_number` flow, or a pattern the edge cannot check),
            `reject` (the SIP code for everything else, `unknown_number.reject`);
- `dialre`  entry-point patterns as POSIX extended regexes (only those that mean the same in
            Python's `re` and in POSIX: digits, classes, groups, alternation, repetition);
- `targets` `USER@HOST:PORT` of every `transfer` step's URI: the only non-agent destinations a
            worker may dial through the edge (toll-fraud rule: nothing the plan does not list);
            Also `x:NUMBER` -> the trunk's HOST:PORT for each external `transfer_targets` entry:
            a worker's INVITE to `NUMBER@edge` leaves through that trunk, nothing else does;
- `agents`  `u:USERNAME` of softphone agents and `m:NUMBER` of mobile agents (sent to the trunk).
- `outbound` per trunk an outbound rule uses: `o:TRUNK` the rules' number patterns as one
            anchored POSIX ERE, `a:TRUNK` the trunk's own `allowed` patterns (when the edge can
            check them all), `d:TRUNK` `sip:HOST:PORT` to send to (docs/outbound.md).

db_text format: one header line of typed columns, then rows with `:` between fields (`\\:` and
`\\\\` escape a colon and a backslash), as Kamailio's db_text module reads it (dbt_file.c).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ringmaster.config import Config
from ringmaster.flows.dialplan import DialPlan

TABLES = ("dialin", "dialre", "targets", "agents", "outbound")
HEADER = "id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int)"
# htable's db schema version (kamailio utils/kamctl/db_text/version in 5.6)
TABLE_VERSION = 2

# Python regex constructs whose meaning is the same in POSIX ERE (glibc regcomp, C locale).
# Anything else (lookarounds, (?:..), lazy quantifiers, \w \s \b ...) is not translated: the
# edge then lets every number through and the controller's own check rejects it (`any`).
_SAFE_PATTERN = re.compile(r"^(?:[0-9A-Za-z*#+.^$|(){}\[\],\-?]|\\d|\\\+|\\\*|\\\.)*$")


def posix_pattern(pattern: str) -> str | None:
    """The entry-point pattern (Python `re`, full match) as an anchored POSIX ERE, or None
    when it uses something the two dialects do not share. `9\\d{3}` -> `^(9[0-9]{3})$`."""
    if not _SAFE_PATTERN.match(pattern):
        return None
    if re.search(r"[*+?}]\?|\(\?", pattern):  # lazy quantifiers, (?...) groups
        return None
    ere = pattern.replace("\\d", "[0-9]")
    try:
        re.compile(ere)
    except re.error:
        return None
    return f"^({ere})$"


def target_key(uri: str) -> str | None:
    """`sip:user@host[:port][;params]` -> `user@host:port` as the edge sees it ($rU@$rd:$rp);
    None for a URI without a user part. The default port is 5060 (5061 for sips, RFC 3261 19.1.2)."""
    m = re.match(r"^(sips?):([^@;?]+)@([^;?>]+)", uri.strip())
    if m is None:
        return None
    scheme, user, hostport = m.groups()
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest.lstrip(":") or ("5061" if scheme == "sips" else "5060")
        host = f"[{host}]"
    elif ":" in hostport:
        host, port = hostport.rsplit(":", 1)
    else:
        host, port = hostport, ("5061" if scheme == "sips" else "5060")
    return f"{user}@{host.lower()}:{port}"


@dataclass
class EdgePolicy:
    """The four tables as {key: value}; `reject` is the code for numbers no entry point has."""

    dialin: dict[str, str | int] = field(default_factory=dict)
    dialre: dict[str, str | int] = field(default_factory=dict)
    targets: dict[str, str | int] = field(default_factory=dict)
    agents: dict[str, str | int] = field(default_factory=dict)
    outbound: dict[str, str | int] = field(default_factory=dict)
    unchecked_patterns: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: Config, plan: DialPlan | None = None) -> EdgePolicy:
        pol = cls()
        un = cfg.unknown_number
        pol.dialin["reject"] = un.reject
        if un.flow is not None:
            pol.dialin["any"] = 1
        for ep in cfg.entry_points:
            if ep.number is not None:
                pol.dialin[f"n:{ep.number}"] = ep.flow
            elif ep.prefix is not None:
                pol.dialin[f"p:{ep.prefix}"] = ep.flow
            elif ep.pattern is not None:
                ere = posix_pattern(ep.pattern)
                if ere is None:
                    pol.unchecked_patterns.append(ep.pattern)
                    pol.dialin["any"] = 1
                else:
                    pol.dialre[f"r{len(pol.dialre)}"] = ere
        # an upstream PBX calls the registration's user (the DID is in To): always let it in
        for reg in cfg.sip.registrations:
            pol.dialin[f"n:{reg.username}"] = "registration"
        plan = plan or DialPlan(cfg)
        for flow in plan.flows.values():
            for node in flow.nodes:
                if node.kind == "transfer":
                    key = target_key(node.options.to)
                    if key is not None:
                        pol.targets[key] = flow.name
        for target in cfg.transfer_targets.values():
            route = cfg.transfer_route(target)
            if route is not None and route.allows(target.number):
                pol.targets[f"x:{target.number}"] = route.address
        for name, agent in cfg.agents.items():
            if agent.softphone is not None:
                pol.agents[f"u:{agent.softphone.username}"] = name
            if agent.mobile is not None:
                pol.agents[f"m:{agent.mobile}"] = name
        by_route: dict[str, list[str]] = {}
        for rule in cfg.outbound:
            # `check` refuses a rule pattern the edge cannot check; one that slipped through
            # is left out here (the edge then refuses those numbers: fail closed)
            by_route.setdefault(rule.route, []).extend(e for e in map(posix_pattern, rule.numbers) if e is not None)
        for q in cfg.queues.values():
            cb = q.callback
            trunk = cfg.sip.trunks.get(cb.route) if cb is not None else None
            if cb is None or trunk is None:
                continue
            # a queued callback's customer (callbacks.py): the queue's numbers, else the trunk's
            patterns = cb.allowed or trunk.allowed or [r"\+?[0-9]{2,20}"]
            by_route.setdefault(cb.route, []).extend(e for e in map(posix_pattern, patterns) if e is not None)
        for route_name, eres in by_route.items():
            trunk = cfg.sip.trunks.get(route_name)
            if trunk is None or not eres:
                continue
            pol.outbound[f"o:{route_name}"] = "|".join(eres)
            pol.outbound[f"d:{route_name}"] = f"sip:{trunk.address}"
            allowed = [posix_pattern(x) for x in trunk.allowed]
            if allowed and all(a is not None for a in allowed):
                pol.outbound[f"a:{route_name}"] = "|".join(a for a in allowed if a is not None)
        return pol

    def table(self, name: str) -> dict[str, str | int]:
        return dict(getattr(self, name))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("\n", " ")


def dbtext_table(rows: dict[str, str | int]) -> str:
    """db_text rows for htable: key_type 0 (single value), value_type 1 = int, 0 = string."""
    lines = [HEADER]
    for i, (key, value) in enumerate(sorted(rows.items()), start=1):
        vtype = 1 if isinstance(value, int) else 0
        lines.append(f"{i}:{_escape(key)}:0:{vtype}:{_escape(str(value))}:0")
    return "\n".join(lines) + "\n"


def write_tables(dbdir: Path, policy: EdgePolicy) -> list[str]:
    """Write every table whose content changed; returns the names of the changed ones."""
    changed = []
    for name in TABLES:
        path = dbdir / f"edge_{name}"
        text = dbtext_table(policy.table(name))
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)  # db_text re-reads a table whose file changed: never half-written
            changed.append(name)
    return changed
