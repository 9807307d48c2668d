"""say: speak a text made from the call's variables, with a TTS engine (config `tts:`).

```yaml
- say: "Your account number is ${account:digits}."        # in the call's language
- say:
    text:                                                  # one text per language
      en: "Your balance is ${balance:amount:DKK}, due ${due:date}."
      da: "Din saldo er ${balance:amount:DKK}, som forfalder ${due:date}."
    barge_in: true
```
Formats (digits, number, amount, date, time, minutes) are in ringmaster.flows.spoken. The
text is expanded here (so `simulate` shows what would be said); the call adapter renders it
to 8 kHz speech, cached, and plays it like a prompt. With `languages:` in the config, a text
per language must be given for each supported one (checked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from ringmaster.flows.actions import FlowEvent, PromptsDone, Speak
from ringmaster.flows.nodes.base import NEXT, Node, NodeContext, NodeOptions, Outcome
from ringmaster.flows.spoken import LANGUAGE_CODE, check_texts, pick_text, render

if TYPE_CHECKING:
    from ringmaster.flows.interpreter import FlowRun


class SayOptions(NodeOptions):
    text: str | dict[str, str] = Field(description="a template (${name} or ${name:FORMAT}), or language -> template")
    language: str | None = Field(default=None, pattern=LANGUAGE_CODE,
                                 description="speak in this language (default: the call's language)")
    voice: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_+-][A-Za-z0-9_+/.-]{0,63}$",
                              description="TTS voice (default: tts.voices of the language)")
    barge_in: bool = Field(default=False, description="a digit stops the speech")

    @field_validator("text")
    @classmethod
    def _text(cls, v: str | dict[str, str]) -> str | dict[str, str]:
        check_texts(v)
        return v


class SayNode(Node):
    kind = "say"
    Options = SayOptions
    shorthand = "text"

    @classmethod
    def check_options(cls, options: SayOptions, ctx: NodeContext) -> None:  # type: ignore[override]
        if isinstance(options.text, dict) and ctx.languages is not None and options.language is None:
            missing = [lang for lang in ctx.languages.supported if lang not in options.text]
            if missing:
                raise ValueError(f"no text for language(s) {', '.join(missing)} "
                                 f"(languages.supported: {', '.join(ctx.languages.supported)})")

    def enter(self, run: FlowRun) -> Outcome:
        o = self.options
        tts = run.plan.cfg.tts
        language = o.language or run.language or tts.language
        said, problems = render(pick_text(o.text, language), dict(run.variables), language)
        for p in problems:
            run.note(f"say: {p}")
        if not said:
            run.note("say: nothing left to say")
            return NEXT
        voice = o.voice or tts.voice(language)
        return Outcome([Speak(said, language, voice, barge_in=o.barge_in)])

    def on_event(self, run: FlowRun, event: FlowEvent) -> Outcome | None:
        return NEXT if isinstance(event, PromptsDone) else None

    def describe(self) -> str:
        text: Any = self.options.text
        first = text if isinstance(text, str) else next(iter(text.values()))
        return "say " + (first if len(first) <= 40 else first[:37] + "...")
