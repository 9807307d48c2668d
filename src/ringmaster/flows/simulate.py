"""`ringmaster simulate`: walk a flow without SIP, printing each step and the final action.

It drives the same sans-IO FlowRun the daemon uses. The caller's input is a list of
entries, one per time the flow waits for digits: "1", "1234#", or "" (no input: timeout).
Prompts play to the end, transfers are answered, voicemails are recorded, unless told otherwise.
`say` steps print what would be said (and in which language and voice); `http` steps take
canned answers (`canned_answer`), since simulate calls no service.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ringmaster.flows.actions import (
    AnswerCall,
    Answered,
    CallbackStored,
    CollectDigits,
    Connect,
    ConnectEnded,
    DigitsEntered,
    EnqueueCall,
    FlowEvent,
    HangUp,
    HttpAnswered,
    HttpRequest,
    MessageRecorded,
    PlayPrompts,
    PromptsDone,
    RecordMessage,
    Speak,
    StoreCallback,
)
from ringmaster.flows.dialplan import DialPlan
from ringmaster.flows.interpreter import FlowRun

MAX_TURNS = 500


def collect(entry: str, c: CollectDigits) -> DigitsEntered:
    """What the worker reports for this input (same rules as the worker's collection)."""
    for i, d in enumerate(entry):
        if d in c.terminators:
            return DigitsEntered(entry[:i], "terminator")
        if i + 1 >= c.max_digits:
            return DigitsEntered(entry[: i + 1], "max_digits")
    if not entry:
        return DigitsEntered("", "timeout")
    return DigitsEntered(entry, "inter_digit_timeout")


def _shown(file: str, prompts_dir: Path) -> str:
    """A prompt as the plan names it: relative to the prompts dir (da/welcome), no .wav."""
    p = Path(file)
    try:
        return str(p.relative_to(prompts_dir).with_suffix(""))
    except ValueError:
        return p.stem


def canned_answer(text: str) -> HttpAnswered:
    """An endpoint's answer from the command line: a JSON object (200), `timeout`, `error`
    (no connection) or an HTTP status such as 500. ValueError otherwise."""
    t = text.strip()
    if t in ("timeout", "error"):
        return HttpAnswered(t, detail="canned")
    if t.isdigit() and 100 <= int(t) <= 599:
        status = int(t)
        if 200 <= status < 300:
            return HttpAnswered("ok", status=status, data={})
        return HttpAnswered("error", status=status, detail=f"HTTP {status} (canned)")
    try:
        data = json.loads(t)
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected a JSON object, timeout, error or an HTTP status, got {text!r}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the answer must be a JSON object, got {text!r}")
    return HttpAnswered("ok", status=200, data=data)


@dataclass
class Simulation:
    lines: list[str] = field(default_factory=list)
    final: str = ""
    variables: dict[str, Any] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)


def simulate(plan: DialPlan, flow: str, inputs: list[str], caller: str = "", called: str = "",
             at: datetime | None = None, overrides: dict[str, str] | None = None,
             transfer_result: str = "completed", answers: dict[str, list[HttpAnswered]] | None = None,
             variables: dict[str, str] | None = None) -> Simulation:
    """Walk flow with inputs (one entry per digit collection). answers: endpoint -> canned
    answers used in turn (the last one again after that; none: an error); variables: what
    the call starts with besides caller and called (an entry point's, e.g. language)."""
    if flow not in plan.flows:
        raise KeyError(f"unknown flow {flow!r}; flows: {', '.join(sorted(plan.flows))}")
    when = at or datetime.now().astimezone()
    pending_answers = {k: list(v) for k, v in (answers or {}).items()}
    prompts_dir = Path(plan.cfg.paths.prompts)
    run = FlowRun(plan, plan.flows[flow], variables={**(variables or {}), "caller": caller, "called": called},
                  clock=lambda: when, overrides=overrides or {})
    sim = Simulation()
    out = sim.lines
    out.append(f"call to flow {flow!r} from {caller or '(no caller ID)'} at {when.isoformat(timespec='minutes')}")
    pending = list(inputs)
    seen_trace = 0
    actions = run.start()
    for _ in range(MAX_TURNS):
        for note in run.trace[seen_trace:]:
            out.append(f"    {note}")
        seen_trace = len(run.trace)
        event: FlowEvent | None = None
        for a in actions:
            where = f"{run.flow.name}:{run.node.id}" if run.index >= 0 else ""
            if isinstance(a, AnswerCall):
                out.append(f"{where:<18} answer")
                event = event or Answered()
            elif isinstance(a, PlayPrompts):
                names = ", ".join(_shown(f, prompts_dir) for f in a.files)
                out.append(f"{where:<18} play {names}{' (barge-in)' if a.barge_in else ''}")
                event = PromptsDone()
            elif isinstance(a, CollectDigits):
                if pending:
                    entry = pending.pop(0)
                else:
                    entry = ""
                    out.append(f"{where:<18} (no more input: the caller stays silent)")
                event = collect(entry, a)
                shown = event.digits or "nothing"
                out.append(f"{where:<18} caller presses {entry or 'nothing'} -> {shown} ({event.reason})")
            elif isinstance(a, Speak):
                out.append(f"{where:<18} say [{a.language}, voice {a.voice}] {a.text!r}"
                           f"{' (barge-in)' if a.barge_in else ''}")
                event = PromptsDone()
            elif isinstance(a, HttpRequest):
                queue = pending_answers.get(a.name) or []
                answer = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else \
                    HttpAnswered("error", detail="no canned answer (--answer NAME=...)")
                sent = ", ".join(f"{k}={v}" for k, v in a.values)
                out.append(f"{where:<18} http {a.name}: {a.endpoint.method} {a.endpoint.url} ({sent}) -> "
                           f"{answer.result}{f' {answer.status}' if answer.status else ''}"
                           f"{f' {json.dumps(answer.data, sort_keys=True)}' if answer.data else ''}")
                event = answer
            elif isinstance(a, Connect):
                out.append(f"{where:<18} transfer to {a.uri}{' (recorded)' if a.record else ''}: {transfer_result}")
                event = ConnectEnded(transfer_result)
            elif isinstance(a, RecordMessage):
                out.append(f"{where:<18} record a message for box {a.box}")
                event = MessageRecorded(f"voicemail/{a.box}/(simulated).wav", 10.0)
            elif isinstance(a, StoreCallback):
                out.append(f"{where:<18} queue a callback to {a.number or '(unknown)'} in {a.queue}")
                event = CallbackStored("cb-(simulated)", 1, None) if a.number else CallbackStored(error="no number")
            elif isinstance(a, EnqueueCall):
                out.append(f"{where:<18} enter queue {a.queue} (priority {a.priority}); the ACD takes the call")
                sim.final = f"queued in {a.queue}"
            elif isinstance(a, HangUp):
                sim.final = f"hang up ({a.cause})"
        if run.finished or sim.final.startswith("queued"):
            break
        if event is None:
            sim.final = "waiting with nothing to wait for (a bug in the plan or in ringmaster)"
            break
        actions = run.feed(event)
    else:
        sim.final = f"stopped after {MAX_TURNS} turns"
    for note in run.trace[seen_trace:]:
        out.append(f"    {note}")
    out.append(f"end: {sim.final}")
    sim.variables = dict(run.variables)
    sim.path = list(run.path)
    return sim
