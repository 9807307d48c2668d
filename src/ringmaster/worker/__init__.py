"""pjsua2 media worker: a child process that executes call-control commands.

Run as `python -m ringmaster.worker --fd N ...`; it speaks ringmaster.protocol over the
inherited socket N. Everything pjsua2-specific lives in this package.
"""
