"""Recording retention on a real store and real files: old recordings go, their calls stay
(marked); a call still in progress and recent calls keep theirs; nothing outside the
recordings directory is ever deleted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ringmaster.retention import sweep
from ringmaster.store import Store

DAY = 86400.0
NOW = 1_795_000_000.0


async def test_retention_deletes_old_recordings_marks_calls_and_spares_live_and_recent(tmp_path: Path):
    rec = tmp_path / "recordings"
    rec.mkdir()
    outside = tmp_path / "precious.wav"
    outside.write_bytes(b"RIFF")
    store = Store(tmp_path / "calls.db")
    await store.open()
    cases = {  # call_id: (ended days ago or None for in progress, file)
        "old": (40, rec / "old.wav"), "recent": (2, rec / "recent.wav"),
        "live": (None, rec / "live.wav"), "livedb": (40, rec / "livedb.wav"), "escape": (40, outside),
    }
    for cid, (ago, path) in cases.items():
        if path.parent == rec:
            path.write_bytes(b"RIFF....WAVE")
        start = NOW - (ago or 50) * DAY
        store.call_arrived(cid, cid, "4511", "500", "sip:500@x", "w1", start)
        store.call_recording(cid, str(path))
        if ago is not None:
            store.call_ended(cid, NOW - ago * DAY, "completed", "x", 200, "caller", [], {})
    await store.flush()
    deleted = await sweep(store, 30, str(rec), live_calls=lambda: {"livedb"}, now=NOW)
    await store.close()
    assert deleted == 1
    assert not (rec / "old.wav").exists()
    assert (rec / "recent.wav").exists() and (rec / "live.wav").exists() and (rec / "livedb.wav").exists()
    assert outside.exists()
    con = sqlite3.connect(tmp_path / "calls.db")
    marked = dict(con.execute("SELECT call_id, recording_deleted_at FROM calls"))
    events = con.execute("SELECT call_id, event FROM call_events WHERE event='RECORDING_DELETED'").fetchall()
    con.close()
    assert marked["old"] == NOW and all(marked[c] is None for c in ("recent", "live", "livedb", "escape"))
    assert events == [("old", "RECORDING_DELETED")]
    assert len(marked) == 5  # the call log keeps every call
