"""Registration to the company PBX (a real Kamailio registrar with digest auth): succeeds,
refreshes before expiry, routes the PBX's calls to the edge; a wrong password is one clear
error naming the registrar, not a retry storm."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.helpers.audio import TONES_TOL, has_tone
from tests.helpers.daemon import TONES
from tests.helpers.pbx import Pbx
from tests.helpers.rtp import RtpSink
from tests.helpers.sipp import run_sipp


def _wait_state(d, state: str, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    reg = None
    while time.monotonic() < deadline:
        st = d.status()
        reg = st["registrations"][0] if st and st.get("registrations") else None
        if reg and reg["state"] == state:
            return reg
        time.sleep(0.1)
    raise AssertionError(f"registration not {state} in {timeout}s: {reg}\n{d.log_text()[-2000:]}")


def test_registration_succeeds_refreshes_and_the_pbx_calls_reach_the_flow(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    pbx_port = d.ports.caller(9)
    pbx = Pbx(tmp_path / "pbx", pbx_port, "ringmaster", "s3cret", max_expires=10).start()
    try:
        d.config["sip"]["trusted"].append({"name": "pbx", "address": f"127.0.0.1:{pbx_port}"})
        d.config["sip"]["registrations"] = [{"name": "pbx", "registrar": f"sip:127.0.0.1:{pbx_port}",
                                             "username": "ringmaster", "password": "s3cret", "expires": 60}]
        d.start()
        reg = _wait_state(d, "registered")
        assert reg["code"] == 200 and reg["contact"] == f"sip:ringmaster@127.0.0.1:{d.ports.edge}"
        assert reg["expires"] <= 10  # the registrar's cap is honoured
        assert f"contact=<sip:ringmaster@127.0.0.1:{d.ports.edge}>" in pbx.log()  # Contact is the edge
        time.sleep(7.5)  # expires 10 -> pjsua2 refreshes about 5 s before expiry
        assert pbx.registered() >= 2, pbx.log()[-1500:]
        assert _wait_state(d, "registered")["failures"] == 0
        # a caller dials the PBX's DID 100; the PBX routes to our Contact = the edge -> demo flow
        sink = RtpSink(d.ports.sink())
        try:
            res = run_sipp("uac_prompt.xml", f"127.0.0.1:{pbx_port}", d.ports.caller(3), tmp_path, service="100",
                           rtp_sink=sink.port, timeout=20)
        finally:
            sink.close()
        assert res.successful == 1, res.output + pbx.log()[-1500:]
        assert has_tone(sink.audio(), TONES["welcome"], tol=TONES_TOL)
        row = d.wait_calls_ended(1)[0]
        assert row["called"] == "100" and row["flow"] == "demo"
    finally:
        d.stop()
        pbx.stop()


def test_wrong_password_is_one_clear_error_naming_the_registrar_not_a_retry_storm(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    pbx_port = d.ports.caller(9)
    pbx = Pbx(tmp_path / "pbx", pbx_port, "ringmaster", "s3cret").start()
    try:
        registrar = f"sip:127.0.0.1:{pbx_port}"
        d.config["sip"]["registrations"] = [{"name": "pbx", "registrar": registrar, "username": "ringmaster",
                                             "password": "wrong"}]
        d.start()
        reg = _wait_state(d, "auth_failed")
        assert reg["code"] in (401, 403) and reg["retry_in"] > 500
        time.sleep(4)
        assert pbx.registers() <= 2, pbx.log()[-2000:]  # the first REGISTER and one answer to the challenge
        errors = d.events("registration.auth_failed")
        assert len(errors) == 1 and errors[0]["registrar"] == registrar and errors[0]["level"] == "error"
        assert pbx.registered() == 0
        assert d.status()["registrations"][0]["state"] == "auth_failed"
    finally:
        d.stop()
        pbx.stop()


def test_failing_registrar_is_retried_with_growing_backoff(daemon_factory, tmp_path: Path):
    """A registrar answering 503 (overloaded, down for maintenance) is retried 2, 4, 8 s later,
    not hammered. (One that never answers fails only after the 32 s transaction timeout.)"""
    import socket

    d = daemon_factory(workers=1, start=False)
    port = d.ports.caller(8)
    registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    registrar.bind(("127.0.0.1", port))
    registrar.settimeout(0.2)
    d.config["sip"]["registrations"] = [{"name": "pbx", "registrar": f"sip:127.0.0.1:{port}",
                                         "username": "ringmaster", "password": "x"}]
    arrivals: list[float] = []
    seen: set[str] = set()
    try:
        d.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(arrivals) < 4:
            try:
                data, addr = registrar.recvfrom(4096)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            if not text.startswith("REGISTER"):
                continue
            branch = re.search(r"branch=([^;\s]+)", text)
            key = branch.group(1) if branch else text
            if key not in seen:  # a retransmission (sent while the test was still starting the daemon) is not a retry
                seen.add(key)
                arrivals.append(time.monotonic())
            head = [ln for ln in text.split("\r\n") if ln.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
            registrar.sendto(("SIP/2.0 503 Service Unavailable\r\n" + "\r\n".join(head) +
                              "\r\nContent-Length: 0\r\n\r\n").encode(), addr)
    finally:
        registrar.close()
    failures = d.wait_event("registration.failed", count=3, timeout=5)  # the 3rd 503's is logged a moment later
    assert [f["retry_in"] for f in failures[:3]] == [2.0, 4.0, 8.0]
    assert all(f["registrar"] == f"sip:127.0.0.1:{port}" and f["code"] == 503 for f in failures)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) == 3 and 1.8 <= gaps[0] <= 2.8 and 3.8 <= gaps[1] <= 4.8 and 7.8 <= gaps[2] <= 8.8, gaps
