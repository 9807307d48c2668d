"""Business hours: weekly opening hours in a time zone, holidays, and a manual override.

Pure functions of (definition, instant, override): no clock inside, so `simulate --at` and
tests ask "is it open at 20:00 on a Monday in Copenhagen?" directly.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def _day_set(key: str) -> set[int]:
    """'mon', 'mon-fri', 'sat,sun', 'fri-mon' -> weekday numbers (0 = Monday)."""
    out: set[int] = set()
    for part in key.lower().replace(" ", "").split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in DAYS or b not in DAYS:
                raise ValueError(f"unknown day in {key!r}; days are {', '.join(DAYS)}")
            i = DAYS.index(a)
            while True:
                out.add(i)
                if i == DAYS.index(b):
                    break
                i = (i + 1) % 7
        elif part in DAYS:
            out.add(DAYS.index(part))
        else:
            raise ValueError(f"unknown day {part!r}; days are {', '.join(DAYS)} (or ranges like mon-fri)")
    return out


def _span(text: str) -> tuple[time, time]:
    m = _SPAN.match(text.strip())
    if not m:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    if h2 == 24 and m2 == 0:
        h2, m2 = 23, 59
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60):
        raise ValueError(f"not a time of day in {text!r}")
    start, end = time(h1, m1), time(h2, m2)
    if end <= start:
        raise ValueError(f"{text!r}: the end must be after the start (split overnight spans over two days)")
    return start, end


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    timezone: str = "UTC"
    hours: dict[str, list[str]] = Field(description="day or day range -> open spans, e.g. mon-fri: [09:00-17:00]")
    holidays: list[date] = Field(default_factory=list, description="closed all day")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (IANA names such as Europe/Copenhagen)") from None
        return v

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, v: object) -> object:
        if isinstance(v, dict):
            v = {str(k): ([x] if isinstance(x, str) else x) for k, x in v.items()}
            for key, spans in v.items():
                _day_set(key)
                if spans is not None and not isinstance(spans, list):
                    raise ValueError(f"{key}: a span like 09:00-17:00 or a list of them")
                for s in spans or []:
                    _span(str(s))
        return v

    def is_open(self, at: datetime) -> tuple[bool, str]:
        local = at.astimezone(ZoneInfo(self.timezone))
        if local.date() in self.holidays:
            return False, f"holiday {local.date().isoformat()}"
        day = local.weekday()
        now = local.time()
        for key, spans in self.hours.items():
            if day in _day_set(key):
                for s in spans:
                    start, end = _span(s)
                    if start <= now < end:
                        return True, f"{DAYS[day]} {s} {self.timezone}"
        return False, f"outside hours ({DAYS[day]} {now.strftime('%H:%M')} {self.timezone})"


def evaluate(schedule: Schedule, at: datetime, override: str | None) -> tuple[bool, str]:
    """override: 'open' | 'closed' | None (follow the hours)."""
    if override == "open":
        return True, "forced open"
    if override == "closed":
        return False, "forced closed"
    return schedule.is_open(at)
