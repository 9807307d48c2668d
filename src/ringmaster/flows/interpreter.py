"""FlowRun: the sans-IO interpreter of one call's walk through the dial plan.

Fed FlowEvents, it returns Actions; it owns no sockets and no timers (digit timeouts run in
the worker, the clock is injected), so tests and `ringmaster simulate` drive it with plain
events. A run keeps the DialPlan it started with: a reload never changes a call in progress.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ringmaster.flows.actions import (
    Action,
    AnswerCall,
    CollectDigits,
    Connect,
    EnqueueCall,
    FlowEvent,
    HangUp,
    PlayPrompts,
    RecordMessage,
    Speak,
)
from ringmaster.flows.language import LANGUAGE_VAR
from ringmaster.schedules import evaluate

if TYPE_CHECKING:
    from ringmaster.flows.dialplan import DialPlan, Flow
    from ringmaster.flows.language import PromptRef
    from ringmaster.flows.nodes.base import Node, Outcome

# A walk that makes this many jumps without waiting for anything is a loop that slipped past
# `check` (it rejects loops without input): end the call rather than spin the controller.
MAX_HOPS = 256
# an http lookup is not media: it runs before the answer (the caller hears ringing meanwhile)
_MEDIA = (PlayPrompts, Speak, CollectDigits, Connect, RecordMessage, EnqueueCall)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FlowRun:
    """One call's walk through a flow of `plan`: `start()` runs the first steps, `feed(event)`
    each worker event (digits, playback done, ...), and each returns the actions to carry out
    (play, collect, connect, enqueue, hang up). variables: the call's variables (caller, called,
    and what `set`/`collect` add); clock: the time schedules are evaluated at (UTC, injected for
    tests and simulate); overrides: schedule -> open|closed forced by an operator. path and
    trace record each step for the call record and simulate.
    """

    plan: DialPlan
    flow: Flow
    variables: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], datetime] = _utcnow
    overrides: Mapping[str, str] = field(default_factory=dict)  # schedule name -> open|closed
    index: int = -1
    answered: bool = False
    finished: bool = False
    path: list[str] = field(default_factory=list)   # "flow:id:kind" per step, for the call record
    trace: list[str] = field(default_factory=list)  # what each step decided, for simulate and logs
    _states: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    # ---- node helpers

    @property
    def node(self) -> Node:
        """The step the run is at (flow.nodes[index])."""
        return self.flow.nodes[self.index]

    def state(self, node: Node) -> dict[str, Any]:
        """The step's scratch state (retries, digits so far), kept for the whole run by flow and
        step (a step entered anew empties it with fresh_state)."""
        return self._states.setdefault((self.flow.name, node.id), {})

    def fresh_state(self, node: Node) -> dict[str, Any]:
        """The step's scratch state, emptied: a menu or collect entered anew starts counting again."""
        self._states[(self.flow.name, node.id)] = {}
        return self._states[(self.flow.name, node.id)]

    def note(self, text: str) -> None:
        """Add a line to the trace: what this step decided."""
        self.trace.append(f"{self.flow.name}:{self.node.id} {text}")

    @property
    def language(self) -> str:
        """The language this call is served in: its `language` variable if the plan supports
        it (or its primary subtag), else the plan's fallback; "" when the plan has no languages."""
        langs = self.plan.languages
        return langs.pick(self.variables.get(LANGUAGE_VAR)) if langs is not None else ""

    def files(self, prompts: tuple[PromptRef, ...]) -> tuple[str, ...]:
        """The files of these prompts in the call's language (found at load: no disk access)."""
        lang = self.language
        return tuple(str(p.file(lang)) for p in prompts)

    def schedule_open(self, name: str) -> tuple[bool, str]:
        """(open, why) for the schedule `name` at the run's clock, an operator's override first. KeyError
        for an unknown schedule (check rejects plans naming one).
        """
        return evaluate(self.plan.schedules[name], self.clock(), self.overrides.get(name))

    # ---- driving

    def start(self) -> list[Action]:
        """Walk from the flow's first step to the first one that waits for an event (or the end)."""
        from ringmaster.flows.nodes.base import Outcome

        return self._walk(Outcome(then="next"))

    def feed(self, event: FlowEvent) -> list[Action]:
        """An event for the step that waits (a digit, digits collected, playback or recording done, a
        connect result); the actions that follow. Nothing once the run finished.
        """
        if self.finished or self.index < 0:
            return []
        outcome = self.node.on_event(self, event)
        if outcome is None:
            return []
        return self._walk(outcome)

    def jump(self, flow: str) -> list[Action]:
        """Continue the walk at another flow's start (an ACD overflow or exit key sends callers there)."""
        from ringmaster.flows.nodes.base import Outcome, TargetSpec

        self.finished = False
        return self._walk(Outcome(then=TargetSpec(flow=flow)))

    def _walk(self, outcome: Outcome) -> list[Action]:
        actions: list[Action] = list(outcome.actions)
        then = outcome.then
        hops = 0
        while then != "wait":
            if then == "end":
                self.finished = True
                break
            if then == "next":
                flow, index = self.flow, self.index + 1
            else:
                resolved = self.plan.resolve(self.flow, then)
                if resolved is None:  # `goto: hangup`
                    actions.append(HangUp(200, cause="flow_hangup"))
                    self.finished = True
                    break
                flow, index = resolved
            if index >= len(flow.nodes):
                actions.append(HangUp(200, cause="flow_end"))  # never leave a caller in silence
                self.finished = True
                break
            hops += 1
            if hops > MAX_HOPS:
                self.trace.append(f"{flow.name}: {MAX_HOPS} jumps without waiting: loop, hanging up")
                actions.append(HangUp(200, cause="flow_loop"))
                self.finished = True
                break
            self.flow, self.index = flow, index
            node = flow.nodes[index]
            self.path.append(f"{flow.name}:{node.id}:{node.kind}")
            step = node.enter(self)
            actions += step.actions
            then = step.then
        return self._with_answer(actions)

    def _with_answer(self, actions: list[Action]) -> list[Action]:
        # media needs an answered call: the first prompt answers it (as Asterisk's Playback)
        out: list[Action] = []
        for a in actions:
            if isinstance(a, AnswerCall):
                if self.answered:
                    continue
                self.answered = True
            elif isinstance(a, _MEDIA) and not self.answered:
                self.answered = True
                out.append(AnswerCall())
            out.append(a)
        return out
