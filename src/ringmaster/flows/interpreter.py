"""FlowRun: the sans-IO interpreter of one call's walk through a flow.

Fed FlowEvents, it returns Actions; it owns no sockets and no timers, so a test (or
`ringmaster simulate`) can drive it with plain events. Steps run in order; a flow that
runs off its end hangs up, as a caller left in silence is the worst outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ringmaster.flows.actions import Action, AnswerCall, Connect, FlowEvent, HangUp, PlayPrompts
from ringmaster.flows.dialplan import Flow


@dataclass
class FlowRun:
    flow: Flow
    variables: dict[str, Any] = field(default_factory=dict)
    index: int = -1
    answered: bool = False
    finished: bool = False
    path: list[str] = field(default_factory=list)  # "flow:index:kind", for the call record

    def start(self) -> list[Action]:
        return self._advance()

    def feed(self, event: FlowEvent) -> list[Action]:
        if self.finished or self.index < 0:
            return []
        node = self.flow.steps[self.index]
        done, actions = node.on_event(self.variables, event)
        if done:
            actions = actions + self._advance()
        return self._with_answer(actions)

    def _advance(self) -> list[Action]:
        while True:
            self.index += 1
            if self.index >= len(self.flow.steps):
                self.finished = True
                return [HangUp(200, cause="flow_end")]
            node = self.flow.steps[self.index]
            self.path.append(f"{self.flow.name}:{self.index}:{node.kind}")
            actions = self._with_answer(node.enter(self.variables))
            if any(isinstance(a, HangUp) for a in actions):
                self.finished = True
            if actions:
                return actions

    def _with_answer(self, actions: list[Action]) -> list[Action]:
        # media needs an answered call: the first prompt answers it (as Asterisk's Playback)
        out: list[Action] = []
        for a in actions:
            if isinstance(a, AnswerCall):
                if self.answered:
                    continue
                self.answered = True
            elif isinstance(a, (PlayPrompts, Connect)) and not self.answered:
                self.answered = True
                out.append(AnswerCall())
            out.append(a)
        return out
