"""Voicemail people can reach: who may read which box, the messages, and what changes them.

Boxes are configured in `voicemail.boxes`, each owned by an agent or by a queue (read by the
queue's members unless `members: false`; supervisors and admins read every box). A flow's
voicemail step records a message (calls.py); `Voicemail.message_left` then tells the box's
readers: MQTT `voicemail/BOX/events` and the message-waiting lamps of their softphones
(ringmaster.mwi, RFC 3842). The API, the CLI (through the daemon's control socket) and
retention list, hand out, mark heard and delete messages through this one class, so the store
keeps its single writer and the lamps follow every change. Its reads of the stored messages
are ringmaster.reports' (reads.voicemails, voicemail_counts, ...), like every other read.

Message states follow Asterisk's folders: new (INBOX) and heard (Old). A deleted message
keeps its row (deleted_at, deleted_by), its WAV is removed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from ringmaster.config import Config
from ringmaster.reports import VoicemailFilter, reads
from ringmaster.reports.filters import MESSAGE_STATES, MessageState
from ringmaster.reports.reader import ReportReader, StoreUnreadable
from ringmaster.store import Store

log = structlog.get_logger("ringmaster.voicemail")
T = TypeVar("T")

STATES = MESSAGE_STATES  # new, heard (reports.filters.MessageState)
FLUSH_TIMEOUT = 5.0  # a change is answered once stored; a failing store answers "try again" after this


class VoicemailError(Exception):
    """A request about a message that cannot be served. code: the HTTP status it maps to
    (404: no such message for this reader, 403: not this reader's box, 503: store failing)."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Message:
    """One voicemail message. started_at: epoch seconds; seconds: its length (None while it is
    being recorded, or if the daemon died during it); state: new or heard."""

    id: int
    box: str
    caller: str
    call_id: str
    started_at: float
    seconds: float | None
    state: str
    heard_at: float | None
    heard_by: str | None
    path: str

    @classmethod
    def from_row(cls, r: Any) -> Message:
        return cls(id=int(r["id"]), box=r["box"], caller=r["caller"], call_id=r["call_id"],
                   started_at=float(r["started_at"]), seconds=r["seconds"],
                   state=MessageState.HEARD if r["heard"] else MessageState.NEW, heard_at=r["heard_at"], heard_by=r["heard_by"],
                   path=r["path"])

    def view(self, url_base: str | None) -> dict[str, Any]:
        """What readers see (no file path: the audio is fetched by URL or `voicemail play`)."""
        d = asdict(self)
        del d["path"]
        d["url"] = f"{url_base}/api/voicemail/{self.id}/audio" if url_base else None
        return d


def readers(cfg: Config, box: str) -> frozenset[str]:
    """The agents who may read a box: its agent, or its queue's members (when members is true)."""
    spec = cfg.voicemail.boxes.get(box)
    if spec is None:
        return frozenset()
    if spec.agent is not None:
        return frozenset({spec.agent})
    q = cfg.queues.get(spec.queue or "")
    return frozenset(m.agent for m in q.members) if q is not None and spec.members else frozenset()


def boxes_of(cfg: Config, agent: str) -> frozenset[str]:
    """The boxes an agent may read (its own and, where the config says so, its queues')."""
    return frozenset(b for b in cfg.voicemail.boxes if agent in readers(cfg, b))


def url_base(cfg: Config) -> str | None:
    """Where readers fetch a message's audio: `voicemail.url_base`, else http:// + http.listen;
    None without an HTTP API."""
    if cfg.voicemail.url_base:
        return cfg.voicemail.url_base.rstrip("/")
    return f"http://{cfg.http.listen}" if cfg.http is not None else None


class Voicemail:
    """The daemon's voicemail: reads of the `voicemails` table and every change to it.

    config: the live config (a reload may change the boxes); publish(topic, payload): MQTT,
    or None without MQTT; counts_changed(agents): told after every change, with the agents
    whose message counts may have moved (the MWI notifier listens).

    Reads go through ringmaster.reports (its reads, in a ReportReader thread of this class's
    own on a read-only connection: the control socket's CLI commands need them without an
    HTTP API). `totals` holds each box's (new, heard) counts: read once at start, then the
    changed box is read again after each change (one indexed count), so the lamps, MQTT and
    /metrics never count the table."""

    def __init__(self, config: Callable[[], Config], store: Store,
                 publish: Callable[[str, dict[str, Any]], None] | None = None,
                 counts_changed: Callable[[frozenset[str]], None] | None = None):
        self.config = config
        self.store = store
        self.publish = publish
        self.counts_changed = counts_changed
        self.reader: ReportReader | None = None
        self.totals: dict[str, tuple[int, int]] = {}  # box -> (new, heard), messages not deleted
        self._later: set[asyncio.Task[None]] = set()  # changes answered 503, told once stored

    async def start(self) -> None:
        """Open the reader on the store (open already: its file exists) and read every box's
        counts once. A store that cannot be read is logged; the counts then start at 0 and a
        box's are read again at its next change."""
        self.reader = ReportReader(self.store.path)
        try:
            self.totals = await self._read(reads.voicemail_counts, None)
        except VoicemailError as exc:
            log.error("voicemail.counts_unreadable", error=str(exc))

    async def stop(self) -> None:
        """Close the reader (after the reads in flight); changes still waiting for the store are
        no longer announced (they are stored all the same)."""
        for task in list(self._later):
            task.cancel()
        if self.reader is not None:
            reader, self.reader = self.reader, None
            await asyncio.to_thread(reader.close)

    # ------------------------------------------------------------ reads

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """A reports read in the reader thread; VoicemailError 503 if the store cannot be read."""
        if self.reader is None:
            raise VoicemailError("voicemail is not started", 503)
        try:
            return await self.reader.run(fn, *args)
        except StoreUnreadable as exc:
            raise VoicemailError(str(exc), 503) from None

    async def messages(self, boxes: Iterable[str] | None = None, f: VoicemailFilter | None = None) -> list[Message]:
        """Messages not deleted, newest first. boxes: only these (None: all); f: box, state, limit
        (default: 500 messages)."""
        rows = await self._read(reads.voicemails, f or VoicemailFilter(limit=500),
                                None if boxes is None else frozenset(boxes))
        return [Message.from_row(r) for r in rows]

    async def message(self, message_id: int, boxes: Iterable[str] | None = None) -> Message:
        """One message that is not deleted, if in boxes (None: any); VoicemailError 404 if not."""
        row = await self._read(reads.voicemail, message_id)
        if row is None or (boxes is not None and row["box"] not in set(boxes)):
            raise VoicemailError(f"no voicemail message {message_id}" + ("" if boxes is None else " in your boxes"), 404)
        return Message.from_row(row)

    def counts(self, boxes: Iterable[str]) -> tuple[int, int]:
        """(new, heard) messages in these boxes: RFC 3842's Voice-Message new/old (no IO)."""
        new = heard = 0
        for b in set(boxes):
            n, h = self.totals.get(b, (0, 0))
            new, heard = new + n, heard + h
        return new, heard

    def box_counts(self) -> dict[str, tuple[int, int]]:
        """Each configured box's (new, heard) messages (no IO): what /metrics shows."""
        return {b: self.totals.get(b, (0, 0)) for b in sorted(self.config().voicemail.boxes)}

    def audio_path(self, m: Message) -> Path:
        """The message's WAV, only ever inside the recordings dir; VoicemailError 404 if gone."""
        base = Path(self.config().paths.recordings).resolve()
        p = Path(m.path).resolve()
        if base not in p.parents or not p.is_file():
            raise VoicemailError(f"voicemail message {m.id} has no audio", 404)
        return p

    # ------------------------------------------------------------ changes

    async def _flush(self, m: Message, event: str) -> None:
        """Wait until the change is stored; after FLUSH_TIMEOUT, VoicemailError 503, and the
        readers are told of the change (`event`) once the store has taken it."""
        flushed = asyncio.ensure_future(self.store.flush())
        try:
            await asyncio.wait_for(asyncio.shield(flushed), FLUSH_TIMEOUT)
        except TimeoutError:
            task = asyncio.create_task(self._changed_once_stored(flushed, m, event))
            self._later.add(task)
            task.add_done_callback(self._later.discard)
            raise VoicemailError("the store is not taking writes right now; the change is kept and "
                                 "will be written", 503) from None

    async def _changed_once_stored(self, flushed: asyncio.Future[None], m: Message, event: str) -> None:
        await flushed
        await self._changed(m, event)

    async def message_left(self, call_id: str, box: str, caller: str, path: str, seconds: float) -> None:
        """A caller left a message (its row and length are queued in the store already). Waits
        for the store however long it fails: the readers hear of the message once it is stored."""
        await self.store.flush()
        try:
            row = await self._read(reads.voicemail_recorded, call_id, path)
        except VoicemailError as exc:  # stored, but not announced: the next change of its box counts it
            log.error("voicemail.announce_failed", box=box, call_id=call_id, error=str(exc))
            return
        if row is None:
            return
        m = Message.from_row(row)
        log.info("voicemail.new", box=box, message=m.id, call_id=call_id, caller=caller, seconds=round(seconds, 1))
        await self._changed(m, "new")

    async def set_state(self, message_id: int, state: str, by: str, boxes: Iterable[str] | None = None) -> Message:
        """Mark a message heard or new again. by: who (a token's name, cli)."""
        if state not in MESSAGE_STATES:
            raise VoicemailError(f"state: one of {', '.join(MESSAGE_STATES)}")
        m = await self.message(message_id, boxes)
        self.store.voicemail_heard(m.id, state == MessageState.HEARD, time.time(), by)
        await self._flush(m, state)
        m = await self.message(message_id)
        log.info("voicemail.marked", message=m.id, box=m.box, state=state, by=by)
        await self._changed(m, state)
        return m

    async def delete(self, message_id: int, by: str, boxes: Iterable[str] | None = None) -> Message:
        """Delete a message's audio and mark its row deleted."""
        m = await self.message(message_id, boxes)
        self._unlink(m)
        self.store.voicemail_deleted(m.id, time.time(), by)
        await self._flush(m, "deleted")
        log.info("voicemail.deleted", message=m.id, box=m.box, by=by)
        await self._changed(m, "deleted")
        return m

    async def expire(self, days: float, live_calls: Callable[[], set[str]], now: float | None = None,
                     limit: int = 500) -> int:
        """Retention: delete messages that started more than `days` ago (a message still being
        recorded, its call live, is left). Returns how many were deleted."""
        now = time.time() if now is None else now
        rows = await self._read(reads.voicemails_left_before, now - days * 86400, limit)
        gone: list[Message] = []
        for r in rows:
            m = Message.from_row(r)
            if m.call_id in live_calls():
                continue
            try:
                self._unlink(m)
            except VoicemailError:
                continue
            self.store.voicemail_deleted(m.id, now, "retention")
            gone.append(m)
        if gone:
            await self.store.flush()
            log.info("voicemail.expired", messages=len(gone), older_than_days=days)
            for m in gone:
                await self._changed(m, "deleted")
        return len(gone)

    def _unlink(self, m: Message) -> None:
        base = Path(self.config().paths.recordings).resolve()
        p = Path(m.path).resolve()
        if base not in p.parents:  # only ever delete inside our recordings directory
            log.warning("voicemail.outside_recordings_dir", message=m.id, path=m.path)
            raise VoicemailError(f"voicemail message {m.id}: its file is outside the recordings directory", 500)
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass  # already gone: still mark it
        except OSError as exc:
            log.error("voicemail.delete_failed", message=m.id, path=m.path, error=str(exc))
            raise VoicemailError(f"voicemail message {m.id}: cannot delete its file: {exc.strerror}", 500) from None

    async def _changed(self, m: Message, event: str) -> None:
        cfg = self.config()
        # the box's counts read again once the change is stored: exact whatever happened meanwhile
        # (reads run in order in the one reader thread, so the last one assigned is the newest)
        try:
            self.totals[m.box] = (await self._read(reads.voicemail_counts, [m.box])).get(m.box, (0, 0))
        except VoicemailError as exc:
            log.warning("voicemail.counts_unreadable", box=m.box, error=str(exc))  # the last ones stay
        if self.publish is not None:
            new, heard = self.totals.get(m.box, (0, 0))
            self.publish(f"voicemail/{m.box}/events", {
                "event": event, "box": m.box, "message": m.id, "caller": m.caller, "call_id": m.call_id,
                "seconds": m.seconds, "started_at": m.started_at, "url": m.view(url_base(cfg))["url"],
                "new": new, "heard": heard})
        if self.counts_changed is not None:
            self.counts_changed(readers(cfg, m.box))
