"""How the CLI prints report rows: a table for people, CSV and JSON lines for tools."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

CALL_COLUMNS = ["call_id", "arrived", "caller", "called", "flow", "queue", "agent", "wait_s", "talk_s",
                "hold_s", "disposition", "hangup_by", "hangup_cause", "variables", "direction", "route", "task",
                "recording"]
TASK_COLUMNS = ["task_id", "created", "channel", "queue", "priority", "state", "agent", "wait_s", "handle_s",
                "disposition", "due"]


def call_view(rec: dict[str, Any]) -> dict[str, Any]:
    """A call record (reports.reads.calls) as `ringmaster calls` shows it: ISO arrival, waits
    and talk rounded to 0.1 s."""
    def rnd(v: Any) -> Any:
        return round(v, 1) if isinstance(v, float) else v

    return {"call_id": rec["call_id"], "arrived": datetime.fromtimestamp(rec["arrived_at"]).isoformat(timespec="seconds"),
            "caller": rec["caller"], "called": rec["called"], "flow": rec["flow"], "queue": rec["queue"],
            "agent": rec["agent"], "wait_s": rnd(rec["wait_seconds"]), "talk_s": rnd(rec["talk_seconds"]),
            "hold_s": rnd(rec.get("hold_seconds")),
            "disposition": rec["disposition"], "hangup_by": rec["hangup_by"], "hangup_cause": rec["hangup_cause"],
            "variables": _variables(rec.get("variables") or {}), "direction": rec.get("direction") or "inbound",
            # an outbound call's trunk and the chat it was placed from (docs/outbound.md)
            "route": rec.get("route"), "task": rec.get("task_ref"), "recording": rec["recording"]}


def _variables(variables: dict[str, Any]) -> str:
    """The IVR's variables as `name=value` pairs (e.g. a survey's answers), without the caller
    and called numbers that have their own columns."""
    return " ".join(f"{k}={v}" for k, v in sorted(variables.items()) if k not in ("caller", "called"))


def render(rows: list[dict[str, Any]], fmt: str, columns: list[str], header: bool = True) -> str:
    """rows as fmt: json (one object a line), csv (with a header row unless header=False) or
    table (aligned columns; the recording path is left out of the table)."""
    if fmt == "json":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        if header:
            w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    shown = [c for c in columns if c != "recording"]
    cells = [[("" if r[c] is None else str(r[c])) for c in shown] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(shown)]
    lines = []
    if header:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(shown)).rstrip())
    lines += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in cells]
    return "".join(line + "\n" for line in lines)
