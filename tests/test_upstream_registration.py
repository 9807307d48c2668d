"""Registration to the company PBX (a real Kamailio registrar with digest auth): succeeds,
refreshes before expiry, routes the PBX's calls to the edge; a wrong password is one clear
error naming the registrar, not a retry storm."""

from __future__ import annotations

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
