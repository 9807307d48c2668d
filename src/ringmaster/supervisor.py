"""What a supervisor may do, in one place for both ways in: the HTTP API (bearer tokens with a
role) and the desk's supervisor sessions (http.desk.supervisors).

ROLES ranks the roles; `role_refusal` is the one check both use (the API's middleware for each
route's least role, the desk for its supervisor routes), with the same words. The actions are
the API's: change an agent's presence (login, logout, pause with a reason, unpause:
Controller.agent_command, the same presence commands as MQTT and the CLI) and change a queue's
members at run time (AddQueueMember, RemoveQueueMember, QueueMemberPenalty:
Controller.member_command, kept across restarts, docs/runtime-changes.md). Each takes the
request's JSON object, checks its fields and raises ActionRefused with the reason; nothing
changes then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ringmaster.acd.model import AgentAction

if TYPE_CHECKING:
    from ringmaster.controller import Controller

ROLES = {"agent": 0, "operator": 1, "supervisor": 2, "admin": 3}
REASON_MAX = 64  # a pause reason: what the queue_log PAUSE row and MQTT state carry
MEMBER_ACTIONS = ("add", "remove", "tier")


class ActionRefused(ValueError):
    """A supervisor action that cannot be done as asked: the reason (a 400 for either caller)."""


def role_refusal(role: str, needed: str) -> str | None:
    """Why `role` may not do what needs `needed` (None: it may). Roles: ROLES's keys."""
    if ROLES[role] < ROLES[needed]:
        return f"role {role} may not do this; it needs {needed}"
    return None


def agent_change(controller: Controller, agent: str, body: dict[str, Any]) -> dict[str, Any]:
    """Change `agent`'s presence: body {"action": login|logout|pause|unpause, "reason": str}
    (reason: at most REASON_MAX printable characters). {"agent", "state"} after the change;
    ActionRefused for unknown fields, a bad action or reason, or what the ACD refuses (an agent
    it does not know)."""
    unknown = set(body) - {"action", "reason"}
    if unknown:
        raise ActionRefused(f"unknown field(s) {sorted(unknown)[:5]}; fields: action, reason")
    action = body.get("action")
    if not isinstance(action, str) or action not in set(AgentAction):
        raise ActionRefused("action: " + ", ".join(AgentAction))
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > REASON_MAX or not reason.isprintable():
        raise ActionRefused(f"reason: a string of at most {REASON_MAX} printable characters")
    result = controller.agent_command(agent, AgentAction(action), reason)
    if result.get("error"):
        raise ActionRefused(result["error"])
    return result


def member_add_fields(body: dict[str, Any]) -> tuple[str, Any]:
    """The agent and tier of an AddQueueMember body {"agent": str, "tier": 1-9 (optional)}."""
    if set(body) - {"agent", "tier"}:
        raise ActionRefused(f"unknown field(s) {sorted(set(body) - {'agent', 'tier'})[:5]}; fields: agent, tier")
    agent = body.get("agent")
    if not isinstance(agent, str):
        raise ActionRefused("agent: the agent's name in the config's agents")
    return agent, body.get("tier")


def member_change(controller: Controller, queue: str, agent: str, action: str, tier: Any = None,
                  by: str = "") -> dict[str, Any]:
    """AddQueueMember (`add`, with a tier), RemoveQueueMember (`remove`) or QueueMemberPenalty
    (`tier`) on the running daemon; by: who asked (the token's or the supervisor's name, logged
    and stored with the change). The result; ActionRefused with the reason (an unknown queue or
    agent, a member twice, a bad tier)."""
    if action not in MEMBER_ACTIONS:
        raise ActionRefused("action: " + ", ".join(MEMBER_ACTIONS))
    result = controller.member_command(queue, agent, action, tier, by=by)
    if result.get("error"):
        raise ActionRefused(result["error"])
    return result
