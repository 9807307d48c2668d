"""voicemail: record a message for a mailbox. `- voicemail: {box: sales, greeting: leave-message}`.

The box is one of `voicemail.boxes` (owned by an agent or a queue; `check` refuses another).
The message ends with #, the caller hanging up, or max_seconds; it is stored as a WAV under
recordings/voicemail/BOX/ with a row in the `voicemails` table (caller, box, length, path),
and its readers hear of it (ringmaster.voicemail: MQTT, message-waiting lamps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from ringmaster.flows.actions import FlowEvent, MessageRecorded, PlayPrompts, PromptsDone, RecordMessage
from ringmaster.flows.language import PromptRef
from ringmaster.flows.nodes.base import NEXT, Node, NodeContext, NodeOptions, Outcome
from ringmaster.flows.nodes.play import prompt_list

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class VoicemailOptions(NodeOptions):
    box: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$", description="a folder name: no leading dot")
    greeting: list[str] = Field(default_factory=list)
    max_seconds: float = Field(default=120.0, gt=0, le=3600)

    _lists = field_validator("greeting", mode="before")(classmethod(lambda cls, v: prompt_list(v)))


class VoicemailNode(Node):
    kind = "voicemail"
    Options = VoicemailOptions
    shorthand = "box"

    def __init__(self, options: VoicemailOptions, ctx: NodeContext, node_id: str = ""):
        super().__init__(options, ctx, node_id)
        self.greeting = ctx.prompts(options.greeting)

    @classmethod
    def file_refs(cls, options: Any, ctx: NodeContext) -> list[tuple[tuple[str | int, ...], PromptRef]]:
        return [(("greeting", i), ctx.prompt(n)) for i, n in enumerate(options.greeting)]

    @classmethod
    def name_refs(cls, options: VoicemailOptions) -> list[tuple[tuple[str | int, ...], str, str]]:  # type: ignore[override]
        return [(("box",), "box", options.box)]

    def _record(self) -> Outcome:
        return Outcome([RecordMessage(self.options.box, self.options.max_seconds)])

    def enter(self, run: FlowRun) -> Outcome:
        run.fresh_state(self)["recording"] = not self.greeting
        if self.greeting:
            return Outcome([PlayPrompts(run.files(self.greeting), barge_in=False)])
        return self._record()

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        state = run.state(self)
        if isinstance(event, PromptsDone) and not state["recording"]:
            state["recording"] = True
            return self._record()
        if isinstance(event, MessageRecorded):
            run.variables["voicemail"] = event.path
            run.note(f"message {event.seconds:.1f} s")
            return NEXT
        return None

    def describe(self) -> str:
        return f"voicemail {self.options.box}"
