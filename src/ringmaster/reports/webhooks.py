"""Reads of the webhook outbox's dead letters (deliveries given up: ringmaster.webhooks), for
the API. Plain functions over a read-only sqlite3 connection, like reports.reads."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

DEAD_LETTERS_MAX = 1000  # rows one request may ask for


def _row(r: sqlite3.Row) -> dict[str, Any]:
    rec = dict(r)
    try:
        rec["payload"] = json.loads(rec.pop("body"))
    except (ValueError, TypeError):
        rec["payload"] = None
    return rec


_COLUMNS = ("id, webhook, event_id, event, lane, body, created_at, queued_at, state, attempts, last_status,"
            " last_error, dead_at")


def dead_letters(con: sqlite3.Connection, webhook: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Dead letters, oldest event first: id (what retry takes), webhook, event_id (webhook-id),
    event, lane, payload (the body as JSON), created_at, dead_at, attempts, last_status,
    last_error. webhook: only this endpoint's."""
    sql = f"SELECT {_COLUMNS} FROM webhook_outbox WHERE state='dead'"
    args: list[Any] = []
    if webhook is not None:
        sql += " AND webhook=?"
        args.append(webhook)
    sql += " ORDER BY id LIMIT ?"
    args.append(max(1, min(limit, DEAD_LETTERS_MAX)))
    return [_row(r) for r in con.execute(sql, args)]


def dead_letter(con: sqlite3.Connection, row_id: int) -> dict[str, Any] | None:
    """One dead letter by id with its body as stored (`body`, text), or None (no such dead letter)."""
    r = con.execute(f"SELECT {_COLUMNS}, next_at FROM webhook_outbox WHERE id=? AND state='dead'",
                    (row_id,)).fetchone()
    return dict(r) if r is not None else None
