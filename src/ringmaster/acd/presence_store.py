"""PresenceStore: agents' login and pause (with its reason) kept in the store, so they survive
a restart (DESIGN.md: "Pause reasons and login state survive a restart").

The queue runtime tells it of every AgentChanged; it writes a row only when the agent's
(logged in, pause reason) pair changed, not on every offer or wrap-up. At start `restore`
reads the pairs back into the engine, once, before anything is written: until then changes
(an auto_login at construction) are not written, so a stored state is never overwritten by
the start's own defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringmaster.acd.engine import QueueEngine
    from ringmaster.store import Store


class PresenceStore:
    """Agents' (logged in, pause reason) in the store's agent_presence table; `clock()` gives
    the epoch seconds a change is stored with."""

    def __init__(self, store: Store, engine: QueueEngine, clock: Callable[[], float]):
        self.store = store
        self.engine = engine
        self.clock = clock
        self.restored = False
        self._written: dict[str, tuple[bool, str | None]] = {}

    async def restore(self, now: float) -> int:
        """Put every stored agent's login and pause back into the engine (agents the config no
        longer has are skipped), then write the agents the store did not know. Returns how
        many agents were read."""
        presences = await self.store.agent_presences()
        for agent, (logged_in, paused) in presences.items():
            if agent in self.engine.agents:
                self.engine.restore_agent(agent, logged_in, paused, now)
                self._written[agent] = (logged_in, paused)
        self.restored = True
        return len(presences)

    def write_unknown(self) -> None:
        """Write every agent whose state the store does not hold yet (new in the config)."""
        for agent in self.engine.agents:
            self.changed(agent)

    def changed(self, agent: str) -> None:
        """An AgentChanged: write the agent's (logged in, pause reason) if it differs from the
        last written (a queued write: store.py's writer)."""
        st = self.engine.agents.get(agent)
        if st is None or not self.restored:
            return  # removed by a reload, or not restored yet
        state = (st.logged_in, st.paused)
        if self._written.get(agent) != state:
            self._written[agent] = state
            self.store.agent_presence(agent, st.logged_in, st.paused, self.clock())
