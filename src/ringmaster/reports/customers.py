"""Reads of customers: who a key belongs to, the customer's keys and the history of its
interactions over every channel (calls, chats, emails, voicemail), newest first.

One interaction is one dict: {"channel": voice|chat|email|voicemail, "ref": call or task id
(voicemail: its call's id), "at": epoch seconds it began, "queue", "agent", "disposition",
"wait", "talk" (seconds; a task's handle time, a message's length), "code", "notes",
"direction" (inbound, or outbound for a call an agent placed), "link" (a call placed from a
chat: the chat's task id; a chat: the id of the last call placed from it; else None)}.

Where the rows come from (one SELECT each in _SOURCES): calls and tasks by their
`customer_key`, voicemails through their call, wrap-ups from `wrapups`. Callbacks are not an
interaction yet: the callback change adds its SELECT to _SOURCES (over its own rows, keyed by
`customer_key` like calls) and calls Store.customer_seen when one is requested.
"""

from __future__ import annotations

import sqlite3
from typing import Any

_FIELDS = "channel, ref, at, queue, agent, disposition, wait, talk, code, notes, direction, link"
_KEYS = "(SELECT key FROM customer_keys WHERE customer_id = :customer)"
_SOURCES = (
    f"""SELECT 'voice', c.call_id, c.arrived_at, c.queue, c.agent, c.disposition, c.wait_seconds,
               c.talk_seconds, w.code, w.notes, c.direction, c.task_ref
        FROM calls c LEFT JOIN wrapups w ON w.kind = 'call' AND w.ref = c.call_id
        WHERE c.customer_key IN {_KEYS}""",
    f"""SELECT t.channel, t.task_id, t.created_at, t.queue, t.agent, coalesce(t.disposition, t.state),
               t.wait_seconds, t.handle_seconds, w.code, w.notes, 'inbound',
               (SELECT c.call_id FROM calls c WHERE c.task_ref = t.task_id ORDER BY c.arrived_at DESC LIMIT 1)
        FROM tasks t LEFT JOIN wrapups w ON w.kind = 'task' AND w.ref = t.task_id
        WHERE t.customer_key IN {_KEYS}""",
    f"""SELECT 'voicemail', v.call_id, v.started_at, v.box, NULL,
               CASE WHEN v.deleted_at IS NOT NULL THEN 'deleted' WHEN v.heard THEN 'heard' ELSE 'new' END,
               NULL, v.seconds, NULL, NULL, 'inbound', NULL
        FROM voicemails v JOIN calls c ON c.call_id = v.call_id
        WHERE c.customer_key IN {_KEYS}""",
)


def customer_id(con: sqlite3.Connection, key: str) -> str | None:
    """The id of the customer `key` belongs to, or None."""
    row = con.execute("SELECT customer_id FROM customer_keys WHERE key=?", (key,)).fetchone()
    return str(row[0]) if row else None


def history(con: sqlite3.Connection, customer: str, limit: int | None = None,
            exclude: str = "") -> list[dict[str, Any]]:
    """The customer's interactions, newest first; limit: at most this many; exclude: leave out
    the interaction with this ref (the call or task being offered)."""
    sql = " UNION ALL ".join(_SOURCES)
    sql = f"WITH i({_FIELDS}) AS ({sql}) SELECT {_FIELDS} FROM i WHERE ref != :exclude ORDER BY at DESC"
    params: dict[str, Any] = {"customer": customer, "exclude": exclude}
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    names = [f.strip() for f in _FIELDS.split(",")]
    return [dict(zip(names, tuple(r), strict=True)) for r in con.execute(sql, params)]


def customer(con: sqlite3.Connection, key: str, limit: int | None = None,
             exclude: str = "") -> dict[str, Any] | None:
    """{"id", "key" (the one asked for), "name", "tier", "created_at", "keys": [{key, kind,
    added_at}], "history": [interaction, ...]} for the customer `key` belongs to, or None."""
    cid = customer_id(con, key)
    if cid is None:
        return None
    row = con.execute("SELECT id, name, tier, created_at FROM customers WHERE id=?", (cid,)).fetchone()
    keys = [{"key": k, "kind": kind, "added_at": at} for k, kind, at in
            con.execute("SELECT key, kind, added_at FROM customer_keys WHERE customer_id=? ORDER BY added_at, key",
                        (cid,))]
    return {"id": cid, "key": key, "name": row[1] if row else None, "tier": row[2] if row else None,
            "created_at": row[3] if row else None, "keys": keys, "history": history(con, cid, limit, exclude)}
