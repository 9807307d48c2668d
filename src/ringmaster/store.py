"""The call store: one SQLite file in WAL mode, versioned migrations, one writer task.

Writes are queued and committed in batches by a single task, so the event loop never waits
on the disk and a burst of calls costs one fsync per batch, not one per row. `flush()`
returns once everything queued so far is committed: the daemon calls it before it exits,
and a call's final row is committed within one batch of the call ending. A write queued as
joined (`_put_joined`: an event's webhook deliveries) is committed in the same transaction as
the write before it: a batch never ends between them.

A store fault (the filesystem turns read-only, fills up, or fails I/O) loses no record: the
writes that could not be committed stay pending, in order, and the whole pending list is
retried in one transaction every `RETRY_SECONDS` until it commits, so each write lands exactly
once and in the order it was made (a call's UPDATEs after its INSERT). After each failed try
the pending writes are appended to a spill file (JSON lines, fsynced, on another path: the
runtime dir), so a crash during the fault loses at most one retry interval of records; the
next start writes the file first (before it closes the calls a crash left open). Only if the
spill file cannot be written either do the writes stay in memory (an error past
`MAX_PENDING`). A spill carries an id that is recorded in `store_spills` in the same
transaction as its rows, so a crash between that commit and the file's removal cannot replay
it twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from ringmaster.acd.members import MemberChange

log = structlog.get_logger("ringmaster.store")

# Each entry moves the schema from version i to i+1. Never edit one that has shipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE calls (
        id            INTEGER PRIMARY KEY,
        call_id       TEXT NOT NULL UNIQUE,
        sip_call_id   TEXT NOT NULL,
        caller        TEXT NOT NULL,
        called        TEXT NOT NULL,
        request_uri   TEXT NOT NULL,
        worker        TEXT NOT NULL,
        flow          TEXT,
        arrived_at    REAL NOT NULL,
        answered_at   REAL,
        ended_at      REAL,
        hangup_cause  TEXT,
        hangup_code   INTEGER,
        hangup_by     TEXT,
        disposition   TEXT NOT NULL DEFAULT 'in_progress',
        ivr_path      TEXT NOT NULL DEFAULT '[]',
        variables     TEXT NOT NULL DEFAULT '{}',
        recording     TEXT
    );
    CREATE INDEX calls_arrived ON calls(arrived_at);
    CREATE INDEX calls_open ON calls(disposition) WHERE disposition = 'in_progress';
    CREATE TABLE call_events (
        id       INTEGER PRIMARY KEY,
        call_id  TEXT NOT NULL,
        at       REAL NOT NULL,
        event    TEXT NOT NULL,
        data     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX call_events_call ON call_events(call_id);
    """,
    """
    CREATE TABLE voicemails (
        id          INTEGER PRIMARY KEY,
        call_id     TEXT NOT NULL,
        box         TEXT NOT NULL,
        caller      TEXT NOT NULL,
        path        TEXT NOT NULL,
        started_at  REAL NOT NULL,
        seconds     REAL,
        heard       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX voicemails_box ON voicemails(box, started_at);
    CREATE TABLE callbacks (
        id            INTEGER PRIMARY KEY,
        call_id       TEXT NOT NULL,
        queue         TEXT NOT NULL,
        number        TEXT NOT NULL,
        requested_at  REAL NOT NULL,
        status        TEXT NOT NULL DEFAULT 'pending'
    );
    CREATE INDEX callbacks_pending ON callbacks(queue, status);
    CREATE TABLE schedule_overrides (
        name      TEXT PRIMARY KEY,
        state     TEXT NOT NULL CHECK (state IN ('open', 'closed')),
        set_at    REAL NOT NULL
    );
    """,
    """
    ALTER TABLE calls ADD COLUMN queue TEXT;
    ALTER TABLE calls ADD COLUMN agent TEXT;
    ALTER TABLE calls ADD COLUMN wait_seconds REAL;
    ALTER TABLE calls ADD COLUMN talk_seconds REAL;
    CREATE INDEX calls_queue ON calls(queue, arrived_at);
    -- Asterisk queue_log: time|callid|queuename|agent|event|data1|data2|...
    CREATE TABLE queue_log (
        id       INTEGER PRIMARY KEY,
        at       REAL NOT NULL,
        call_id  TEXT NOT NULL,
        queue    TEXT NOT NULL,
        agent    TEXT NOT NULL,
        event    TEXT NOT NULL,
        data     TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX queue_log_at ON queue_log(at);
    CREATE INDEX queue_log_call ON queue_log(call_id);
    """,
    """
    ALTER TABLE calls ADD COLUMN recording_deleted_at REAL;
    CREATE INDEX calls_recordings ON calls(ended_at) WHERE recording IS NOT NULL AND recording_deleted_at IS NULL;
    """,
    """
    -- one presence per agent: what survives a restart
    CREATE TABLE agent_presence (
        agent       TEXT PRIMARY KEY,
        logged_in   INTEGER NOT NULL,
        paused      TEXT,
        updated_at  REAL NOT NULL
    );
    -- chat and email tasks; state: queued, assigned, completed, cancelled
    CREATE TABLE tasks (
        id             INTEGER PRIMARY KEY,
        task_id        TEXT NOT NULL UNIQUE,
        channel        TEXT NOT NULL,
        queue          TEXT NOT NULL,
        priority       INTEGER NOT NULL DEFAULT 0,
        skills         TEXT NOT NULL DEFAULT '{}',
        due            REAL,
        data           TEXT NOT NULL DEFAULT '{}',
        created_at     REAL NOT NULL,
        enqueued_at    REAL NOT NULL,
        state          TEXT NOT NULL DEFAULT 'queued',
        agent          TEXT,
        assigned_at    REAL,
        ended_at       REAL,
        disposition    TEXT,
        wait_seconds   REAL,
        handle_seconds REAL
    );
    CREATE INDEX tasks_open ON tasks(state) WHERE state IN ('queued', 'assigned');
    CREATE INDEX tasks_created ON tasks(created_at);
    -- the queue_log of tasks: the same events and fields as calls, plus the channel
    CREATE TABLE task_log (
        id       INTEGER PRIMARY KEY,
        at       REAL NOT NULL,
        task_id  TEXT NOT NULL,
        queue    TEXT NOT NULL,
        agent    TEXT NOT NULL,
        event    TEXT NOT NULL,
        data     TEXT NOT NULL DEFAULT '',
        channel  TEXT NOT NULL
    );
    CREATE INDEX task_log_at ON task_log(at);
    CREATE INDEX task_log_task ON task_log(task_id);
    """,
    """
    -- spill files (writes kept through a store fault) already written: replayed exactly once
    CREATE TABLE store_spills (
        id           TEXT PRIMARY KEY,
        rows         INTEGER NOT NULL,
        replayed_at  REAL NOT NULL
    );
    -- one row per daemon run; alive_at is its heartbeat: after a crash, the moment open calls
    -- and offers are closed at (the downtime is nobody's wait or talk time)
    CREATE TABLE store_runs (
        id          INTEGER PRIMARY KEY,
        pid         INTEGER NOT NULL,
        started_at  REAL NOT NULL,
        alive_at    REAL NOT NULL,
        stopped_at  REAL
    );
    -- offers of chat and email tasks in flight (task_log, like queue_log, has no offer-start
    -- event): a task outlives a restart, the offer it had open is closed at the next start
    CREATE TABLE task_offers (
        task_id  TEXT NOT NULL,
        agent    TEXT NOT NULL,
        queue    TEXT NOT NULL,
        channel  TEXT NOT NULL,
        at       REAL NOT NULL,
        PRIMARY KEY (task_id, agent)
    );
    """,
    """
    -- the call log's calls by how they ended, kept by SQLite itself as calls end (whoever writes
    -- the end: the writer, a spill replay, the orphan closing at start), so /metrics and a start
    -- read five rows, never the calls table (counted once here, at the upgrade)
    CREATE TABLE call_totals (
        disposition  TEXT PRIMARY KEY,
        calls        INTEGER NOT NULL
    );
    INSERT INTO call_totals (disposition, calls)
        SELECT disposition, COUNT(*) FROM calls WHERE disposition != 'in_progress' GROUP BY disposition;
    CREATE TRIGGER call_totals_ended AFTER UPDATE OF disposition ON calls
        WHEN old.disposition = 'in_progress' AND new.disposition != 'in_progress'
    BEGIN
        INSERT INTO call_totals (disposition, calls) VALUES (new.disposition, 1)
            ON CONFLICT(disposition) DO UPDATE SET calls = calls + 1;
    END;
    CREATE TRIGGER call_totals_stored_ended AFTER INSERT ON calls
        WHEN new.disposition != 'in_progress'
    BEGIN
        INSERT INTO call_totals (disposition, calls) VALUES (new.disposition, 1)
            ON CONFLICT(disposition) DO UPDATE SET calls = calls + 1;
    END;
    """,
    """
    -- voicemail people reach: heard (by whom), deleted (by whom: an API token, the CLI,
    -- retention); a deleted message keeps its row (the audio goes), like a call's recording
    ALTER TABLE voicemails ADD COLUMN heard_at REAL;
    ALTER TABLE voicemails ADD COLUMN heard_by TEXT;
    ALTER TABLE voicemails ADD COLUMN deleted_at REAL;
    ALTER TABLE voicemails ADD COLUMN deleted_by TEXT;
    CREATE INDEX voicemails_live ON voicemails(box, heard) WHERE deleted_at IS NULL;
    """,
    """
    -- hold from a party's phone (RFC 3264 8.4): total seconds on hold and how many stretches
    ALTER TABLE calls ADD COLUMN hold_seconds REAL;
    ALTER TABLE calls ADD COLUMN holds INTEGER;
    """,
    """
    -- queue members changed at run time (AddQueueMember / RemoveQueueMember / QueueMemberPenalty
    -- from the API or the CLI), laid over the YAML's members at every start and reload
    -- (ringmaster.acd.members); removed = 1: a YAML member taken out, tier NULL
    CREATE TABLE queue_members (
        queue    TEXT NOT NULL,
        agent    TEXT NOT NULL,
        tier     INTEGER,
        removed  INTEGER NOT NULL DEFAULT 0,
        set_at   REAL NOT NULL,
        set_by   TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (queue, agent)
    );
    """,
    """
    -- webhooks: one row per event and endpoint until it is delivered (then deleted) or dead
    -- (kept until an admin retries it); id order is event order (ringmaster.webhooks)
    CREATE TABLE webhook_outbox (
        id           INTEGER PRIMARY KEY,
        webhook      TEXT NOT NULL,
        event_id     TEXT NOT NULL,
        event        TEXT NOT NULL,
        lane         TEXT NOT NULL,
        body         TEXT NOT NULL,
        created_at   REAL NOT NULL,
        queued_at    REAL NOT NULL,
        state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_at      REAL NOT NULL,
        last_status  INTEGER,
        last_error   TEXT,
        dead_at      REAL,
        UNIQUE (webhook, event_id)
    );
    CREATE INDEX webhook_outbox_state ON webhook_outbox(state, id);
    """,
    """
    -- customers (docs/customers.md): one row per customer, its identity keys (E.164 numbers,
    -- email addresses, account ids), each interaction's key, and agents' wrap-up codes and notes
    CREATE TABLE customers (
        id          TEXT PRIMARY KEY,
        name        TEXT,
        tier        TEXT,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE customer_keys (
        key          TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,
        customer_id  TEXT NOT NULL,
        added_at     REAL NOT NULL
    );
    CREATE INDEX customer_keys_customer ON customer_keys(customer_id);
    -- a merge moves every key of one customer to another; kept here for audit
    CREATE TABLE customer_merges (
        id         INTEGER PRIMARY KEY,
        from_id    TEXT NOT NULL,
        into_id    TEXT NOT NULL,
        at         REAL NOT NULL,
        by         TEXT NOT NULL
    );
    ALTER TABLE calls ADD COLUMN customer_key TEXT;
    ALTER TABLE tasks ADD COLUMN customer_key TEXT;
    CREATE INDEX calls_customer ON calls(customer_key, arrived_at) WHERE customer_key IS NOT NULL;
    CREATE INDEX tasks_customer ON tasks(customer_key, created_at) WHERE customer_key IS NOT NULL;
    -- kind: call (ref = call_id) or task (ref = task_id)
    CREATE TABLE wrapups (
        kind    TEXT NOT NULL,
        ref     TEXT NOT NULL,
        agent   TEXT NOT NULL,
        code    TEXT,
        notes   TEXT,
        at      REAL NOT NULL,
        PRIMARY KEY (kind, ref)
    );
    """,
    """
    -- outbound calls agents place (docs/outbound.md): direction, the trunk and rule, the chat it came from
    ALTER TABLE calls ADD COLUMN direction TEXT NOT NULL DEFAULT 'inbound';
    ALTER TABLE calls ADD COLUMN route TEXT;
    ALTER TABLE calls ADD COLUMN outbound_rule TEXT;
    ALTER TABLE calls ADD COLUMN task_ref TEXT;
    CREATE INDEX calls_outbound ON calls(agent, arrived_at) WHERE direction = 'outbound';
    CREATE INDEX calls_task_ref ON calls(task_ref) WHERE task_ref IS NOT NULL;
    """,
    """
    -- queued callbacks (docs/callbacks.md): one row per callback, its state as it moves
    -- (waiting, offered, dialling, answered, completed, failed, cancelled); its steps are
    -- call_events rows under callback_id. Rows of the old `callback` step have no callback_id.
    ALTER TABLE callbacks ADD COLUMN callback_id TEXT;
    ALTER TABLE callbacks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE callbacks ADD COLUMN enqueued_at REAL;
    ALTER TABLE callbacks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE callbacks ADD COLUMN retry_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE callbacks ADD COLUMN agent TEXT;
    ALTER TABLE callbacks ADD COLUMN updated_at REAL;
    ALTER TABLE callbacks ADD COLUMN skills TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE callbacks ADD COLUMN variables TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE callbacks ADD COLUMN answered_at REAL;
    ALTER TABLE callbacks ADD COLUMN dial_call_id TEXT;
    ALTER TABLE callbacks ADD COLUMN reason TEXT;
    CREATE UNIQUE INDEX callbacks_callback_id ON callbacks(callback_id) WHERE callback_id IS NOT NULL;
    """,
]

class Disposition(StrEnum):
    """How a call ended, as the calls table stores it (a StrEnum: members equal their strings)."""

    IN_PROGRESS = "in_progress"  # not ended yet
    COMPLETED = "completed"      # served (by the IVR or an agent) and hung up
    REJECTED = "rejected"        # refused before answer (no route, a flow that hangs up unanswered)
    ABANDONED = "abandoned"      # the caller left a queue unserved
    FAILED = "failed"            # ended by a fault: a worker died, a shutdown, a crash
    # outbound calls agents place (docs/outbound.md); an answered one ends `completed`
    NO_ANSWER = "no_answer"      # the customer's (or, click-to-dial, the agent's) phone did not answer
    BUSY = "busy"                # the customer's side answered busy (486, 600)
    REFUSED = "refused"          # the outbound rules refused it: nothing was dialled


DISPOSITIONS: tuple[str, ...] = tuple(Disposition)


RETRY_SECONDS = 1.0  # while the store fails, the pending writes are retried this often
MAX_PENDING = 50_000  # writes held in memory (no spill file possible) before an error says so
CLOSE_GRACE_SECONDS = 2.0  # at a stop, how long a failing store gets before its writes are spilled
HEARTBEAT_SECONDS = 1.0  # how often the run's alive_at is written (the error on a crash's time)

# SQLite primary result codes that mean the store (disk, filesystem) failed, not the statement:
# the write is kept and retried. Any other error (a constraint, a bad statement) is the row's own
# and retrying cannot help: that row alone is logged and dropped, as before.
_FAULT_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
})


def is_store_fault(exc: BaseException) -> bool:
    """True for an error of the disk or filesystem under the store (read-only, full, I/O),
    after which the same write may succeed later."""
    if isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _FAULT_CODES
    return isinstance(exc, sqlite3.OperationalError) and any(
        m in str(exc) for m in ("readonly", "read-only", "disk", "full", "I/O", "locked", "unable to open"))


@dataclass(frozen=True)
class _Write:
    sql: str
    params: tuple[Any, ...]
    joined: bool = False  # committed in the same transaction as the write queued before it


@dataclass
class StoreHealth:
    """What `status` and /metrics show of the store. state: ok | failing; since: epoch seconds
    of the first failed write of the current fault; pending: writes not yet committed (memory
    and spill file); write_failures: failed commit attempts since start (an alert counter)."""

    state: str = "ok"
    since: float | None = None
    last_error: str | None = None
    write_failures: int = 0
    pending: int = 0
    spilled: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "pending": self.pending, "spilled": self.spilled,
                "write_failures": self.write_failures, "last_error": self.last_error}


class Store:
    """path: the SQLite file; spill_path: where writes go that a failing store cannot take
    (on another filesystem than path, e.g. the runtime dir; None: memory only)."""

    def __init__(self, path: str | Path, spill_path: str | Path | None = None):
        self.path = str(path)
        self.spill_path = Path(spill_path) if spill_path is not None else None
        self.db: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Write | asyncio.Future[None] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        # one connection, so one transaction at a time: the writer's batches and the few
        # transactions made outside it (closing orphans at start) must not interleave
        self._tx = asyncio.Lock()
        self.last_commit_seconds = 0.0
        self._pending: list[_Write] = []  # not yet committed, oldest first (after the spill file's)
        self._carry: _Write | None = None  # taken past a batch's limit: the next batch's first write
        self._waiters: list[asyncio.Future[None]] = []
        self._spill_rows = 0  # writes in the spill file, not yet committed
        self._spill_error_logged = False
        self._readonly = False  # the last fault was SQLITE_READONLY: reopen before retrying
        self._memory_warned = False
        self.health = StoreHealth()
        self._run_id: int | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.previous_alive_at: float | None = None  # the last heartbeat of a run that did not stop
        # the call log's calls by disposition, kept as calls end (read from call_totals at open), so
        # /metrics never counts the table; calls that arrived in this run and have not ended yet
        self.ended_calls: Counter[str] = Counter()
        self._open_calls: set[str] = set()

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self._connect()
        await self.migrate()
        if self.spill_path is not None and self.spill_path.exists():
            # a previous run stopped or died with writes it could not commit: they go first
            records = _spill_records(self.spill_path)
            self._spill_rows = sum(1 for r in records if r[0] != "#spill")
            log.warning("store.spill_found", path=str(self.spill_path), rows=self._spill_rows)
            if records and records[0][0] == "#spill" and await self._spill_done(str(records[0][1][0])):
                # written before a crash that left the file: gone now, before anything is
                # appended to it under an id that would make the new rows look written too
                self._drop_spill()
            elif self._spill_rows:
                await self._commit_pending()
            else:
                self._drop_spill()
        assert self.db is not None
        async with self.db.execute("SELECT disposition, calls FROM call_totals") as cur:
            self.ended_calls = Counter({str(r[0]): int(r[1]) for r in await cur.fetchall()})
        await self._begin_run()
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="store-heartbeat")

    async def _connect(self) -> None:
        self.db = await aiosqlite.connect(self.path)
        self.db.row_factory = aiosqlite.Row
        await self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: each batch commit fsyncs the WAL. With NORMAL a committed batch lives in the page
        # cache until the next checkpoint, and a filesystem that aborts (ext4 errors=remount-ro)
        # or a power cut loses it: measured, docs/engine-findings.md 34. One fsync per batch.
        await self.db.execute("PRAGMA synchronous=FULL")
        await self.db.execute("PRAGMA busy_timeout=5000")

    async def _reconnect(self) -> None:
        """SQLite opens a file it may not write read-only, and that connection stays read-only
        after the file is writable again: a store that failed with READONLY is reopened before
        each retry."""
        old = self.db
        try:
            await self._connect()
        except Exception as exc:
            self.db = old
            self.health.last_error = f"{type(exc).__name__}: {exc}"
            return
        if old is not None:
            try:
                await old.close()
            except Exception:
                pass

    async def _begin_run(self) -> None:
        assert self.db is not None
        async with self.db.execute("SELECT alive_at FROM store_runs WHERE stopped_at IS NULL"
                                   " ORDER BY id DESC LIMIT 1") as cur:
            row = await cur.fetchone()
        self.previous_alive_at = float(row[0]) if row else None
        async with self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM store_runs") as cur:
            row = await cur.fetchone()
        self._run_id = int(row[0]) if row else 1
        now = time.time()
        sql = "INSERT INTO store_runs (id, pid, started_at, alive_at) VALUES (?,?,?,?)"
        try:
            await self.db.execute(sql, (self._run_id, os.getpid(), now, now))
            await self.db.commit()
        except Exception as exc:
            if not is_store_fault(exc):
                raise
            # a store that cannot be written at start: calls are still taken, records kept
            await self._rollback()
            self._failed(exc)
            self._pending.append(_Write(sql, (self._run_id, os.getpid(), now, now)))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if self.health.state == "ok" and not self._pending:  # a failing store is not fed more
                self._put("UPDATE store_runs SET alive_at=? WHERE id=?", time.time(), self._run_id)

    async def migrate(self) -> int:
        assert self.db is not None
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this ringmaster ({len(MIGRATIONS)})")
        for i in range(version, len(MIGRATIONS)):
            await self.db.executescript("BEGIN;" + MIGRATIONS[i] + f"PRAGMA user_version={i + 1};COMMIT;")
            log.info("store.migrated", version=i + 1)
        return len(MIGRATIONS)

    async def close(self) -> None:
        """Commit what is queued; a store still failing after CLOSE_GRACE_SECONDS has its pending
        writes spilled (the next start writes them)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._writer is not None:
            now = time.time()
            self._put("UPDATE store_runs SET alive_at=?, stopped_at=? WHERE id=?", now, now, self._run_id)
            try:
                await asyncio.wait_for(self.flush(), CLOSE_GRACE_SECONDS)
            except TimeoutError:
                pass
            # the writer ends between two commit attempts, never inside one: a commit cut by a
            # cancel could land in SQLite and be spilled as well (written twice)
            self._stop.set()
            self._queue.put_nowait(None)
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
            self._take_queued()
            if self._pending and (self.spill_path is None or not self._spill()):
                log.error("store.records_lost_at_stop", rows=len(self._pending), error=self.health.last_error)
            if self._spill_rows:
                log.warning("store.spilled_at_stop", path=str(self.spill_path), rows=self._spill_rows)
            self._resolve_waiters()  # nobody waits for ever on a flush at a stop
        if self.db is not None:
            await self.db.close()
            self.db = None

    # ------------------------------------------------------------ writing

    def _put(self, sql: str, *params: Any) -> None:
        self._queue.put_nowait(_Write(sql, params))

    def _put_joined(self, sql: str, *params: Any) -> None:
        """A write that commits in the same transaction as the one queued just before it (a
        batch never ends between them): an event's webhook deliveries and the event's own row."""
        self._queue.put_nowait(_Write(sql, params, joined=True))

    async def flush(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(fut)
        await fut

    def pending(self) -> int:
        """Writes made but not committed yet (queued, kept through a fault, or spilled)."""
        return self._queue.qsize() + len(self._pending) + self._spill_rows + (self._carry is not None)

    def status(self) -> dict[str, Any]:
        self.health.pending = self.pending()
        self.health.spilled = self._spill_rows
        return self.health.as_dict()

    def _take_queued(self, limit: int | None = None) -> None:
        n = 0
        if self._carry is not None:
            self._pending.append(self._carry)
            self._carry, n = None, 1
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                continue
            if isinstance(item, asyncio.Future):
                self._waiters.append(item)
            elif limit is not None and n >= limit and not item.joined:
                self._carry = item  # past the limit, and not part of the last write's transaction
                break
            else:
                self._pending.append(item)
                n += 1

    async def _write_loop(self) -> None:
        while True:
            if self.health.state == "ok":
                if self._carry is None:
                    if self._stop.is_set() and self._queue.empty():
                        return  # close(): its sentinel was taken with the last batch
                    item = await self._queue.get()
                    if item is None:  # close(): everything before it was taken and tried
                        return
                    (self._waiters if isinstance(item, asyncio.Future) else self._pending).append(item)  # type: ignore[arg-type]
                self._take_queued(500)
            else:
                # failing: wait, take what came meanwhile, then try everything again
                try:
                    await asyncio.wait_for(self._stop.wait(), RETRY_SECONDS)
                    return
                except TimeoutError:
                    pass
                self._take_queued()
                if self._readonly:
                    async with self._tx:
                        await self._reconnect()
            async with self._tx:
                await self._commit_pending()
            if self.health.state != "ok" and self._pending:
                if self.spill_path is None or not self._spill():
                    if len(self._pending) > MAX_PENDING and not self._memory_warned:
                        self._memory_warned = True
                        log.error("store.pending_in_memory", rows=len(self._pending), spill=str(self.spill_path))

    async def _commit_pending(self) -> None:
        """One transaction: the spill file's writes, then the pending ones, in order. On a store
        fault nothing of it stays (rollback) and all of it is kept for the next try."""
        assert self.db is not None
        spill = list(_spill_records(self.spill_path)) if self._spill_rows and self.spill_path else []
        spill_id = spill[0][1][0] if spill and spill[0][0] == "#spill" else None
        t0 = time.perf_counter()
        bad: set[int] = set()
        try:
            done = spill_id is not None and await self._spill_done(spill_id)
            if spill and not done:  # else: committed before a crash that left the file behind
                for sql, params in spill:
                    if sql != "#spill":
                        await self._execute(sql, params)
                if spill_id is not None:  # (a file cut before its header was whole has no id)
                    await self.db.execute("INSERT INTO store_spills (id, rows, replayed_at) VALUES (?,?,?)",
                                          (spill_id, len(spill) - 1, time.time()))
            for i, w in enumerate(self._pending):
                if not await self._execute(w.sql, w.params):
                    bad.add(i)
            await self.db.commit()
        except Exception as exc:
            await self._rollback()
            if not is_store_fault(exc):  # not the disk: retrying cannot help (as before: logged, dropped)
                log.exception("store.commit_failed", rows=len(self._pending))
                self._pending = []
                self._resolve_waiters()
                return
            if bad:
                self._pending = [w for i, w in enumerate(self._pending) if i not in bad]
            self._failed(exc)
            return
        written = len(self._pending) + sum(1 for r in spill if r[0] != "#spill")
        self._pending = []
        if spill or self._spill_rows:
            self._drop_spill()
        self.last_commit_seconds = time.perf_counter() - t0
        if self.health.state != "ok":
            log.info("store.recovered", failing_seconds=round(time.time() - (self.health.since or time.time()), 1),
                     written=written, write_failures=self.health.write_failures)
            self.health.state, self.health.since, self.health.last_error = "ok", None, None
            self._memory_warned = self._spill_error_logged = False
        self._resolve_waiters()

    async def _spill_done(self, spill_id: str) -> bool:
        assert self.db is not None
        async with self.db.execute("SELECT 1 FROM store_spills WHERE id=?", (spill_id,)) as cur:
            return await cur.fetchone() is not None

    def _resolve_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def _execute(self, sql: str, params: Any) -> bool:
        """False if this one row is bad (not a store fault): it is logged and dropped, so one bad
        row never holds back the batch around it. A store fault propagates."""
        assert self.db is not None
        try:
            await self.db.execute(sql, tuple(params))
        except Exception as exc:
            if is_store_fault(exc):
                raise
            log.exception("store.write_failed", sql=sql.split()[0:3])
            return False
        return True

    async def _rollback(self) -> None:
        assert self.db is not None
        try:
            await self.db.rollback()
        except Exception:  # SQLite may have rolled back already (SQLITE_FULL, IOERR)
            pass

    def _failed(self, exc: BaseException) -> None:
        code = getattr(exc, "sqlite_errorcode", None)
        self._readonly = isinstance(code, int) and (code & 0xFF) in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)
        h = self.health
        h.write_failures += 1
        h.last_error = f"{type(exc).__name__}: {exc}"
        if h.state == "ok":
            # one line per fault, not one per retry: the metrics counter counts the retries
            h.state, h.since = "failing", time.time()
            log.error("store.failing", error=h.last_error, path=self.path, pending=self.pending(),
                      retry_seconds=RETRY_SECONDS)

    def _spill(self) -> bool:
        """Append the pending writes to the spill file (oldest first, after what it holds)."""
        assert self.spill_path is not None
        try:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.spill_path.exists()
            with open(self.spill_path, "a", encoding="utf-8") as f:
                if new:
                    f.write(json.dumps(["#spill", [uuid.uuid4().hex]]) + "\n")
                for w in self._pending:
                    f.write(json.dumps([w.sql, list(w.params)]) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            if not self._spill_error_logged:
                self._spill_error_logged = True
                log.error("store.spill_failed", path=str(self.spill_path), error=str(exc), kept_in_memory=len(self._pending))
            return False
        self._spill_rows += len(self._pending)
        if self._spill_rows == len(self._pending):  # the first of this file: one line, not one a second
            log.warning("store.spilling", path=str(self.spill_path), rows=self._spill_rows)
        self._pending = []
        return True

    def _drop_spill(self) -> None:
        assert self.spill_path is not None
        try:
            self.spill_path.unlink(missing_ok=True)
        except OSError as exc:  # its id is in store_spills: a later start will not replay it again
            log.error("store.spill_not_removed", path=str(self.spill_path), error=str(exc))
        self._spill_rows = 0

    # ------------------------------------------------------------ calls

    def call_arrived(self, call_id: str, sip_call_id: str, caller: str, called: str,
                     request_uri: str, worker: str, at: float) -> None:
        self._open_calls.add(call_id)
        self._put("INSERT INTO calls (call_id, sip_call_id, caller, called, request_uri, worker, arrived_at)"
                  " VALUES (?,?,?,?,?,?,?)", call_id, sip_call_id, caller, called, request_uri, worker, at)
        self.event(call_id, "ARRIVED", at, called=called, caller=caller, worker=worker)

    def call_outbound(self, call_id: str, agent: str, number: str, route: str | None, rule: str | None,
                      task_ref: str = "") -> None:
        """The call is one an agent places (docs/outbound.md): to `number`, over trunk `route` by
        outbound rule `rule` (None for a refused one), from chat task `task_ref` if any."""
        self._put("UPDATE calls SET direction='outbound', agent=?, route=?, outbound_rule=?, task_ref=? WHERE call_id=?",
                  agent, route, rule, task_ref or None, call_id)

    def call_flow(self, call_id: str, flow: str) -> None:
        self._put("UPDATE calls SET flow=? WHERE call_id=?", flow, call_id)

    def call_answered(self, call_id: str, at: float) -> None:
        self._put("UPDATE calls SET answered_at=? WHERE call_id=? AND answered_at IS NULL", at, call_id)
        self.event(call_id, "ANSWERED", at)

    def call_ended(self, call_id: str, at: float, disposition: str, cause: str, code: int,
                   by: str, ivr_path: list[str], variables: dict[str, Any]) -> None:
        assert disposition in DISPOSITIONS
        if call_id in self._open_calls:  # counted once, however often a call's end is written
            self._open_calls.discard(call_id)
            self.ended_calls[disposition] += 1
        self._put("UPDATE calls SET ended_at=?, disposition=?, hangup_cause=?, hangup_code=?,"
                  " hangup_by=?, ivr_path=?, variables=? WHERE call_id=? AND ended_at IS NULL",
                  at, disposition, cause, code, by, json.dumps(ivr_path), json.dumps(variables), call_id)
        self.event(call_id, "ENDED", at, disposition=disposition, cause=cause, code=code, by=by)

    def call_recording(self, call_id: str, path: str | None) -> None:
        self._put("UPDATE calls SET recording=? WHERE call_id=?", path, call_id)

    def queue_log(self, at: float, call_id: str, queue: str, agent: str, event: str, data: tuple[object, ...]) -> None:
        self._put("INSERT INTO queue_log (at, call_id, queue, agent, event, data) VALUES (?,?,?,?,?,?)",
                  at, call_id, queue, agent, event, "|".join(str(d) for d in data))

    def call_queued(self, call_id: str, queue: str) -> None:
        self._put("UPDATE calls SET queue=? WHERE call_id=?", queue, call_id)

    def call_agent(self, call_id: str, agent: str, wait_seconds: float) -> None:
        self._put("UPDATE calls SET agent=?, wait_seconds=? WHERE call_id=?", agent, round(wait_seconds, 3), call_id)

    def call_wait(self, call_id: str, wait_seconds: float) -> None:
        """Time spent in queue by a caller who left unserved (abandon, timeout, exit key, empty)."""
        self._put("UPDATE calls SET wait_seconds=? WHERE call_id=?", round(wait_seconds, 3), call_id)

    def call_talk(self, call_id: str, talk_seconds: float) -> None:
        self._put("UPDATE calls SET talk_seconds=? WHERE call_id=?", round(talk_seconds, 3), call_id)

    def call_hold(self, call_id: str, hold_seconds: float, holds: int) -> None:
        """The call's hold time so far (seconds, all stretches) and its number of holds."""
        self._put("UPDATE calls SET hold_seconds=?, holds=? WHERE call_id=?", round(hold_seconds, 3), holds, call_id)

    def event(self, call_id: str, event: str, at: float | None = None, **data: Any) -> None:
        self._put("INSERT INTO call_events (call_id, at, event, data) VALUES (?,?,?,?)",
                  call_id, at if at is not None else time.time(), event, json.dumps(data))

    def voicemail_started(self, call_id: str, box: str, caller: str, path: str, at: float) -> None:
        # the row exists from the first second: a crash mid-message still leaves it findable
        self._put("INSERT INTO voicemails (call_id, box, caller, path, started_at) VALUES (?,?,?,?,?)",
                  call_id, box, caller, path, at)
        self.event(call_id, "VOICEMAIL", at, box=box, path=path)

    def voicemail_finished(self, call_id: str, path: str, seconds: float) -> None:
        self._put("UPDATE voicemails SET seconds=? WHERE call_id=? AND path=?", round(seconds, 2), call_id, path)

    def voicemail_heard(self, message: int, heard: bool, at: float, by: str) -> None:
        """Mark a message heard (Asterisk's Old folder) or new again; by: who (token name, cli)."""
        self._put("UPDATE voicemails SET heard=?, heard_at=?, heard_by=? WHERE id=? AND deleted_at IS NULL",
                  int(heard), at if heard else None, by if heard else None, message)

    def voicemail_deleted(self, message: int, at: float, by: str) -> None:
        """The message's audio is gone: its row stays, marked (by: a token name, cli, retention)."""
        self._put("UPDATE voicemails SET deleted_at=?, deleted_by=? WHERE id=? AND deleted_at IS NULL", at, by, message)

    def callback_requested(self, call_id: str, queue: str, number: str, at: float) -> None:
        self._put("INSERT INTO callbacks (call_id, queue, number, requested_at) VALUES (?,?,?,?)",
                  call_id, queue, number, at)
        self.event(call_id, "CALLBACK", at, queue=queue, number=number)

    def callback_queued(self, callback_id: str, call_id: str, queue: str, number: str, priority: int,
                        enqueued_at: float, skills: dict[str, int], variables: dict[str, Any], at: float) -> None:
        """A queued callback was asked for (docs/callbacks.md): its row, state `waiting`, with
        what puts it back in its place after a restart (priority, arrival time, skills)."""
        self._put("INSERT INTO callbacks (callback_id, call_id, queue, number, requested_at, status, priority,"
                  " enqueued_at, skills, variables, updated_at) VALUES (?,?,?,?,?,'waiting',?,?,?,?,?)",
                  callback_id, call_id, queue, number, at, priority, enqueued_at, json.dumps(skills),
                  json.dumps(variables, default=str), at)
        self.event(callback_id, "CALLBACK_REQUESTED", at, requested_by=call_id, queue=queue, number=number)

    def callback_state(self, callback_id: str, status: str, at: float, **fields: Any) -> None:
        """The callback moved on: status (offered, dialling, answered, waiting again, completed,
        failed, cancelled) and the named columns (agent, attempts, retry_at, dial_call_id,
        answered_at, reason); one call_events row CALLBACK_<STATUS> with them."""
        allowed = {"agent", "attempts", "retry_at", "dial_call_id", "answered_at", "reason"}
        cols = {k: v for k, v in fields.items() if k in allowed}
        sets = "".join(f", {k}=?" for k in cols)
        self._put(f"UPDATE callbacks SET status=?, updated_at=?{sets} WHERE callback_id=?",
                  status, at, *cols.values(), callback_id)
        self.event(callback_id, f"CALLBACK_{status.upper()}", at, **fields)

    def callback_moved(self, callback_id: str, queue: str, at: float) -> None:
        """A reload drained the callback's queue into `queue` (its place kept)."""
        self._put("UPDATE callbacks SET queue=?, updated_at=? WHERE callback_id=?", queue, at, callback_id)
        self.event(callback_id, "CALLBACK_MOVED", at, queue=queue)

    async def open_callbacks(self) -> list[dict[str, Any]]:
        """The callbacks not over yet (waiting, offered, dialling, answered: a restart or a
        crash interrupted the last three), oldest first, to queue again at start."""
        assert self.db is not None
        async with self.db.execute(
                "SELECT callback_id, call_id, queue, number, requested_at, status, priority, enqueued_at,"
                " attempts, retry_at, skills, variables FROM callbacks WHERE callback_id IS NOT NULL"
                " AND status IN ('waiting','offered','dialling','answered') ORDER BY enqueued_at, id") as cur:
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]

    def set_schedule_override(self, name: str, state: str | None, at: float) -> None:
        if state is None:
            self._put("DELETE FROM schedule_overrides WHERE name=?", name)
        else:
            self._put("INSERT INTO schedule_overrides (name, state, set_at) VALUES (?,?,?)"
                      " ON CONFLICT(name) DO UPDATE SET state=excluded.state, set_at=excluded.set_at", name, state, at)

    # ------------------------------------------------------------ queue members changed at run time

    def set_queue_member(self, change: MemberChange) -> None:
        """Keep a run-time member change (acd.members), replacing the one for the same queue and agent."""
        self._put("INSERT INTO queue_members (queue, agent, tier, removed, set_at, set_by) VALUES (?,?,?,?,?,?)"
                  " ON CONFLICT(queue, agent) DO UPDATE SET tier=excluded.tier, removed=excluded.removed,"
                  " set_at=excluded.set_at, set_by=excluded.set_by",
                  change.queue, change.agent, change.tier, int(change.removed), change.at, change.by)

    def clear_queue_member(self, queue: str, agent: str) -> None:
        """The member is back to what the YAML says: its run-time change goes."""
        self._put("DELETE FROM queue_members WHERE queue=? AND agent=?", queue, agent)

    async def queue_members(self) -> dict[tuple[str, str], MemberChange]:
        """Every run-time member change kept, by (queue, agent): read once at start."""
        assert self.db is not None
        async with self.db.execute("SELECT queue, agent, tier, removed, set_at, set_by FROM queue_members") as cur:
            return {(r[0], r[1]): MemberChange(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in await cur.fetchall()}

    # ------------------------------------------------------------ customers (docs/customers.md)

    def customer_seen(self, key: str, kind: str, at: float) -> None:
        """The key names a customer from now on: a new customer (id c-...) unless some
        customer has it already. Every channel that starts an interaction calls this first
        (calls, tasks; callbacks will too)."""
        new_id = f"c-{uuid.uuid4().hex[:12]}"
        self._put("INSERT INTO customers (id, created_at, updated_at) SELECT ?, ?, ?"
                  " WHERE NOT EXISTS (SELECT 1 FROM customer_keys WHERE key=?)", new_id, at, at, key)
        self._put("INSERT OR IGNORE INTO customer_keys (key, kind, customer_id, added_at) VALUES (?,?,?,?)",
                  key, kind, new_id, at)

    def customer_details(self, key: str, name: str | None, tier: str | None, at: float) -> None:
        """The customer of `key` is called `name` / has `tier` (None: unchanged)."""
        self._put("UPDATE customers SET name=coalesce(?, name), tier=coalesce(?, tier), updated_at=?"
                  " WHERE id=(SELECT customer_id FROM customer_keys WHERE key=?)", name, tier, at, key)

    def call_customer(self, call_id: str, key: str) -> None:
        self._put("UPDATE calls SET customer_key=? WHERE call_id=?", key, call_id)

    def task_customer(self, task_id: str, key: str) -> None:
        self._put("UPDATE tasks SET customer_key=? WHERE task_id=?", key, task_id)

    def customers_merged(self, from_id: str, into_id: str, at: float, by: str) -> None:
        """Every key (and so every interaction) of customer from_id now belongs to into_id; its
        name and tier fill what into_id lacks; from_id is gone. One batch: all or nothing."""
        self._put("UPDATE customers SET name=coalesce(name, (SELECT name FROM customers WHERE id=?)),"
                  " tier=coalesce(tier, (SELECT tier FROM customers WHERE id=?)), updated_at=? WHERE id=?",
                  from_id, from_id, at, into_id)
        self._put("UPDATE customer_keys SET customer_id=? WHERE customer_id=?", into_id, from_id)
        self._put("DELETE FROM customers WHERE id=?", from_id)
        self._put("INSERT INTO customer_merges (from_id, into_id, at, by) VALUES (?,?,?,?)", from_id, into_id, at, by)

    def wrapup(self, kind: str, ref: str, agent: str, code: str | None, notes: str | None, at: float) -> None:
        """The agent's wrap-up of a call (kind call) or task (kind task): a code and/or notes;
        a later one replaces what it gives and keeps the rest."""
        self._put("INSERT INTO wrapups (kind, ref, agent, code, notes, at) VALUES (?,?,?,?,?,?)"
                  " ON CONFLICT(kind, ref) DO UPDATE SET agent=excluded.agent, at=excluded.at,"
                  " code=coalesce(excluded.code, code), notes=coalesce(excluded.notes, notes)",
                  kind, ref, agent, code, notes, at)

    # ------------------------------------------------------------ presence and tasks

    def agent_presence(self, agent: str, logged_in: bool, paused: str | None, at: float) -> None:
        self._put("INSERT INTO agent_presence (agent, logged_in, paused, updated_at) VALUES (?,?,?,?)"
                  " ON CONFLICT(agent) DO UPDATE SET logged_in=excluded.logged_in, paused=excluded.paused,"
                  " updated_at=excluded.updated_at", agent, int(logged_in), paused, at)

    async def agent_presences(self) -> dict[str, tuple[bool, str | None]]:
        assert self.db is not None
        async with self.db.execute("SELECT agent, logged_in, paused FROM agent_presence") as cur:
            return {r[0]: (bool(r[1]), r[2]) for r in await cur.fetchall()}

    def task_created(self, task_id: str, channel: str, queue: str, priority: int, skills: dict[str, int],
                     due: float | None, data: dict[str, Any], at: float) -> None:
        self._put("INSERT INTO tasks (task_id, channel, queue, priority, skills, due, data, created_at, enqueued_at)"
                  " VALUES (?,?,?,?,?,?,?,?,?)", task_id, channel, queue, priority, json.dumps(skills), due,
                  json.dumps(data), at, at)

    def task_event(self, at: float, task_id: str, queue: str, agent: str, event: str, data: tuple[object, ...],
                   channel: str) -> None:
        """One task_log row, and the task's row follows the event."""
        self._put("INSERT INTO task_log (at, task_id, queue, agent, event, data, channel) VALUES (?,?,?,?,?,?,?)",
                  at, task_id, queue, agent, event, "|".join(str(d) for d in data), channel)
        if event in ("CONNECT", "RINGNOANSWER", "RINGCANCELED"):
            self._put("DELETE FROM task_offers WHERE task_id=? AND agent=?", task_id, agent)
        if event == "ENTERQUEUE":
            self._put("UPDATE tasks SET queue=?, enqueued_at=?, state='queued', agent=NULL, assigned_at=NULL"
                      " WHERE task_id=?", queue, at, task_id)
        elif event == "CONNECT":
            self._put("UPDATE tasks SET state='assigned', agent=?, assigned_at=?,"
                      " wait_seconds=round(? - created_at, 3) WHERE task_id=?", agent, at, at, task_id)
        elif event in ("COMPLETEAGENT", "COMPLETECALLER"):
            self._put("UPDATE tasks SET state='completed', disposition='completed', ended_at=?,"
                      " handle_seconds=round(? - assigned_at, 3) WHERE task_id=?", at, at, task_id)
        elif event == "ABANDON":
            self._put("UPDATE tasks SET state='cancelled', disposition='cancelled', ended_at=?,"
                      " wait_seconds=round(? - created_at, 3) WHERE task_id=?", at, at, task_id)

    def task_offered(self, task_id: str, agents: tuple[str, ...], queue: str, channel: str, at: float) -> None:
        for agent in agents:
            self._put("INSERT OR REPLACE INTO task_offers (task_id, agent, queue, channel, at) VALUES (?,?,?,?,?)",
                      task_id, agent, queue, channel, at)

    async def close_task_offers(self, now: float) -> int:
        """Offers of tasks a previous run left open (a crash; a clean stop withdraws them) get
        their RINGCANCELED in task_log, at the moment that run was last alive. Returns how many."""
        assert self.db is not None
        from ringmaster.orphans import last_alive

        async with self._tx:
            try:
                async with self.db.execute("SELECT task_id, agent, queue, channel, at FROM task_offers") as cur:
                    offers = [tuple(r) for r in await cur.fetchall()]
                if not offers:
                    return 0
                async with self.db.execute("SELECT alive_at FROM store_runs WHERE id<? ORDER BY id DESC LIMIT 1",
                                           (self._run_id,)) as cur:
                    row = await cur.fetchone()
                end = min(now, await last_alive(self.db, float(row[0]) if row else None) or now)
                for task_id, agent, queue, channel, at in offers:
                    end_at = max(end, float(at))
                    await self.db.execute(
                        "INSERT INTO task_log (at, task_id, queue, agent, event, data, channel) VALUES (?,?,?,?,?,?,?)",
                        (end_at, task_id, queue, agent, "RINGCANCELED", str(round((end_at - float(at)) * 1000)), channel))
                await self.db.execute("DELETE FROM task_offers")
                await self.db.commit()
            except Exception as exc:
                await self._rollback()
                if not is_store_fault(exc):
                    raise
                self._failed(exc)
                return 0
        log.warning("store.task_offers_closed", offers=len(offers), closed_at=end)
        return len(offers)

    async def open_tasks(self) -> list[dict[str, Any]]:
        assert self.db is not None
        async with self.db.execute("SELECT * FROM tasks WHERE state IN ('queued', 'assigned') ORDER BY id") as cur:
            rows = [dict(r) for r in await cur.fetchall()]
        for r in rows:
            r["skills"] = json.loads(r["skills"])
            r["data"] = json.loads(r["data"])
        return rows

    async def task_exists(self, task_id: str) -> bool:
        assert self.db is not None
        async with self.db.execute("SELECT 1 FROM tasks WHERE task_id=?", (task_id,)) as cur:
            return await cur.fetchone() is not None

    async def recent_task_ids(self, limit: int) -> list[str]:
        """The newest task ids, oldest first."""
        assert self.db is not None
        async with self.db.execute("SELECT task_id FROM tasks ORDER BY id DESC LIMIT ?", (limit,)) as cur:
            rows = await cur.fetchall()
        return [str(r[0]) for r in reversed(list(rows))]

    # ------------------------------------------------------------ webhook outbox (ringmaster.webhooks)

    def webhook_enqueue(self, webhook: str, event_id: str, event: str, lane: str, body: bytes, at: float) -> None:
        """An event's delivery to one endpoint, committed with the write queued before it (the
        event's own record), so a stored event always has its deliveries."""
        self._put_joined("INSERT OR IGNORE INTO webhook_outbox (webhook, event_id, event, lane, body, created_at,"
                         " queued_at, next_at) VALUES (?,?,?,?,?,?,?,?)",
                         webhook, event_id, event, lane, body.decode(), at, at, at)

    def webhook_attempted(self, webhook: str, event_id: str, attempts: int, next_at: float,
                          status: int | None, error: str) -> None:
        """A failed attempt: the next one is due at next_at (epoch seconds)."""
        self._put("UPDATE webhook_outbox SET attempts=?, next_at=?, last_status=?, last_error=?"
                  " WHERE webhook=? AND event_id=? AND state='pending'", attempts, next_at, status, error,
                  webhook, event_id)

    def webhook_delivered(self, webhook: str, event_id: str) -> None:
        self._put("DELETE FROM webhook_outbox WHERE webhook=? AND event_id=?", webhook, event_id)

    def webhook_dead(self, webhook: str, event_id: str, attempts: int, at: float, status: int | None,
                     error: str) -> None:
        """Given up: a dead letter, kept until an admin retries it."""
        self._put("UPDATE webhook_outbox SET state='dead', attempts=?, dead_at=?, last_status=?, last_error=?"
                  " WHERE webhook=? AND event_id=?", attempts, at, status, error, webhook, event_id)

    def webhook_retried(self, row_id: int, at: float) -> None:
        """A dead letter sent again (an admin): attempts and max age start over at `at`."""
        self._put("UPDATE webhook_outbox SET state='pending', attempts=0, next_at=?, queued_at=?, dead_at=NULL"
                  " WHERE id=? AND state='dead'", at, at, row_id)

    async def webhook_pending(self) -> list[dict[str, Any]]:
        """The deliveries not made yet, in event order (at start; rows, as dicts)."""
        assert self.db is not None
        async with self.db.execute("SELECT * FROM webhook_outbox WHERE state='pending' ORDER BY id") as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def webhook_dead_counts(self) -> dict[str, int]:
        """Dead letters by endpoint (at start; then counted as they change)."""
        assert self.db is not None
        async with self.db.execute("SELECT webhook, COUNT(*) FROM webhook_outbox WHERE state='dead'"
                                   " GROUP BY webhook") as cur:
            return {str(r[0]): int(r[1]) for r in await cur.fetchall()}

    async def schedule_overrides(self) -> dict[str, str]:
        assert self.db is not None
        async with self.db.execute("SELECT name, state FROM schedule_overrides") as cur:
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def expired_recordings(self, older_than: float, limit: int = 500) -> list[tuple[str, str]]:
        """(call_id, path) of recordings of calls that ended before older_than, not yet deleted.
        A call still in progress has no ended_at, so its recording is never returned."""
        assert self.db is not None
        async with self.db.execute(
                "SELECT call_id, recording FROM calls WHERE recording IS NOT NULL AND recording_deleted_at IS NULL"
                " AND ended_at IS NOT NULL AND ended_at < ? AND disposition != 'in_progress' ORDER BY ended_at LIMIT ?",
                (older_than, limit)) as cur:
            return [(r[0], r[1]) for r in await cur.fetchall()]

    def recording_deleted(self, call_id: str, at: float) -> None:
        self._put("UPDATE calls SET recording_deleted_at=? WHERE call_id=?", at, call_id)
        self.event(call_id, "RECORDING_DELETED", at, reason="retention")

    async def close_orphans(self, at: float) -> int:
        """Calls a previous run left in progress (crash, power loss) are closed as failed, and
        their queue_log entries and offers get their closing events (see ringmaster.orphans),
        at the moment that run was last alive. at: now. Returns the number of calls closed."""
        assert self.db is not None
        from ringmaster.orphans import close_orphans

        async with self._tx:
            try:
                report = await close_orphans(self.db, at, self.previous_alive_at)
            except Exception as exc:
                await self._rollback()
                if not is_store_fault(exc):
                    raise
                self._failed(exc)  # they stay open; the next start closes them
                log.error("store.orphans_not_closed", error=str(exc))
                return 0
        self.ended_calls["failed"] += report.calls
        if report.calls:
            log.warning("store.orphans_closed", calls=report.calls, queue_outcomes=report.outcomes,
                        offers=report.offers, closed_at=report.closed_at, downtime=round(at - (report.closed_at or at), 1))
        return report.calls

def _spill_records(path: Path | None) -> list[tuple[str, list[Any]]]:
    """The spill file's lines: ("#spill", [id]) first, then (sql, params). A line cut short by a
    crash while it was written is skipped (the rows before it are whole)."""
    out: list[tuple[str, list[Any]]] = []
    if path is None or not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                sql, params = json.loads(line)
            except (ValueError, TypeError):
                log.error("store.spill_line_skipped", path=str(path), line=line[:80])
                continue
            out.append((str(sql), list(params)))
    return out
