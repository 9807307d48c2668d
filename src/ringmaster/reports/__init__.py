"""Reports: the one owner of every read of the stored records, for the CLI and the API alike.

- filters.py  what a report can be filtered by (CallFilter, TaskFilter, EventFilter, times),
              validated once for both surfaces; the API's query parameters come from here
- reads.py    the reads themselves: calls, one call's events, tasks, queue_log/task_log lines,
              the events behind the figures, voicemail messages and their counts per box
              (plain functions on a read-only connection)
- stats.py    the figures' definitions: a running Tally fed queue_log events (no IO)
- today.py    today's queue figures kept by reading only the rows stored since the last read
- reader.py   the daemon's adapter: the same reads in one thread of their own
- render.py   how the CLI prints rows (table, CSV, JSON lines)

Live figures (what is waiting, who is busy) are not stored: they come from the controller's
read model (ringmaster.live).
"""

from ringmaster.reports.filters import CallFilter, EventFilter, FilterError, TaskFilter, VoicemailFilter, parse_time

__all__ = ["CallFilter", "EventFilter", "FilterError", "TaskFilter", "VoicemailFilter", "parse_time"]
