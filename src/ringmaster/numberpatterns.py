"""Sample numbers of a dial-plan number pattern (a regular expression), to try them on a
trunk's `allowed` patterns when the config is checked: pure functions of the pattern.

Apart from outbound.py (which re-exports `sample_numbers`) so that config.py's check need not
import the outbound call adapter.
"""

from __future__ import annotations

import re
import re._parser as sre  # the stdlib's own regex parser: sample numbers of a pattern
from typing import Any

__all__ = ["sample_numbers"]


def sample_numbers(pattern: str) -> list[str]:
    """A few numbers the pattern matches (the shortest with the first choices, the longest with
    the last, each alternative of the top level), to try against a trunk's `allowed`: a rule
    that lets through numbers its trunk refuses is a config error. [] for a pattern this
    cannot sample (negated classes, look-arounds)."""
    try:
        tree = sre.parse(pattern)
    except re.error:
        return []
    out: list[str] = []
    tops = [tree]
    if len(tree) == 1 and tree[0][0] is sre.BRANCH:
        tops = tree[0][1][1]
    for top in tops:
        for last in (False, True):
            text = _sample(top, last)
            if text is not None and re.fullmatch(pattern, text) and text not in out:
                out.append(text)
    return out


def _sample(items: Any, last: bool) -> str | None:
    parts: list[str] = []
    for op, av in items:
        if op is sre.LITERAL:
            parts.append(chr(av))
        elif op is sre.IN:
            ch = _from_class(av, last)
            if ch is None:
                return None
            parts.append(ch)
        elif op is sre.ANY:
            parts.append("9" if last else "0")
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            lo, hi, sub = av
            n = min(hi, lo + 4) if last else lo
            one = _sample(sub, last)
            if one is None:
                return None
            parts.append(one * n)
        elif op is sre.SUBPATTERN:
            one = _sample(av[-1], last)
            if one is None:
                return None
            parts.append(one)
        elif op is sre.BRANCH:
            branches = av[1]
            one = _sample(branches[-1] if last else branches[0], last)
            if one is None:
                return None
            parts.append(one)
        elif op is sre.AT:
            continue
        else:
            return None
    return "".join(parts)


def _from_class(items: Any, last: bool) -> str | None:
    chars: list[str] = []
    for op, av in items:
        if op is sre.NEGATE:
            return None
        if op is sre.LITERAL:
            chars.append(chr(av))
        elif op is sre.RANGE:
            chars += [chr(av[0]), chr(av[1])]
        elif op is sre.CATEGORY and av is sre.CATEGORY_DIGIT:
            chars += ["0", "9"]
        else:
            return None
    if not chars:
        return None
    return chars[-1] if last else chars[0]
