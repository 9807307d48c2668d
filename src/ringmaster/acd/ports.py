"""What the queue runtime (acd/runtime.py) needs of the task router above it, as Protocols.

AcdRuntime hands chat and email work to their router and tells it of agents' and calls'
changes (tasks.TaskRouter); naming here only what it uses keeps the import one way
(tasks -> acd.runtime; acd.runtime does not import tasks, not even for type checking).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ringmaster.acd.engine import Bridge, CancelRing, QueueLog, Ring, Unroutable
    from ringmaster.calls import CallSession


class TaskChannel(Protocol):
    """Where the engine's actions for one non-voice channel (chat, email) go: the task router.
    AcdRuntime dispatches by the action's channel (`AcdRuntime.route_channel`)."""

    def apply(self, a: Ring | CancelRing | Bridge | QueueLog) -> None: ...


class AcdListener(Protocol):
    """Who hears of agents' and calls' changes (tasks.TaskRouter: MQTT agent states, queue
    stats, calls/events, errors)."""

    def agent_changed(self, agent: str) -> None: ...
    def unroutable(self, a: Unroutable, text: str) -> None: ...
    def call_event(self, event: str, session: CallSession, queue: str, **extra: Any) -> None: ...
    def publish_call_event(self, payload: dict[str, Any]) -> None: ...
