"""Benchmark of the ACD: routing latency and concurrent bridged + recorded calls.

200 mobile agents in 20 queues (10 each), all idle; callers from SIPp (uac_hold) dial a
number whose flow enters a queue. The mobile trunk (bench/trunk.py) answers every agent leg
at once and notes when its INVITE arrived; routing latency = that arrival - the call's
ENTERQUEUE time in queue_log (both wall clock on this machine). Every call is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.engine import figure, percentile, wait_live
from bench.trunk import Discard, Trunk
from tests.helpers.audio import write_tone
from tests.helpers.daemon import Daemon, Ports, base_config
from tests.helpers.rtp import RtpSink
from tests.helpers.sipp import _counts, sipp_args

TRUNK_PORT, TRUNK_RTP = 34000, 34002


def start_trunk() -> tuple[Trunk, threading.Thread, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    trunk = Trunk("127.0.0.1", TRUNK_PORT, TRUNK_RTP)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(loop.create_datagram_endpoint(lambda: trunk, local_addr=("127.0.0.1", TRUNK_PORT)))
        loop.run_until_complete(loop.create_datagram_endpoint(Discard, local_addr=("127.0.0.1", TRUNK_RTP)))
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.3)
    return trunk, t, loop


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--hold", type=float, default=4.0, help="seconds each caller stays with the agent")
    ap.add_argument("--concurrent", type=int, default=110)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ringmaster-bench-acd-"))
    ports = Ports(35000)
    workers = max(args.concurrent, int(args.rate * (args.hold + 2))) // 2 + 5
    cfg = base_config(tmp, ports, workers=workers)
    write_tone(tmp / "prompts" / "hold.wav", 440, 2.0)
    cfg["workers"]["sip_port_base"] = 36000
    cfg["workers"]["rtp_ports"] = f"40000-{40000 + 16 * workers - 1}"
    cfg["sip"]["mobile_trunk"] = f"127.0.0.1:{TRUNK_PORT}"
    cfg["logging"] = {"level": "info", "format": "json"}  # ring failures are info: keep them for the report
    cfg["agents"] = {f"ag{i:03d}": {"mobile": f"+45{i:08d}"} for i in range(200)}
    cfg["queues"] = {f"q{i:02d}": {"strategy": ["longest-idle", "round-robin", "linear", "fewest-calls"][i % 4],
                                   "members": [f"ag{i * 10 + j:03d}" for j in range(10)], "moh": "hold",
                                   "record": {"template": "{queue}/{call_id}.wav"}}
                     for i in range(20)}
    cfg["flows"] = {f"f{i:02d}": [{"queue": f"q{i:02d}"}, "hangup"] for i in range(20)}
    # the called number is 7<SIPp call number>; queue = call number mod 20, by its last two digits
    cfg["entry_points"] = [{"pattern": (rf"7(\d*[02468])?{i % 10}" if i < 10 else rf"7\d*[13579]{i % 10}"),
                            "flow": f"f{i:02d}"} for i in range(20)]
    trunk, _, tloop = start_trunk()
    d = Daemon(tmp, ports, cfg)
    t0 = time.perf_counter()
    d.start(timeout=180)
    figure("workers", workers)
    figure("pool_start_seconds", round(time.perf_counter() - t0, 1), "s")
    sink = RtpSink(ports.sink())
    try:
        # --- routing latency at the given rate, spread over the 20 queues
        work = tmp / "rate"
        work.mkdir()
        calls = int(args.rate * args.seconds)
        scen = (Path(__file__).resolve().parent.parent / "tests" / "sipp" / "uac_hold.xml").read_text()
        scen = scen.replace("sip:[service]@", "sip:7[call_number]@")
        scen_path = work / "uac_queue.xml"
        scen_path.write_text(scen)
        out = subprocess.run(sipp_args(scen_path, d.edge, ports.caller(0), calls=calls, rate=args.rate,
                                       limit=workers * 2, hold_ms=int(args.hold * 1000), rtp_sink=sink.port,
                                       timeout=args.seconds + 60),
                             cwd=work, capture_output=True, text=True, timeout=args.seconds + 120)
        ok, failed = _counts(out.stdout + out.stderr)
        rows = d.wait_calls_ended(ok, timeout=60) if ok else []
        con = sqlite3.connect(d.db_path)
        entered = dict(con.execute("SELECT call_id, at FROM queue_log WHERE event='ENTERQUEUE'").fetchall())
        recorded = con.execute("SELECT COUNT(*) FROM calls WHERE recording IS NOT NULL AND agent IS NOT NULL").fetchone()[0]
        con.close()
        lat = [1000 * (trunk.invites[c] - at) for c, at in entered.items() if c in trunk.invites]
        figure("rate", args.rate, "calls/s")
        figure("calls_ok", ok, "calls")
        figure("calls_failed", failed + (calls - ok - failed), "calls")
        figure("calls_connected_to_agents", sum(1 for r in rows if r["agent"]), "calls")
        figure("calls_recorded", recorded, "calls")
        if lat:
            figure("routing_latency_samples", len(lat), "calls")
            figure("routing_latency_p50", round(percentile(lat, 50), 1), "ms")
            figure("routing_latency_p99", round(percentile(lat, 99), 1), "ms")
            figure("routing_latency_max", round(max(lat), 1), "ms")

        # --- concurrent bridged and recorded calls
        work = tmp / "concurrent"
        work.mkdir()
        scen_path2 = work / "uac_queue.xml"
        scen_path2.write_text(scen)
        ramp = args.concurrent / 25.0
        proc = subprocess.Popen(sipp_args(scen_path2, d.edge, ports.caller(1), calls=args.concurrent, rate=25,
                                          limit=args.concurrent, hold_ms=int((ramp + 6) * 1000), rtp_sink=sink.port,
                                          timeout=int(ramp + 60)),
                                cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = wait_live(d, args.concurrent, ramp + 10)
        st = d.status() or {}
        on_call = sum(1 for s in st.get("agents", {}).values() if s == "on-call")
        out2, _ = proc.communicate(timeout=int(ramp + 90))
        ok2, failed2 = _counts(out2)
        figure("concurrent_offered", args.concurrent, "calls")
        figure("concurrent_peak_live", peak, "calls")
        figure("concurrent_agents_on_call_at_peak", on_call, "agents")
        figure("concurrent_ok", ok2, "calls")
        figure("concurrent_failed", failed2, "calls")
    finally:
        sink.close()
        code = d.stop(timeout=120)
        tloop.call_soon_threadsafe(tloop.stop)
        figure("daemon_exit_code", code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
