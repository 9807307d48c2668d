"""Prompt and hold-music files in the workers' format: 8000 Hz, mono, 16-bit PCM WAV.

pjsua2 plays a list of files (a `play` of several prompts, a music-on-hold folder) as one
playlist, and a playlist refuses files whose formats differ: one 16 kHz or stereo file among
8 kHz ones, or a file that is not a WAV at all, fails the whole list and the caller hears
silence (issue 18). So every file is probed before it is played; one the workers cannot join
is converted once with sox (into the runtime dir, keyed by path, size and mtime, so an edited
file is converted again) and the copy is played; one sox cannot read either is left out of
the list. Each such file is logged once with its name and why, not on every call.

`ringmaster check` runs the same probe and conversion on every file the config names and
prints each bad one (see `check_files`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import wave
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from ringmaster.config import Config

log = structlog.get_logger("ringmaster.prompts")

RATE, CHANNELS, SAMPLE_BYTES = 8000, 1, 2
WORKER_FORMAT = "8000 Hz mono 16-bit PCM WAV"
SOX_TIMEOUT = 30.0


def probe(path: str | Path) -> str | None:
    """None if the workers play path as it is; else why not (for a log line or `check`)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
    except wave.Error as exc:  # not RIFF/WAVE, or a compressed WAV (A-law, mu-law, GSM, float...)
        return f"not a PCM WAV file ({exc})"
    except EOFError:
        return "empty or cut short (no WAV header)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    problems = []
    if rate != RATE:
        problems.append(f"{rate} Hz")
    if channels != CHANNELS:
        problems.append(f"{channels} channels")
    if width != SAMPLE_BYTES:
        problems.append(f"{8 * width}-bit")
    if problems:
        return f"{', '.join(problems)}, not {WORKER_FORMAT}"
    if frames == 0:
        return "no audio (0 samples)"
    return None


@dataclass(frozen=True)
class FileVerdict:
    """path: the file; reason: why the workers cannot play it as is (None: fine);
    playable: what to play instead (the file, its converted copy, or None: left out)."""

    path: str
    reason: str | None
    playable: str | None


class PromptFiles:
    """Probes, converts once and remembers. cache_dir: where converted copies go (created)."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        self._known: dict[tuple[str, int, int], FileVerdict] = {}
        self._converting: set[tuple[str, int, int]] = set()
        self._pool: ThreadPoolExecutor | None = None

    def verdict(self, path: str, wait: bool = True) -> FileVerdict:
        """How path plays. wait=False (a call is waiting on the event loop): a bad file not
        converted yet is converted in a thread and left out until it is done."""
        try:
            st = os.stat(path)
        except OSError as exc:
            return FileVerdict(path, f"cannot be read ({exc.strerror or exc})", None)
        key = (path, st.st_mtime_ns, st.st_size)
        known = self._known.get(key)
        if known is not None:
            return known
        reason = probe(path)  # a header read: cheap
        if reason is None:
            v = FileVerdict(path, None, path)
            self._known[key] = v
            return v
        if wait:
            return self._converted(path, key, reason)
        if key not in self._converting:
            self._converting.add(key)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-convert")
            self._pool.submit(self._converted, path, key, reason)
        return FileVerdict(path, reason, None)

    def _converted(self, path: str, key: tuple[str, int, int], reason: str) -> FileVerdict:
        out, error = self._convert(path, key)
        if out is not None:
            log.warning("prompt.converted", file=path, reason=reason, to=out)
        else:
            log.warning("prompt.skipped", file=path, reason=reason, error=error)
        v = FileVerdict(path, reason, out)
        self._known[key] = v
        self._converting.discard(key)
        return v

    def playable(self, files: Iterable[str]) -> tuple[str, ...]:
        """The files to hand a worker for this list: bad ones converted or left out. If none
        is left, the list as given (the worker then reports the error and the flow goes on).
        Never waits for sox: files the config names were converted at load (`prewarm`); one
        that appeared since (a new file in a hold-music folder) is converted in a thread."""
        files = tuple(files)
        out = tuple(v.playable for v in (self.verdict(f, wait=False) for f in files) if v.playable is not None)
        return out or files

    def _convert(self, path: str, key: tuple[str, int, int]) -> tuple[str | None, str]:
        digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        out = self.cache_dir / f"{Path(path).stem[:40]}-{digest}.wav"
        if out.is_file() and probe(out) is None:
            return str(out), ""
        tmp = out.with_suffix(".tmp.wav")
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            res = subprocess.run(["sox", "-V1", path, "-r", str(RATE), "-c", str(CHANNELS), "-b", str(8 * SAMPLE_BYTES),
                                  "-e", "signed-integer", str(tmp)],
                                 capture_output=True, text=True, timeout=SOX_TIMEOUT, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tmp.unlink(missing_ok=True)
            return None, f"sox could not run: {exc}"
        if res.returncode != 0 or probe(tmp) is not None:
            tmp.unlink(missing_ok=True)
            return None, (res.stderr.strip().splitlines() or ["sox made no playable file"])[-1]
        os.replace(tmp, out)
        return str(out), ""


def moh_files(cfg: Config, queue: str) -> tuple[str, ...]:
    """A queue's hold music: the .wav files of its folder in name order, or its one prompt."""
    moh = cfg.queues[queue].moh
    base = Path(moh) if Path(moh).is_absolute() else Path(cfg.paths.prompts) / moh
    if base.is_dir():
        return tuple(str(f) for f in sorted(base.glob("*.wav")))
    return (str(base if base.suffix else base.with_suffix(".wav")),)


def config_files(cfg: Config) -> list[tuple[str, str]]:
    """(where in the config, file) of every prompt and hold-music file the config names."""
    from ringmaster.flows.dialplan import node_context, parse_flows

    out: list[tuple[str, str]] = []
    ctx = node_context(cfg)
    flows, _ = parse_flows(cfg.flows, ctx, None)
    for name, flow in flows.items():
        for i, node in enumerate(flow.nodes):
            for _, prompt in type(node).file_refs(node.options, ctx):
                step = flow.paths[i] if i < len(flow.paths) else ("flows", name, i)
                where = f"{'.'.join(str(x) for x in step)} ({node.kind})"  # the file names itself
                out += [(where, str(file)) for _, file in prompt.files]
    for q in cfg.queues:
        out += [(f"queues.{q}.moh", f) for f in moh_files(cfg, q)]
    return out


def check_files(cfg: Config, cache_dir: str | Path) -> list[tuple[str, str, str, bool]]:
    """(where, file, why, converted) for each file the config names that the workers cannot
    play as is; converted: False means it is left out of what callers hear."""
    pf = PromptFiles(cache_dir)
    bad = []
    seen: set[str] = set()
    for where, file in config_files(cfg):
        if file in seen or not os.path.isfile(file):  # a missing file is the config check's error
            continue
        seen.add(file)
        v = pf.verdict(file)
        if v.reason is not None:
            bad.append((where, file, v.reason, v.playable is not None))
    return bad


_default: PromptFiles | None = None


def configure(cache_dir: str | Path) -> PromptFiles:
    """The process's converter (the controller sets it at start; converted copies go there)."""
    global _default
    _default = PromptFiles(cache_dir)
    return _default


def playable(files: Iterable[str]) -> tuple[str, ...]:
    """files made playable by the process's converter; unchanged if none was configured."""
    return _default.playable(files) if _default is not None else tuple(files)


def prewarm(cfg: Config) -> int:
    """Probe (and convert) every file the config names now, at load, not on a caller's time.
    Returns how many cannot be played as they are."""
    if _default is None:
        return 0
    try:
        return sum(1 for _, f in config_files(cfg) if os.path.isfile(f) and _default.verdict(f).reason is not None)
    except Exception:  # never stop a start or a reload: files are still checked when played
        log.exception("prompt.prewarm_failed")
        return 0
