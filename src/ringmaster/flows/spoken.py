"""Text to be spoken: `say` templates expanded with a call's variables, each value written
the way a speech engine reads it well in the call's language.

`${name}` puts a variable in as it is; `${name:FORMAT}` writes it for speech:

| format | value | en | da |
|---|---|---|---|
| digits | `4512` | 4 5 1 2 | 4 5 1 2 (one digit at a time: account numbers, PINs) |
| number | `1234.5` | 1234.5 | 1234,5 |
| amount:CUR | `1234.5` | 1234.50 Danish kroner | 1234,50 danske kroner |
| date | `2026-12-24` | December 24, 2026 | 24. december 2026 |
| time | `14:30` | 2:30 PM | 14.30 |
| minutes | seconds, `150` | 3 minutes | 3 minutter |

Locale data (month names, currency names, plural forms, decimal signs) comes from Babel
(CLDR), so every language CLDR knows is written correctly, not only the two we test. Pure:
no IO, the same text for the same inputs (rendered speech is cached by its text).
A value that does not fit its format (a date that is not ISO) is left out and reported.
"""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.numbers import format_decimal, get_currency_name
from babel.units import format_unit

LANGUAGE_CODE = r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$"
FORMATS = ("digits", "number", "amount", "date", "time", "minutes")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+)(?::([A-Z]{3}))?)?\}")
_ANY_REF = re.compile(r"\$\{[^}]*\}")
VALUE_MAX = 200    # characters of one variable's value put into speech
TEXT_MAX = 1000    # characters of one rendered text (about a minute of speech)


@lru_cache(maxsize=64)
def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language or "en", sep="-")
    except (UnknownLocaleError, ValueError):
        try:
            return Locale.parse(language.split("-", 1)[0])
        except (UnknownLocaleError, ValueError):
            return Locale.parse("en")


def pick_text(text: str | dict[str, str], language: str) -> str:
    """The template for language from one text or a language -> text mapping: the exact
    language, else its primary subtag (en-us -> en), else the first given."""
    if isinstance(text, str):
        return text
    if language in text:
        return text[language]
    return text.get(language.split("-", 1)[0]) or next(iter(text.values()))


def check_texts(text: str | dict[str, str]) -> None:
    """ValueError when one text or a language -> text mapping cannot be spoken (for models)."""
    if isinstance(text, dict):
        if not text:
            raise ValueError("give at least one language's text")
        bad = [k for k in text if not re.match(LANGUAGE_CODE, k)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a language code such as da or en-us")
    for t in text.values() if isinstance(text, dict) else [text]:
        if not t.strip():
            raise ValueError("nothing to say")
        problems = check_template(t)
        if problems:
            raise ValueError("; ".join(problems))


def check_template(template: str) -> list[str]:
    """What is wrong with a template, for `check` (empty when it is fine)."""
    problems = []
    for ref in _ANY_REF.findall(template):
        m = _REF.fullmatch(ref)
        if m is None:
            problems.append(f"{ref}: expected ${{name}} or ${{name:FORMAT}} (formats: {', '.join(FORMATS)}; "
                            "amount takes a currency: ${name:amount:DKK})")
            continue
        fmt, cur = m.group(2), m.group(3)
        if fmt is not None and fmt not in FORMATS:
            problems.append(f"{ref}: unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
        elif cur is not None and fmt != "amount":
            problems.append(f"{ref}: only amount takes a currency")
        elif cur is not None and get_currency_name(cur, locale="en") == cur:
            problems.append(f"{ref}: {cur!r} is not an ISO 4217 currency code")
    if len(template) > TEXT_MAX:
        problems.append(f"longer than {TEXT_MAX} characters")
    return problems


def _decimal(value: str) -> Decimal:
    d = Decimal(value.strip().replace(",", "."))
    if not d.is_finite():
        raise InvalidOperation(value)
    return d


def spoken(value: Any, fmt: str | None, currency: str | None, language: str) -> str:
    """One value written for speech in language; ValueError when it does not fit fmt."""
    text = str(value)[:VALUE_MAX]
    if fmt is None:
        return text
    loc = _locale(language)
    try:
        if fmt == "digits":
            digits = [c for c in text if c.isdigit()]
            if not digits:
                raise ValueError("no digits")
            return " ".join(digits)
        if fmt == "number":
            return format_decimal(_decimal(text), locale=loc, group_separator=False)
        if fmt == "amount":
            d = _decimal(text)
            pattern = "0" if d == d.to_integral_value() else "0.00"
            number = format_decimal(d, format=pattern, locale=loc, group_separator=False)
            if currency is None:
                return number
            return f"{number} {get_currency_name(currency, count=d, locale=loc)}"
        if fmt == "date":
            return format_date(date.fromisoformat(text[:10]), format="long", locale=loc)
        if fmt == "time":
            return format_time(time.fromisoformat(text), format="short", locale=loc)
        if fmt == "minutes":
            seconds = timedelta(seconds=float(_decimal(text))).total_seconds()
            minutes = max(1, int(seconds / 60 + 0.5))  # half up: 150 s is "3 minutes"
            return format_unit(minutes, "duration-minute", length="long", locale=loc)
    except (InvalidOperation, ValueError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a {fmt}: {exc}") from None
    raise ValueError(f"unknown format {fmt!r}")


def render(template: str, variables: dict[str, Any], language: str) -> tuple[str, list[str]]:
    """(text to speak, problems): every ${name[:format]} replaced. An unset variable or a
    value that does not fit its format is left out (the rest is still said) and named in
    problems, for the call's trace. Control characters become spaces; at most TEXT_MAX."""
    problems: list[str] = []

    def one(m: re.Match[str]) -> str:
        name, fmt, cur = m.group(1), m.group(2), m.group(3)
        if name not in variables or variables[name] in (None, ""):
            problems.append(f"${{{name}}} is not set")
            return ""
        try:
            return spoken(variables[name], fmt, cur, language)
        except ValueError as exc:
            problems.append(f"${{{name}}}: {exc}")
            return ""

    text = _REF.sub(one, template)
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())[:TEXT_MAX], problems
