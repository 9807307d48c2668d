"""The caller's language: which language a call is served in, and which file a prompt name
plays in each language.

A call's language is its `language` variable, set by the entry point, a `set` step after a
menu choice, or an `http` lookup's answer. Prompts are looked up per language at load time
(`PromptRef`): a plan is checked against the files once, and the interpreter only picks from
what was found, without touching the disk (it stays sans-IO).

Resolution of a prompt name N for language L, fallback F (the plan's `languages:` section):
- `N` plain (`welcome`, `digits/3`): `<prompts>/L/N.wav`; for F also `<prompts>/N.wav`,
  so a plan's existing unlabelled prompts are its fallback language's;
- `N` with `${language}` (`${language}/welcome`): that name with L put in (for F, also
  without the `${language}/` folder);
- an absolute path: that file in every language (`${language}` may appear in it too).
No other variable may appear in a prompt name: `check` could not know which files exist.
A call whose language is not supported (a lookup answered `fr`) hears F.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LANGUAGE_VAR = "language"
_LANG_REF = "${" + LANGUAGE_VAR + "}"
_ANY_REF = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class Languages:
    """supported: the languages every prompt must exist in; fallback: one of them."""

    supported: tuple[str, ...]
    fallback: str

    def pick(self, value: Any) -> str:
        """The supported language for a variable's value: exact ("da"), else its primary
        subtag ("da-DK" -> "da"), case-insensitive; the fallback for anything else."""
        if not isinstance(value, str) or not value:
            return self.fallback
        code = value.strip().lower().replace("_", "-")
        if code in self.supported:
            return code
        primary = code.split("-", 1)[0]
        return primary if primary in self.supported else self.fallback


    def supports(self, value: str) -> bool:
        """Is value served in a language of its own (not the fallback for want of one)?"""
        return self.pick(value) != self.fallback or value.strip().lower().replace("_", "-").split("-", 1)[0] == self.fallback


@dataclass(frozen=True)
class PromptRef:
    """A prompt name as the plan wrote it, and the file it plays in each language.

    files: (language, file) pairs, the fallback language first; the language is "" when the
    plan has no `languages:` section (then there is one file)."""

    name: str
    files: tuple[tuple[str, Path], ...]

    def file(self, language: str) -> Path:
        for lang, f in self.files:
            if lang == language:
                return f
        return self.files[0][1]


def _with_suffix(p: Path) -> Path:
    return p.with_suffix(".wav") if p.suffix == "" else p


def prompt_ref(name: str, prompts_dir: Path, languages: Languages | None) -> PromptRef:
    """Resolve name in every language of the plan, preferring files that exist.

    Raises ValueError for a name that cannot be a prompt: empty, or naming a variable other
    than ${language} (or ${language} in a plan without languages)."""
    if not name.strip():
        raise ValueError("an empty name")
    others = [m for m in _ANY_REF.findall(name) if m != LANGUAGE_VAR]
    if others:
        raise ValueError(f"${{{others[0]}}}: only {_LANG_REF} may appear in a prompt name "
                         "(the files of every language are checked at load)")
    templated = _LANG_REF in name
    if languages is None:
        if templated:
            raise ValueError(f"{name!r} uses {_LANG_REF} but the config has no `languages:` section")
        p = _with_suffix(Path(name))
        return PromptRef(name, (("", p if p.is_absolute() else prompts_dir / p),))
    out = []
    order = (languages.fallback, *(lang for lang in languages.supported if lang != languages.fallback))
    for lang in order:
        if templated:
            p = _with_suffix(Path(name.replace(_LANG_REF, lang)))
            candidates = [p if p.is_absolute() else prompts_dir / p]
            if lang == languages.fallback and _LANG_REF + "/" in name:
                bare = _with_suffix(Path(name.replace(_LANG_REF + "/", "")))
                candidates.append(bare if bare.is_absolute() else prompts_dir / bare)
        else:
            p = _with_suffix(Path(name))
            if p.is_absolute():
                candidates = [p]
            else:
                candidates = [prompts_dir / lang / p]
                if lang == languages.fallback:
                    candidates.append(prompts_dir / p)
        found = next((c for c in candidates if _is_file(c)), candidates[0])
        out.append((lang, found))
    return PromptRef(name, tuple(out))


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # a name longer than NAME_MAX: reported by the check as not a prompt file
        return False
