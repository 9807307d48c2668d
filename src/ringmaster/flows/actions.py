"""What a flow asks the call engine to do, and what the engine tells a flow.

These are the interpreter's vocabulary, independent of the worker protocol: the call
adapter maps them to protocol commands for the leg's worker.
"""

from __future__ import annotations

from dataclasses import dataclass


# ---- actions (flow -> engine)

@dataclass(frozen=True)
class AnswerCall:
    pass


@dataclass(frozen=True)
class PlayPrompts:
    files: tuple[str, ...]
    barge_in: bool = False


@dataclass(frozen=True)
class HangUp:
    code: int = 200
    cause: str = "flow_hangup"


Action = AnswerCall | PlayPrompts | HangUp


# ---- events (engine -> flow)

@dataclass(frozen=True)
class Answered:
    pass


@dataclass(frozen=True)
class PromptsDone:
    interrupted: bool = False


@dataclass(frozen=True)
class DigitPressed:
    digit: str


FlowEvent = Answered | PromptsDone | DigitPressed
