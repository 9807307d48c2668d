"""Retention: delete recordings of calls that ended more than N days ago
(`storage.recording_retention_days`), and voicemail messages left more than N days ago, heard
or not (`storage.voicemail_retention_days`).

The call's row stays (with `recording_deleted_at` set and a RECORDING_DELETED event): the call
log is never shortened, only the audio goes. A call in progress is never touched: it has no
end time, and live calls are skipped again by id in case the store is behind. A voicemail
message keeps its row too (deleted_at, deleted_by = retention), and its box's readers are told
as for any delete (MQTT, message-waiting lamps: ringmaster.voicemail).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ringmaster.store import Store

if TYPE_CHECKING:
    from ringmaster.voicemail import Voicemail

log = structlog.get_logger("ringmaster.retention")


async def sweep(store: Store, days: float, recordings_dir: str, live_calls: Callable[[], set[str]],
                now: float | None = None) -> int:
    now = time.time() if now is None else now
    base = Path(recordings_dir).resolve()
    deleted = 0
    for call_id, path in await store.expired_recordings(now - days * 86400):
        if call_id in live_calls():
            continue
        p = Path(path).resolve()
        if base not in p.parents:  # only ever delete inside our recordings directory
            log.warning("retention.outside_recordings_dir", call_id=call_id, path=path)
            continue
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass  # already gone: still mark it
        except OSError as exc:
            log.error("retention.delete_failed", call_id=call_id, path=path, error=str(exc))
            continue
        store.recording_deleted(call_id, now)
        deleted += 1
    if deleted:
        await store.flush()
        log.info("retention.deleted", recordings=deleted, older_than_days=days)
    return deleted


async def run_forever(store: Store, days: float, recordings_dir: str, live_calls: Callable[[], set[str]],
                      every: float = 3600.0) -> None:
    while True:
        try:
            while await sweep(store, days, recordings_dir, live_calls) >= 500:
                pass  # a backlog: keep going in batches
        except Exception:
            log.exception("retention.sweep_failed")
        await asyncio.sleep(every)


async def run_voicemail_forever(voicemail: Voicemail, days: float, live_calls: Callable[[], set[str]],
                                every: float = 3600.0) -> None:
    """Delete expired voicemail messages now and every `every` seconds (in batches of 500)."""
    while True:
        try:
            while await voicemail.expire(days, live_calls) >= 500:
                pass  # a backlog: keep going in batches
        except Exception:
            log.exception("retention.voicemail_sweep_failed")
        await asyncio.sleep(every)
