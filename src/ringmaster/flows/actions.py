"""What a flow asks the call engine to do, and what the engine tells a flow.

These are the interpreter's vocabulary, independent of the worker protocol: the call
adapter (ringmaster.calls) maps them to protocol commands for the leg's worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ringmaster.config import HttpEndpoint

# ---- actions (flow -> engine)


@dataclass(frozen=True)
class AnswerCall:
    pass


@dataclass(frozen=True)
class PlayPrompts:
    files: tuple[str, ...]
    barge_in: bool = False


@dataclass(frozen=True)
class CollectDigits:
    """Collect digits; the engine answers with DigitsEntered. Timers start when prompts end."""

    max_digits: int
    terminators: str = ""
    first_timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    flush: bool = False


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


@dataclass(frozen=True)
class RecordMessage:
    """Record what the caller says (voicemail) until # , hang-up or max_seconds."""

    box: str
    max_seconds: float = 120.0


@dataclass(frozen=True)
class StoreCallback:
    """Ask for a queued callback to number (docs/callbacks.md); the step waits for
    CallbackStored (the caller hears the position and wait, or why the number was refused)."""

    number: str
    queue: str
    priority: int = 0


@dataclass(frozen=True)
class EnqueueCall:
    """Hand the call to the ACD queue; the flow waits until the queue lets the caller go."""

    queue: str
    priority: int = 0
    skills: tuple[tuple[str, int], ...] = ()  # (skill, minimum level) this call needs


@dataclass(frozen=True)
class Speak:
    """Say text (already expanded: no variables left) in language with a TTS voice, then
    PromptsDone as for a prompt. The call adapter renders it (ringmaster.tts) and plays it."""

    text: str
    language: str
    voice: str
    barge_in: bool = False


@dataclass(frozen=True)
class HttpRequest:
    """Call a configured HTTP endpoint with these values (query for GET, JSON body for POST);
    the engine answers with HttpAnswered, within the endpoint's timeout. The endpoint's
    settings travel with the request, so a call started before a reload uses its plan's."""

    name: str
    endpoint: HttpEndpoint
    values: tuple[tuple[str, str], ...]


Action = (AnswerCall | PlayPrompts | CollectDigits | HangUp | Connect | RecordMessage | StoreCallback | EnqueueCall
          | Speak | HttpRequest)


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
class DigitsEntered:
    """reason: max_digits, terminator, timeout (nothing pressed) or inter_digit_timeout."""

    digits: str
    reason: str


@dataclass(frozen=True)
class ConnectEnded:
    """result: 'completed' (talked, then a side hung up) or the failure ('no_answer', 'busy', ...)."""

    result: str
    code: int = 0


@dataclass(frozen=True)
class MessageRecorded:
    path: str
    seconds: float


@dataclass(frozen=True)
class QueueLeft:
    """The queue let the caller go unserved (timeout, empty, full) with no target of its own."""

    reason: str


@dataclass(frozen=True)
class HttpAnswered:
    """result: 'ok' (a 2xx with a JSON object), 'error' (connection refused, a non-2xx after the
    retries, a body that is not a JSON object) or 'timeout' (no answer within the timeout).
    status: the HTTP status (0 when there was none); data: the JSON object ({} unless ok)."""

    result: str
    status: int = 0
    data: dict[str, Any] | None = None
    detail: str = ""


@dataclass(frozen=True)
class CallbackStored:
    """The callback step's answer: its id, position and estimated wait (minutes, None if no
    estimate), or error (the number was refused; nothing stored)."""

    callback_id: str = ""
    position: int = 0
    wait_minutes: int | None = None
    error: str = ""


FlowEvent = (CallbackStored | Answered | PromptsDone | DigitPressed | DigitsEntered | ConnectEnded | MessageRecorded | QueueLeft
             | HttpAnswered)
