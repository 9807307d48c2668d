"""What the queue runtime (acd/runtime.py) needs of the task router above it, as Protocols.

AcdRuntime hands chat and email work to their router and tells it of agents' and calls'
changes (tasks.TaskRouter); naming here only what it uses keeps the import one way
(tasks -> acd.runtime; acd.runtime does not import tasks, not even for type checking).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ringmaster.acd.engine import Action, Bridge, CancelRing, QueueLog, Ring, Unroutable
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


class QueueCallbacks(Protocol):
    """The queued callbacks as calls (callbacks.Callbacks, set by the controller): what the
    runtime asks of them. Named here so that callbacks -> acd.runtime is the only direction
    (docs/callbacks.md)."""

    def request_in_queue(self, call_id: str, number: str, variables: dict[str, Any]) -> str | None:
        """The waiting caller keeps its place as a callback to `number`; its id, or None."""
        ...

    def queues_changed(self) -> None:
        """After a reload: store callbacks a drained queue moved elsewhere."""
        ...

    def owns(self, task_id: str) -> bool:
        """Whether the engine's task `task_id` is a callback (or one's call)."""
        ...

    def apply(self, a: Action) -> None:
        """One engine action about a callback task."""
        ...
