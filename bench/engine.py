"""Benchmark of the call engine: real SIPp callers -> Kamailio edge -> pjsua2 workers.

Figures: idle CPU and RSS per worker; sustained calls/s with zero failures and INVITE->200
latency at that rate; the largest number of concurrent calls held with zero failures.
Every call is answered and hears a 1.5 s tone prompt, then gets BYE (sustained phase) or
stays on the line (concurrency phase). Loopback only; bounded counts and durations.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sipprobe import probe
from tests.helpers.daemon import Daemon, Ports, base_config
from tests.helpers.rtp import RtpSink
from tests.helpers.sipp import _counts, sipp_args

CLK = os.sysconf("SC_CLK_TCK")


def figure(name: str, value: float | int | str, unit: str = "") -> None:
    print(f"{name}: {value} {unit}".rstrip(), flush=True)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def wait_live(d: Daemon, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    live = 0
    while time.monotonic() < deadline:
        st = d.status()
        live = st["calls"]["live"] if st else 0
        if live >= count:
            return live
        time.sleep(0.2)
    return live


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=60)
    ap.add_argument("--rate", type=float, default=50.0, help="calls per second, sustained phase")
    ap.add_argument("--seconds", type=int, default=60, help="length of the sustained phase")
    ap.add_argument("--concurrent", type=int, default=0, help="calls to hold at once (default 2 x workers)")
    args = ap.parse_args()
    concurrent = args.concurrent or 2 * args.workers

    tmp = Path(tempfile.mkdtemp(prefix="ringmaster-bench-"))
    ports = Ports(30000)
    cfg = base_config(tmp, ports, workers=args.workers)
    cfg["workers"]["rtp_ports"] = f"40000-{40000 + 32 * args.workers - 1}"
    cfg["workers"]["sip_port_base"] = 31000  # the test port block has room for 20 workers only
    cfg["logging"] = {"level": "warning", "format": "json"}
    d = Daemon(tmp, ports, cfg)
    t0 = time.monotonic()
    d.start(timeout=120)
    figure("pool_start_seconds", round(time.monotonic() - t0, 1), "s")
    st = d.status()
    pids = [w["pid"] for w in st["workers"]]
    sink = RtpSink(ports.sink())
    try:
        # --- idle cost per worker
        time.sleep(3)
        before = {p: cpu_ticks(p) for p in pids}
        window = 10.0
        time.sleep(window)
        idle = [100.0 * (cpu_ticks(p) - before[p]) / CLK / window for p in pids]
        figure("idle_cpu_per_worker_mean", round(statistics.mean(idle), 2), "%")
        figure("idle_cpu_per_worker_max", round(max(idle), 2), "%")
        figure("rss_per_worker_mean", round(statistics.mean(rss_mb(p) for p in pids), 1), "MB")

        # --- sustained rate with a prompt per call: SIPp makes the load, a timing probe
        #     (PROBE_RATE of the calls/s) measures INVITE->200 precisely
        probe_rate = min(5.0, args.rate / 2)
        sipp_rate = args.rate - probe_rate
        calls = int(sipp_rate * args.seconds)
        work = tmp / "sustained"
        work.mkdir()
        sipp = subprocess.Popen(sipp_args("uac_prompt.xml", d.edge, ports.caller(0), service="100", calls=calls,
                                          rate=sipp_rate, limit=2 * args.workers, rtp_sink=sink.port,
                                          timeout=args.seconds + 60),
                                cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        probes = asyncio.run(probe(("127.0.0.1", ports.edge), ports.caller(2), ports.sink(1), "100",
                                   probe_rate, args.seconds))
        out, _ = sipp.communicate(timeout=args.seconds + 120)
        ok, failed = _counts(out)
        rtts = [1000 * (c.answered_at - c.sent_at) for c in probes if c.answered_at is not None and c.final == 200]
        probe_failed = len(probes) - len(rtts)
        rows = d.wait_calls_ended(ok + len(rtts), timeout=30) if ok else []
        completed = sum(1 for r in rows if r["disposition"] == "completed")
        figure("sustained_rate", args.rate, "calls/s")
        figure("sustained_duration", args.seconds, "s")
        figure("sustained_calls_ok", ok + len(rtts), "calls")
        figure("sustained_calls_failed", failed + (calls - ok - failed) + probe_failed, "calls")
        figure("sustained_calls_stored_completed", completed, "calls")
        if rtts:
            figure("invite_to_200_samples", len(rtts), "calls")
            figure("invite_to_200_p50", round(percentile(rtts, 50), 1), "ms")
            figure("invite_to_200_p99", round(percentile(rtts, 99), 1), "ms")
            figure("invite_to_200_max", round(max(rtts), 1), "ms")
        figure("rtp_packets_received", sink.packets, "packets")

        # --- concurrent calls held
        work = tmp / "concurrent"
        work.mkdir()
        ramp = concurrent / 50.0
        hold_ms = int((ramp + 8) * 1000)
        proc = subprocess.Popen(sipp_args("uac_hold.xml", d.edge, ports.caller(1), service="200", calls=concurrent,
                                          rate=50, limit=concurrent, hold_ms=hold_ms, rtp_sink=sink.port,
                                          timeout=int(ramp + 60)),
                                cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = wait_live(d, concurrent, ramp + 10)
        cpu_before = {p: cpu_ticks(p) for p in pids}
        time.sleep(3)
        busy = [100.0 * (cpu_ticks(p) - cpu_before[p]) / CLK / 3 for p in pids]
        out, _ = proc.communicate(timeout=int(ramp + 90))
        ok, failed = _counts(out)
        figure("concurrent_offered", concurrent, "calls")
        figure("concurrent_peak_live", peak, "calls")
        figure("concurrent_held_ok", ok, "calls")
        figure("concurrent_failed", failed, "calls")
        figure("cpu_all_workers_with_concurrent_calls", round(sum(busy), 1), "% of one core")
    finally:
        sink.close()
        code = d.stop(timeout=60)
        figure("daemon_exit_code", code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
