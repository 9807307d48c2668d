"""One call's decisions (core.py, sans-IO) and the record events it emits (records.py).

`calls.CallSession` is the IO adapter around `CallCore`: it sends the core's worker commands,
hands its record events to `records.RecordWriter` (the one place that maps them to store
writes) and runs its deadlines on the event loop's monotonic clock.
"""
