"""What a call's adapter (calls.CallSession) needs of the modules that drive it, as Protocols.

The queue runtime (acd/runtime.py), supervision (supervision.py) and the customer book
(customers.py) drive calls and are called back by them; naming here only what CallSession
uses of each keeps the imports one way (they import calls.py for its type; calls.py imports
none of them, not even for type checking).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ringmaster import protocol as p
    from ringmaster.acd.engine import QueueEngine

# the call as the runtime's methods take it (calls.CallSession): Any here, so this module need
# not import calls.py (which imports it)
CallSession = Any


class QueueRuntime(Protocol):
    """The queue runtime as a call sees it (acd.runtime.AcdRuntime). `callbacks` is the
    queued callbacks' adapter (callbacks.Callbacks) or None; `calls` the queued calls by id."""

    engine: QueueEngine
    callbacks: Any
    calls: dict[str, Any]

    def enqueue(self, session: CallSession, queue: str, priority: int,
                skills: tuple[tuple[str, int], ...] = (), offer_to: str | None = None) -> None: ...
    def caller_gone(self, session: CallSession) -> None: ...
    def caller_ended_connected(self, session: CallSession) -> None: ...
    def digit(self, session: CallSession, digit: str) -> None: ...
    def callback_taken(self, session: CallSession, number: str) -> tuple[str, list[str]] | None: ...
    def position_prompts(self, session: CallSession, task_id: str) -> list[str]: ...
    def call_prompts(self, session: CallSession, names: list[str]) -> list[str]: ...
    def owns_leg(self, session: CallSession, leg: str) -> bool: ...
    def agent_leg_event(self, session: CallSession, msg: p.Message) -> None: ...
    def hold_changed(self, session: CallSession, party: str, held: bool, seconds: float) -> None: ...
    def bridged(self, session: CallSession, other: str) -> None: ...
    def refer_target(self, session: CallSession, uri: str) -> tuple[str, str]: ...
    def blind_transfer(self, agent: str, kind: str, target: str, via: str) -> dict[str, Any]: ...


class CustomerView(Protocol):
    """The customer an offer shows (customers.CustomerContext)."""

    @property
    def key(self) -> str: ...
    def view(self) -> dict[str, Any]: ...
    def headers(self, max_bytes: int) -> tuple[tuple[str, str], ...]: ...


class CustomerDirectory(Protocol):
    """The customer book as a call sees it (customers.CustomerBook)."""

    async def call_context(self, session: CallSession) -> Any: ...
    def call_identified(self, session: CallSession) -> str | None: ...
    def line_event(self, session: CallSession, msg: p.Message) -> None: ...


class SupervisionRef(Protocol):
    """A supervisor on the call (supervision.Supervision): her leg."""

    @property
    def leg(self) -> str: ...


class SupervisionDesk(Protocol):
    """The live supervisions (supervision.Supervisions) as a call sees them."""

    def on_event(self, sup: Any, msg: p.Message) -> None: ...
    def end(self, sup: Any, how: str) -> None: ...
