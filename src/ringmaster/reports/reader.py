"""The daemon's reads of its own store: the report functions run in one thread of their own on
a read-only connection, so a read never blocks the event loop and never queues behind the
writer's batches (the writer keeps its own connection, store.Store)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from ringmaster.reports import reads

log = structlog.get_logger("ringmaster.reports")
T = TypeVar("T")


class StoreUnreadable(Exception):
    """The store could not be read (the file is gone, the disk fails); the message says why."""


class ReportReader:
    """Runs `fn(connection, *args)` in the reader thread: `await reader.run(reads.calls, f)`.

    path: the store's SQLite file (it must exist: the daemon opens the store first). A read
    that fails raises StoreUnreadable and the connection is opened again for the next one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports")
        self._con: sqlite3.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) in the reader thread; its result, or StoreUnreadable."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            if self._con is None:
                self._con = reads.connect(self.path)
            return fn(self._con, *args)
        except (sqlite3.Error, OSError) as exc:
            self._drop()
            log.warning("reports.read_failed", path=str(self.path), error=str(exc))
            raise StoreUnreadable(f"the store cannot be read: {exc}") from exc

    def _drop(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except sqlite3.Error:
                pass
            self._con = None

    def close(self) -> None:
        """Close the connection and end the thread (after the reads in flight)."""
        self._pool.submit(self._drop)
        self._pool.shutdown(wait=True)
