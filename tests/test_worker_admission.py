"""The worker's admission rules and its dtmf-relay guard, without SIP: who may open a
dialog, how many calls may allocate media per half second, which INFO bodies pjsua's parser
survives (the integration tests in test_worker_defence.py show each against real pjsua)."""

from __future__ import annotations

import pytest

from ringmaster import protocol as p
from ringmaster.worker.admission import IOQUEUE_MAX_HANDLES, MAX_LIVE_CALLS, SOCKETS_PER_CALL, MediaBudget, SourcePolicy
from ringmaster.worker.dtmfrelay import body_is_safe


def test_only_listed_sources_may_open_dialogs_and_no_list_means_nobody():
    edge = SourcePolicy.parse(["10.0.0.5:5060"])
    assert edge.allows("10.0.0.5:5060")
    assert not edge.allows("10.0.0.5:5061") and not edge.allows("10.0.0.6:5060")
    host = SourcePolicy.parse(["127.0.0.1", "[::1]:5060"])
    assert host.allows("127.0.0.1:40000") and host.allows("[::1]:5060") and not host.allows("[::1]:5061")
    assert not SourcePolicy.parse([]).allows("127.0.0.1:5060")
    assert not edge.allows("garbage") and not edge.allows("")


@pytest.mark.parametrize("bad", ["edge.example.com:5060", "10.0.0.5:0", "10.0.0.5:70000", ""])
def test_an_allowed_source_is_an_ip_with_an_optional_port(bad):
    with pytest.raises(ValueError, match="allowed source"):
        SourcePolicy.parse([bad])


def test_media_budget_keeps_live_and_closing_sockets_below_the_ioqueue_size():
    b = MediaBudget()
    taken = 0
    t = 0.0
    while t < 0.5:  # a flood: one call offered every millisecond for half a second
        if b.available(t):
            b.take(t)
            taken += 1
        t += 0.001
    assert taken == b.limit
    # every call born in the window plus the live ones before and after can hold sockets
    assert SOCKETS_PER_CALL * (2 * MAX_LIVE_CALLS + taken) < IOQUEUE_MAX_HANDLES
    assert not b.available(0.5) and b.available(0.6)  # the window slides


def test_dtmf_relay_bodies_pjsua_survives_pass_and_the_others_are_caught():
    head = b"INFO sip:w1@127.0.0.1 SIP/2.0\r\nContent-Type: application/dtmf-relay\r\n\r\n"
    for body in (b"Signal=4\r\nDuration=160", b"Signal=4\r\nDuration=160\r\n", b"Signal= Z\r\n", b"\r\nSignal=4"):
        assert body_is_safe(head + body), body
    for body in (b"Signal=5", b"Signal=5\x00\r\nDuration=160\r\n", b"Signal=7\n", b"Signal=\r\r\nDuration=1\r\n"):
        assert not body_is_safe(head + body), body
    # other bodies are pjsua's business
    assert body_is_safe(b"INFO sip:w1 SIP/2.0\r\nContent-Type: text/plain\r\n\r\nSignal=5")


@pytest.mark.parametrize("msg", [
    p.TransferRequested(leg="w1-in1", target="sip:+4590901234@10.0.0.9", via="refer"),
    p.TransferRequested(leg="c-a1", target="sip:x@y?Replaces=abc%3Bto-tag%3D1", via="refer", replaces=True),
    p.TransferRequested(leg="c-b1", target="sip:\udcff@evil", via="redirect"),  # a peer's bytes, as decoded
    p.SourceRefused(source="192.0.2.7", method="INVITE", code=403, count=99),
    p.Refer(leg="alice-in1", target="sip:bob@127.0.0.1"),
    p.ReferStatus(leg="alice-in1", code=603, reason="Decline", final=True),
])
def test_new_worker_messages_survive_the_wire(msg):
    assert p.decode(p.encode(msg)) == msg
