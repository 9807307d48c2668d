"""A call ending and a new one arriving in the same poll of the worker (issue 10, finding 48).

pjsua gives call ids round-robin; with its 4 slots full, the slot a BYE frees is the only one
the next INVITE can get. When the ended leg's pjsua2 object outlived that moment, its
destructor cleared the new call's user data and hung it up: the caller got a final answer
or BYE it should not have, the worker's own answer failed ("INVITE session already
terminated"), and the controller never heard the new call end. Here four raw callers fill a
worker's slots; then, ten times over, the oldest sends BYE and a spare caller sends INVITE
back to back.
"""

from __future__ import annotations

import asyncio

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.helpers.rawuac import RawUac


async def _answered(phone: Phone, uac: RawUac, after: int) -> p.Incoming:
    """The worker is told of the INVITE, answers it; the caller gets 200 and ACKs."""
    inc = await phone.wait(p.Incoming, timeout=5, after=after)
    phone.send(p.Answer(leg=inc.leg, code=200))
    reply = await asyncio.to_thread(uac.complete_invite)
    assert reply.code == 200, reply.text[:300]
    return inc


async def test_a_call_that_gets_the_id_of_one_just_ended_is_not_hung_up(daemon_factory):
    d = daemon_factory(workers=1, start=False)  # only for its port block
    worker = await Phone("worker", d.ports.workers, d.ports.base + 100).start()
    target = ("127.0.0.1", d.ports.workers)
    uacs = [RawUac(d.ports.caller(i), target) for i in range(5)]
    try:
        live: list[tuple[RawUac, p.Incoming]] = []
        for i in range(4):
            mark = len(worker.events)
            uacs[i].send_invite("4000", d.ports.sink(i))
            live.append((uacs[i], await _answered(worker, uacs[i], mark)))
        spare = uacs[4]
        for rnd in range(10):
            ending, ending_inc = live.pop(0)
            spare.new_call()
            mark = len(worker.events)
            ending.request("BYE")  # ... and the next INVITE right behind it, same poll
            spare.send_invite("4000", d.ports.sink(10 + rnd))
            inc = await _answered(worker, spare, mark)
            await asyncio.to_thread(spare.pump, 0.5)
            assert [r.method for r in spare.requests] == [], f"round {rnd}: the new call was ended"
            await worker.wait(p.CallState, lambda m, leg=ending_inc.leg: m.leg == leg and m.state == "disconnected",
                              timeout=5, after=mark)
            errors = [m for m in worker.events[mark:] if isinstance(m, p.Error)]
            assert errors == [], f"round {rnd}: {errors}"
            live.append((spare, inc))
            spare = ending
        slots = [m for m in worker.events if isinstance(m, p.Slots)]
        assert slots[-1].used == 4 and len(slots[-1].legs) == 4, slots[-1]  # all four still up
    finally:
        for u in uacs:
            u.close()
        await worker.stop()
