"""Webhooks out: events as signed HTTP POSTs (Standard Webhooks 1.0) from a persistent outbox.

- events.py: the event types, the lanes they are ordered in, the body (docs/webhooks.md);
- signing.py: webhook-id / webhook-timestamp / webhook-signature (HMAC-SHA256);
- outbox.py: which delivery goes next, backoff with jitter, dead letters (no IO);
- sender.py: WebhookSender, the IO: the store's outbox table through the one writer, aiohttp.
"""
