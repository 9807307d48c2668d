"""Speech for `say` steps and spoken queue announcements: text -> 8 kHz mono 16-bit WAV.

espeak-ng (Debian's package) speaks the text into a 22 kHz WAV; sox converts it to the
workers' format (prompts.WORKER_FORMAT) and normalises it to -3 dBFS, as scripts/make-prompts
does for the system prompts. Each rendering is cached on disk under the SHA-256 of (engine
and speed, voice, language, text), so a text is spoken once, and a restart finds it again.
Two calls asking for the same text at once share one rendering.

The text reaches espeak-ng on stdin, never as an argument (a value from a CRM starting with
`-` would be an option), and without SSML (no -m), so no value can carry markup. Measured
here: about 50 ms for a sentence, 10 ms for sox (docs/engine-findings.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import structlog

from ringmaster.config import Config, TtsConfig
from ringmaster.prompts import CHANNELS, RATE, SAMPLE_BYTES, probe

log = structlog.get_logger("ringmaster.tts")


class SpeechFailed(Exception):
    """The engine or sox failed, timed out, or made no playable file; str() says why."""


class Speech:
    """Renders and caches speech. cache_dir: where the WAVs go (created on first use)."""

    def __init__(self, cfg: TtsConfig, cache_dir: str | Path):
        self.cfg = cfg
        self.cache_dir = Path(cache_dir)
        self._rendering: dict[str, asyncio.Task[Path]] = {}
        self.rendered = 0  # renderings made (not cache hits), for tests and status

    def key(self, text: str, language: str, voice: str) -> str:
        """The cache key: what decides the sound (the engine with its speed, voice, language, text)."""
        ident = json.dumps([f"{self.cfg.engine}@{self.cfg.speed}wpm", voice, language, text], ensure_ascii=False)
        return hashlib.sha256(ident.encode()).hexdigest()

    def path(self, text: str, language: str, voice: str) -> Path:
        return self.cache_dir / f"{self.key(text, language, voice)[:32]}.wav"

    def cached(self, text: str, language: str, voice: str) -> Path | None:
        out = self.path(text, language, voice)
        return out if out.is_file() and probe(out) is None else None

    async def render(self, text: str, language: str, voice: str) -> Path:
        """The WAV saying text (from the cache, or rendered now). Raises SpeechFailed."""
        hit = self.cached(text, language, voice)
        if hit is not None:
            return hit
        key = self.key(text, language, voice)
        task = self._rendering.get(key)
        if task is None:
            # its own task: a caller hanging up mid-rendering does not abort it for the others
            task = asyncio.get_running_loop().create_task(self._render(text, language, voice))
            self._rendering[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[Path]) -> None:
        self._rendering.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every waiter left

    async def _render(self, text: str, language: str, voice: str) -> Path:
        out = self.path(text, language, voice)
        started = time.monotonic()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpeechFailed(f"cache {self.cache_dir}: {exc.strerror or exc}") from None
        raw = out.with_suffix(".raw.wav")
        tmp = out.with_suffix(".tmp.wav")
        try:
            await self._run([self.cfg.command, "-v", voice, "-s", str(self.cfg.speed), "-w", str(raw), "--stdin"],
                            text.encode())
            await self._run(["sox", "-V1", str(raw), "-r", str(RATE), "-c", str(CHANNELS), "-b", str(8 * SAMPLE_BYTES),
                             "-e", "signed-integer", str(tmp), "gain", "-n", "-3"], b"")
            why = probe(tmp)
            if why is not None:
                raise SpeechFailed(f"{self.cfg.engine} made no playable speech: {why}")
            os.replace(tmp, out)
        finally:
            raw.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
        self.rendered += 1
        log.info("tts.rendered", language=language, voice=voice, chars=len(text), file=str(out),
                 ms=round((time.monotonic() - started) * 1000))
        return out

    async def _run(self, argv: list[str], stdin: bytes) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise SpeechFailed(f"{argv[0]} could not run: {exc.strerror or exc}") from None
        try:
            _, err = await asyncio.wait_for(proc.communicate(stdin), self.cfg.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SpeechFailed(f"{argv[0]} took longer than {self.cfg.timeout:g} s") from None
        if proc.returncode != 0:
            last = (err.decode(errors="replace").strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise SpeechFailed(f"{argv[0]}: {last}")


def engine_voices(command: str = "espeak-ng") -> set[str] | None:
    """Every name espeak-ng accepts for -v (language codes, voice names, voice files), or None
    when it cannot run. Variants (`en+f3`) are a voice plus `+variant`: check the voice part."""
    import subprocess

    try:
        out = subprocess.run([command, "--voices"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    names: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        f = line.split()
        if len(f) >= 5:  # Pty Language Age/Gender VoiceName File [Other Languages]
            names |= {f[1], f[3], f[4], f[4].rsplit("/", 1)[-1]}
    return names


def spoken_voices(cfg: Config) -> list[tuple[str, str, str]]:
    """(where, language, voice) of every voice the config's speech will use: each language
    the plan serves when it has `say` steps or spoken announcements, and each step's own."""
    from ringmaster.flows.dialplan import node_context, parse_flows

    tts = cfg.tts
    flows, _ = parse_flows(cfg.flows, node_context(cfg), None)
    says = [(f"flows.{name}.{node.id}", node) for name, flow in flows.items() for node in flow.nodes
            if node.kind == "say"]
    announces = [q for q, spec in cfg.queues.items() if spec.announce is not None and spec.announce.say is not None]
    if not says and not announces:
        return []
    langs = cfg.languages.supported if cfg.languages is not None else [tts.language]
    out = [(f"languages ({lang})" if cfg.languages is not None else "tts.language", lang, tts.voice(lang))
           for lang in langs]
    for where, node in says:
        o = node.options
        if o.language is not None or o.voice is not None:
            for lang in [o.language] if o.language is not None else langs:
                out.append((where, lang, o.voice or tts.voice(lang)))
    return out


def voice_problems(cfg: Config) -> list[str]:
    """What `check` and the daemon's start report: voices the engine does not have, or an
    engine that cannot run, for a config whose plan speaks. Empty when all is well."""
    wanted = spoken_voices(cfg)
    if not wanted:
        return []
    known = engine_voices(cfg.tts.command)
    if known is None:
        return [f"tts: {cfg.tts.command} cannot run: `say` steps and spoken announcements will be silent "
                "(install espeak-ng: scripts/setup)"]
    out = []
    for where, lang, voice in wanted:
        if voice.split("+", 1)[0] not in known:
            out.append(f"{where}: {cfg.tts.engine} has no voice {voice!r} for language {lang!r} "
                       f"(set tts.voices; `{cfg.tts.command} --voices` lists them)")
    return sorted(set(out))
