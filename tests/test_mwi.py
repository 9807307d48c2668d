"""The message-waiting notifier without SIP: subscriptions from the edge's events, the NOTIFYs
it hands the edge (dialog headers, counts, states), expiry, and what it refuses."""

from __future__ import annotations

import asyncio

from ringmaster.mwi import PER_USER, MwiNotifier, parse_event, summary_body


def event(call_id: str = "c1", expires: int = 600, user: str = "alice", **over: object) -> dict[str, object]:
    e: dict[str, object] = {"event": "mwi-subscribe", "call_id": call_id, "from_uri": f"sip:{user}@10.0.0.1",
                            "from_tag": "ph1", "to_uri": f"sip:{user}@10.0.0.1", "to_tag": "edge1",
                            "contact": f"sip:{user}@192.0.2.7:5062", "expires": expires, "proto": "udp",
                            "source": "192.0.2.7:5062", "user": user}
    e.update(over)
    return e


class Edge:
    """Collects what the notifier hands the edge, split as the edge's event_route splits it."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []

    def send(self, message: str) -> None:
        self.sent.append(message.split("|"))


async def run(notifier: MwiNotifier, events: list[dict[str, object]], settle: float = 0.05) -> None:
    notifier.start()
    for e in events:
        notifier.on_event(e)
    await asyncio.sleep(settle)


def test_summary_body_follows_rfc_3842():
    assert summary_body("sip:alice@h", 2, 5) == ("Messages-Waiting: yes\r\nMessage-Account: sip:alice@h\r\n"
                                                 "Voice-Message: 2/5 (0/0)\r\n")
    assert summary_body("sip:alice@h", 0, 5).startswith("Messages-Waiting: no\r\n")


def test_event_fields_that_could_break_the_edges_message_are_refused():
    for bad in ({"contact": "sip:a@b|x"}, {"call_id": "a b"}, {"from_tag": 'x",y'}, {"expires": "600"},
                {"proto": "sctp"}, {"to_uri": "tel:123"}, {"user": ""}):
        try:
            parse_event(event(**bad), 0.0)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


async def test_first_notify_at_once_then_one_per_change_in_the_dialog_with_rising_cseq():
    edge = Edge()
    counts = {"alice": (0, 0)}

    async def count(user: str) -> tuple[int, int] | None:
        return counts.get(user)

    n = MwiNotifier(edge.send, count, "10.0.0.1", 5060, clock=lambda: 1000.0)
    try:
        await run(n, [event()])
        counts["alice"] = (1, 0)
        n.users_changed({"alice"})
        n.users_changed({"bob"})  # nobody of bob's subscribes: nothing sent
        await asyncio.sleep(0.05)
        n.on_event(event(expires=0))
        await asyncio.sleep(0.05)
    finally:
        await n.stop()
    assert [s[0] for s in edge.sent] == ["notify"] * 3
    ruri, nexthop, headers, body = edge.sent[1][1:]
    assert ruri == "sip:alice@192.0.2.7:5062" and nexthop == "sip:192.0.2.7:5062;transport=udp"
    assert "From: <sip:alice@10.0.0.1>;tag=edge1\r\n" in headers and "To: <sip:alice@10.0.0.1>;tag=ph1\r\n" in headers
    assert "Call-ID: c1\r\n" in headers and "Event: message-summary\r\n" in headers
    assert "Subscription-State: active;expires=600\r\n" in headers
    assert "Voice-Message: 1/0" in body
    assert ["CSeq: 1 NOTIFY", "CSeq: 2 NOTIFY", "CSeq: 3 NOTIFY"] == [
        next(h for h in s[3].split("\r\n") if h.startswith("CSeq")) for s in edge.sent]
    assert "Subscription-State: terminated\r\n" in edge.sent[2][3]
    assert n.subs == {}


async def test_a_subscription_not_refreshed_ends_with_a_terminated_notify():
    edge = Edge()
    now = [1000.0]

    async def count(user: str) -> tuple[int, int] | None:
        return (0, 0)

    n = MwiNotifier(edge.send, count, "10.0.0.1", 5060, clock=lambda: now[0])
    try:
        await run(n, [event(expires=60)])
        now[0] += 61
        n.users_changed(set())  # wakes it (the real loop wakes at the nearest expiry)
        await asyncio.sleep(0.1)
    finally:
        await n.stop()
    assert "Subscription-State: terminated;reason=timeout\r\n" in edge.sent[-1][3]
    assert n.subs == {}


async def test_a_phone_that_forgets_its_dialogs_keeps_only_its_newest_subscriptions():
    edge = Edge()

    async def count(user: str) -> tuple[int, int] | None:
        return (0, 0)

    t = [0.0]
    n = MwiNotifier(edge.send, count, "10.0.0.1", 5060, clock=lambda: t[0])
    for i in range(10):
        t[0] = float(i)
        n.on_event(event(call_id=f"c{i}"))
    n.on_event(event(call_id="b1", user="bob"))
    assert sorted(k[0] for k, s in n.subs.items() if s.user == "alice") == [f"c{i}" for i in range(10 - PER_USER, 10)]
    assert ("b1", "ph1") in n.subs


async def test_a_refresh_of_a_dialog_from_before_a_restart_notifies_above_any_earlier_cseq():
    edge = Edge()

    async def count(user: str) -> tuple[int, int] | None:
        return (0, 0)

    n = MwiNotifier(edge.send, count, "10.0.0.1", 5060, clock=lambda: 1_795_000_000.0)
    try:
        await run(n, [event(refresh=1), event(call_id="c2")])
    finally:
        await n.stop()
    cseqs = {s[3].split("Call-ID: ")[1].split("\r\n")[0]: s[3].split("CSeq: ")[1].split(" ")[0] for s in edge.sent}
    assert cseqs == {"c1": str(1_795_000_000 - 1_672_531_200 + 1), "c2": "1"}
