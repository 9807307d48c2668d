"""Benchmark of the IVR: DTMF-to-next-prompt latency with many callers in menus, and
`ringmaster check` on a generated 1000-node plan.

Each caller (bench/rtpcaller.py) waits in a menu whose greeting is a 500 Hz tone, presses 1
(RFC 4733), and the time from its first DTMF packet to the first RTP packet of the 900 Hz
"sales" prompt is one sample; the flow then returns to the menu and the caller presses again.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from bench.engine import figure, percentile
from bench.rtpcaller import CallLeg, RtpEndpoint, SipCaller, send_digit
from tests.helpers.audio import write_tone
from tests.helpers.daemon import Daemon, Ports, base_config

TONES = {"menu": 500.0, "sales": 900.0}


async def caller(sip: SipCaller, index: int, rtp_port: int, presses: int, samples: list[float], errors: list[str]) -> None:
    loop = asyncio.get_running_loop()
    rtp = RtpEndpoint(TONES)
    transport, _ = await loop.create_datagram_endpoint(lambda: rtp, local_addr=("127.0.0.1", rtp_port))
    leg = CallLeg(call_id=f"ivr-{index}-{uuid.uuid4().hex[:8]}", from_tag=uuid.uuid4().hex[:8], rtp=rtp, rtp_port=rtp_port)
    try:
        await asyncio.sleep(index * 0.04)  # spread the arrivals: 25 calls/s
        sip.invite(leg, "100")
        ip, port, pt = await asyncio.wait_for(leg.answered, 10)
        remote = (ip, port)
        for _ in range(presses):
            # wait until the menu greeting has been playing for ~200 ms, at a random point
            deadline = loop.time() + 10
            while loop.time() < deadline:
                recent = [t for _, t in rtp.heard[-10:]]
                if len(recent) == 10 and all(t == "menu" for t in recent):
                    break
                rtp.changed.clear()
                await asyncio.wait_for(rtp.changed.wait(), 5)
            await asyncio.sleep(random.uniform(0, 0.3))
            mark = len(rtp.heard)
            t0 = send_digit(leg, remote, pt, "1")
            found = None
            deadline = loop.time() + 5
            while found is None and loop.time() < deadline:
                for at, tone in rtp.heard[mark:]:
                    if tone == "sales":
                        found = at
                        break
                if found is None:
                    rtp.changed.clear()
                    try:
                        await asyncio.wait_for(rtp.changed.wait(), 1)
                    except TimeoutError:
                        pass
            if found is None:
                errors.append(f"call {index}: no sales prompt after pressing 1")
                continue
            samples.append(1000 * (found - t0))
        sip.bye(leg)
        await asyncio.wait_for(leg.ended.wait(), 5)
    except Exception as exc:
        errors.append(f"call {index}: {type(exc).__name__}: {exc}")
    finally:
        transport.close()


def thousand_node_plan(folder: Path, prompts: Path) -> Path:
    flows: dict[str, list] = {}
    for f in range(100):  # 100 flows x 10 steps
        flows[f"f{f}"] = [
            {"id": "menu", "menu": {"greeting": "menu", "options": {1: "a", 2: "b", 3: {"flow": f"f{(f + 1) % 100}"}},
                                    "on_max_failures": "bye", "on_max_timeouts": "bye"}},
            {"id": "a", "play": "sales"}, {"set": {"x": "1"}},
            {"branch": {"on": "caller", "cases": [{"prefix": "45", "then": "b"}], "default": "menu"}},
            {"id": "b", "collect": {"var": "acct", "prompt": "menu", "min": 2, "max": 8}},
            {"play": "sales"}, {"goto": "menu"}, {"id": "bye", "play": "sales"}, {"set": {"y": "2"}}, "hangup"]
    cfg = {"paths": {"prompts": str(prompts), "runtime": "run"}, "storage": {"path": "x.db"}, "flows": flows,
           "entry_points": [{"number": str(100 + i), "flow": f"f{i}"} for i in range(100)]}
    path = folder / "big.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--presses", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ringmaster-bench-ivr-"))

    # --- check on a generated 1000-node plan
    prompts = tmp / "prompts"
    prompts.mkdir()
    write_tone(prompts / "menu.wav", TONES["menu"], 1.5)
    write_tone(prompts / "sales.wav", TONES["sales"], 0.4)
    for default in ("invalid", "timeout"):  # the menus' default prompts
        write_tone(prompts / f"{default}.wav", TONES["menu"], 0.3)
    big = thousand_node_plan(tmp, prompts)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "check", str(big)], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
    figure("check_1000_nodes_seconds", round(min(times), 2), "s")

    # --- DTMF to next prompt with callers in menus
    ports = Ports(32000)
    cfg = base_config(tmp, ports, workers=(args.callers + 1) // 2)
    cfg["workers"]["sip_port_base"] = 33000
    cfg["workers"]["rtp_ports"] = f"40000-{40000 + 32 * cfg['workers']['count'] - 1}"
    cfg["sip"]["trusted"] = [{"name": "bench", "address": f"127.0.0.1:{ports.caller(0)}"}]
    cfg["logging"] = {"level": "warning", "format": "json"}
    cfg["paths"]["prompts"] = str(prompts)
    cfg["flows"] = {"ivr": [{"id": "menu", "menu": {"greeting": "menu", "options": {1: "sales"}, "timeout": 10,
                                                     "max_timeouts": 20, "invalid_prompt": "menu",
                                                     "timeout_prompt": "menu"}},
                            {"id": "sales", "play": "sales"}, {"goto": "menu"}]}
    cfg["entry_points"] = [{"number": "100", "flow": "ivr"}]
    d = Daemon(tmp, ports, cfg)
    d.start(timeout=60)
    samples: list[float] = []
    errors: list[str] = []

    async def run_all() -> None:
        loop = asyncio.get_running_loop()
        transport, sip = await loop.create_datagram_endpoint(lambda: SipCaller(("127.0.0.1", ports.edge), ports.caller(0)),
                                                             local_addr=("127.0.0.1", ports.caller(0)))
        try:
            await asyncio.gather(*(caller(sip, i, 36000 + 2 * i, args.presses, samples, errors)
                                   for i in range(args.callers)))
        finally:
            transport.close()

    try:
        asyncio.run(run_all())
    finally:
        code = d.stop(timeout=60)
    figure("callers_in_menus", args.callers, "calls")
    figure("dtmf_to_next_prompt_samples", len(samples), "presses")
    figure("dtmf_to_next_prompt_errors", len(errors), "presses")
    if samples:
        figure("dtmf_to_next_prompt_p50", round(percentile(samples, 50), 1), "ms")
        figure("dtmf_to_next_prompt_p99", round(percentile(samples, 99), 1), "ms")
        figure("dtmf_to_next_prompt_mean", round(statistics.mean(samples), 1), "ms")
    figure("daemon_exit_code", code)
    for e in errors[:5]:
        print(f"# {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
