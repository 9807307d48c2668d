"""bench/run idle: what the whole server costs with no call (issue 10: "an idle pool costs
nothing"; target below 2 % of one core and 150 MB PSS).

Starts the real daemon (controller, Kamailio edge, pjsua2 workers, embedded mosquitto) on
loopback, lets it settle, then samples CPU of every server process from /proc over a window
(100 % = one core) and PSS from smaps_rollup. Figures, one per line: idle_cpu, idle_pss, the
split by process kind (the zygote apart from the workers it forked) and idle_pss_per_worker
(the workers' and the zygote's PSS over the worker count: what one more worker costs).
--spawn exec measures the pool without the zygote (workers.spawn: exec).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.load import cpu_percent, pss_mb, server_pids, ticks
from tests.helpers.daemon import Daemon, allocate_ports, base_config


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/run idle", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="warm pjsua2 workers (default 2, the demo's)")
    ap.add_argument("--settle", type=float, default=15.0, help="seconds after start before sampling")
    ap.add_argument("--seconds", type=float, default=60.0, help="sampling window")
    ap.add_argument("--spawn", choices=("zygote", "exec"), default="zygote", help="workers.spawn (default zygote)")
    ap.add_argument("--rtp-ports", default="", help="the workers' RTP range (default: the test block's,"
                    " 17200-17999 above 12 workers)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rm-idle-") as tmp:
        folder = Path(tmp)
        ports = allocate_ports()
        cfg = base_config(folder, ports, workers=args.workers)
        cfg["workers"]["spawn"] = args.spawn
        rtp = args.rtp_ports or ("17200-17999" if args.workers > 12 else "")
        if rtp:
            cfg["workers"]["rtp_ports"] = rtp
        cfg["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{ports.base + 8}",
                       "clients": [{"username": "crm", "password": "crm-password-1"}]}
        d = Daemon(folder, ports, cfg)
        d.start(timeout=60 + args.workers)
        try:
            time.sleep(args.settle)
            assert d.proc is not None
            pids = server_pids(d.proc.pid)
            before, t0 = ticks(pids), time.monotonic()
            time.sleep(args.seconds)
            after, t1 = ticks(pids), time.monotonic()
            kinds: dict[str, list[int]] = defaultdict(list)
            for pid in pids:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                kind = ("zygote" if comm == "rm-zygote" else "worker" if "ringmaster.worker" in cmd else "controller" if "ringmaster.cli" in cmd
                        else "kamailio" if "kamailio" in cmd else "mosquitto" if "mosquitto" in cmd else "other")
                kinds[kind].append(pid)
            print(f"idle_cpu: {cpu_percent(before, after, t1 - t0):.2f} % of one core ({args.workers} workers)")
            print(f"idle_pss: {pss_mb(pids):.0f} MB ({args.spawn})")
            pool = pss_mb(kinds["worker"] + kinds["zygote"])
            print(f"idle_pss_per_worker: {pool / max(1, args.workers):.1f} MB (workers and zygote over {args.workers})")
            for kind, group in sorted(kinds.items()):
                sub = {p: t for p, t in after.items() if p in group}
                print(f"idle_cpu_{kind}: {cpu_percent(before, sub, t1 - t0):.2f} % of one core ({len(group)} processes)")
                print(f"idle_pss_{kind}: {pss_mb(group):.0f} MB")
        finally:
            d.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
