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


@dataclass(frozen=True)
class Connect:
    """Dial uri and bridge it with the caller (recorded if asked) until one side hangs up."""

    uri: str
    record: bool = False
    ring_timeout: float = 30.0


Action = AnswerCall | PlayPrompts | HangUp | Connect


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


@dataclass(frozen=True)
class ConnectEnded:
    """result: 'completed' (talked, then a side hung up) or the failure ('no_answer', 'busy', ...)."""

    result: str
    code: int = 0


FlowEvent = Answered | PromptsDone | DigitPressed | ConnectEnded
