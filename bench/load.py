"""Benchmark of a contact center's load on one box (issue 10): IVR -> queue -> agent.

Callers (SIPp, bench/sipp/uac_menu_caller.xml) dial 100, hear a 2.8 s menu prompt, talk
G.711 A-law speech from SIPp's pcap, press 1 (RFC 4733 from SIPp's pcap) 1.5 s after the 200,
wait in a round-robin queue of 250 agents, are bridged to the agent, and hang up 10 s after the
digit. The agents are 4 SIPp UAS processes (tests/sipp/uas_agent.xml) that REGISTER every
agent at the edge with digest auth from their own port, answer after a uniform 500-1000 ms,
echo RTP, hang up only on the server's BYE and answer CANCEL with 487; `--record-route copy`
makes them copy the edge's Record-Route into their 200 OK, `omit` (the default) does not,
as SIPp's own UAS and some desk phones and mobile gateways do not.

Figures (one `figure: value unit` line each):
- idle before the run: CPU of the server (controller, workers, Kamailio, mosquitto: every
  process under the daemon, summed from /proc; 100 % = one core) over --idle-seconds, and
  its PSS (sum of /proc/PID/smaps_rollup);
- the run: calls ok / failed (SIPp's counts, and the store's calls that reached an agent),
  server CPU over the run and per call/s, PSS at the end of the arrivals, INVITE->200 p50/p95
  (bench/sipprobe.py, a monotonic clock, on its own calls to 101, a 0.5 s prompt then hang-up,
  at a tenth of the rate), digit -> agent INVITE p50/p95 (the controller's `call.digit` log
  time to the agent SIPp's receipt of the INVITE carrying X-Ringmaster-Call, both wall clock on
  this machine), the most calls bridged to agents at once (from the log's acd.connected and
  call.ended), and the load generator's CPU (SIPp and this process) apart, as its share of the
  machine's cores: on a 2-core box it competes with the server.

`--transfer-share F` (issue 11 item 5): that share of the connected calls is sent back to the
queue by its agent, a blind transfer by the API (`POST /api/agents/{agent}/transfer`, kind
queue, as the desk's Transfer button does) `--transfer-after` seconds after the bridge; the
caller hears the queue's music again and talks to the next agent until its own hang-up. Figures
add the transfers asked, accepted (HTTP 200) and refused, and the BLINDTRANSFER events stored.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import os
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from bench.engine import CLK, figure, percentile
from bench.sipprobe import probe
from tests.helpers.audio import write_tone
from tests.helpers.daemon import Daemon, Ports, base_config
from tests.helpers.sipp import _counts, agent_scenario, sipp_args

HERE = Path(__file__).resolve().parent
PCAPS = Path("/usr/share/sip-tester")
# Every port below the kernel's ephemeral range (32768-60999 on Debian): 68 workers' and the
# controller's wake-up sockets take ephemeral ports, and one took a worker's SIP port once when
# the bench lived at 45000-47999 (the pool then failed to start).
PORTS = Ports(12000)  # edge 12000, SIPp callers 12030-12039, probe 12032 (bench range 12000-12799)
WORKER_SIP_BASE = 12200  # up to 400 workers
AGENT_PORTS = (12080, 12081, 12082, 12083)
AGENT_MEDIA = (12710, 12714, 12718, 12722)
CALLER_MEDIA = 12700
AGENTS = 250
API_TOKEN = "bench-supervisor-token-0123456789"
DIGIT_S = 1.5
PROMPT_S = 2.8


def server_pids(root: int) -> list[int]:
    """The daemon and every process under it (workers, Kamailio and its children, mosquitto)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def ticks(pids: list[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError):
            pass
    return out


def cpu_percent(before: dict[int, int], after: dict[int, int], seconds: float) -> float:
    """CPU of the processes over a window in % of one core (a process started in the window
    counts from 0; one that ended in it is lost, which undercounts only)."""
    used = sum(t - before.get(pid, 0) for pid, t in after.items())
    return 100.0 * used / CLK / seconds


def kind_of(pid: int, root: int) -> str:
    """Which part of the server a process is: controller, worker, edge (Kamailio) or other."""
    if pid == root:
        return "controller"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "ringmaster.worker" in cmd:
        return "worker"
    if "kamailio" in cmd:
        return "edge"
    return "other"


def cpu_by_kind(before: dict[int, int], after: dict[int, int], seconds: float, root: int) -> dict[str, float]:
    """cpu_percent split by kind_of (the kinds of the processes alive at the end)."""
    out: dict[str, float] = defaultdict(float)
    for pid, t in after.items():
        out[kind_of(pid, root)] += 100.0 * (t - before.get(pid, 0)) / CLK / seconds
    return out


def pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total / 1024


def pss_by_kind(pids: list[int], root: int) -> dict[str, float]:
    """pss_mb split by kind_of, in MB."""
    out: dict[str, float] = defaultdict(float)
    for pid in pids:
        out[kind_of(pid, root)] += pss_mb([pid])
    return out


def _iso(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def log_events(d: Daemon, *names: str) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {n: [] for n in names}
    for rec in (d.events(n) for n in names):
        for r in rec:
            out[str(r["event"])].append(r)
    return out


def agent_invites(trace: Path) -> dict[str, float]:
    """Ringmaster call id -> when the agent SIPp received its first INVITE (its -trace_msg log,
    wall clock with microseconds)."""
    out: dict[str, float] = {}
    if not trace.exists():
        return out
    text = trace.read_text(errors="replace")
    for block in re.split(r"^-{20,} ", text, flags=re.M):
        head, _, rest = block.partition("\n")
        if "message received" not in rest[:80] or "\nINVITE " not in rest[:200]:
            continue
        m = re.search(r"^X-Ringmaster-Call:\s*(\S+)", rest, re.M | re.I)
        if m is None or m.group(1) in out:
            continue
        try:
            out[m.group(1)] = datetime.strptime(head.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        except ValueError:
            continue
    return out


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    best = cur = 0
    for _, step in edges:
        cur += step
        best = max(best, cur)
    return best


def bench_config(tmp: Path, workers: int, rtp_ports: str, record: bool, direct: bool = True,
                 api: bool = False) -> dict[str, object]:
    cfg = base_config(tmp, PORTS, workers=workers)
    cfg["sip"]["direct_media"] = direct  # type: ignore[index]
    prompts = tmp / "prompts"
    write_tone(prompts / "menu.wav", 500, PROMPT_S)
    write_tone(prompts / "hold.wav", 440, 3.0)
    write_tone(prompts / "invalid.wav", 700, 0.5)
    write_tone(prompts / "timeout.wav", 800, 0.5)
    cfg["workers"].update({"sip_port_base": WORKER_SIP_BASE, "rtp_ports": rtp_ports})  # type: ignore[attr-defined]
    # the agents register from 127.0.0.1 (untrusted): 250 REGISTERs + challenges must not look
    # like a flood to the edge
    cfg["sip"]["security"] = {"flood_requests": 100000, "flood_window": 2}  # type: ignore[index]
    cfg["logging"] = {"level": "info", "format": "json"}  # call.digit and acd.connected are info
    if api:  # only when the run transfers: the figures of runs without stay comparable
        cfg["http"] = {"listen": f"127.0.0.1:{PORTS.base + 6}",
                       "tokens": [{"name": "bench", "token": API_TOKEN, "role": "supervisor"}]}
    cfg["agents"] = {f"a{i:03d}": {"softphone": {"username": f"a{i:03d}", "password": f"pw-{i:03d}-bench"}}
                     for i in range(AGENTS)}
    queue: dict[str, object] = {"strategy": "round-robin", "members": list(cfg["agents"]), "moh": "hold"}  # type: ignore[arg-type]
    if record:
        queue["record"] = {"template": "{queue}/{call_id}.wav"}
    cfg["queues"] = {"agents": queue}
    cfg["flows"] = {"ivr": [{"id": "menu", "menu": {"greeting": "menu", "options": {"1": "wait"}, "timeout": 5}},
                            {"id": "wait", "queue": "agents"}, "hangup"],
                    # the probe's calls measure INVITE->200: a 0.5 s prompt, then hung up, so they
                    # take few of the call places (RTP ports) the load itself needs
                    "probe": [{"play": "invalid"}, "hangup"]}
    cfg["entry_points"] = [{"number": "100", "flow": "ivr"}, {"number": "101", "flow": "probe"}]
    return cfg


class Transferrer(threading.Thread):
    """Sends a share of the connected calls back to the queue by their agent's blind transfer:
    follows the daemon's JSON log for `acd.connected` (call_id, agent), picks every call whose
    running count crosses a multiple of 1/share (its first connection only), and after `after`
    seconds POSTs /api/agents/{agent}/transfer {"kind": "queue", "target": "agents"}.
    Counts: asked, ok (HTTP 200), refused (any other answer, with the bodies kept)."""

    def __init__(self, d: Daemon, share: float, after: float) -> None:
        super().__init__(daemon=True)
        self.d, self.share, self.after = d, share, after
        self.stop = threading.Event()
        self.asked = self.ok = 0
        self.refusals: list[str] = []
        self._seen: set[str] = set()
        self._due: list[tuple[float, str, str]] = []

    def _post(self, agent: str) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{PORTS.base + 6}/api/agents/{agent}/transfer", method="POST",
                                     data=json.dumps({"kind": "queue", "target": "agents"}).encode())
        req.add_header("Authorization", f"Bearer {API_TOKEN}")
        req.add_header("Content-Type", "application/json")
        self.asked += 1
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
                self.ok += 1
        except urllib.error.HTTPError as e:
            self.refusals.append(f"{e.code} {e.read()[:200]!r}")
        except OSError as e:
            self.refusals.append(str(e))

    def run(self) -> None:
        picked = 0.0
        with open(self.d.log_path, "rb") as log:
            while not self.stop.is_set():
                line = log.readline()
                if line.endswith(b"\n"):
                    if b'"acd.connected"' in line:
                        rec = json.loads(line)
                        call = str(rec.get("call_id"))
                        if call not in self._seen:
                            self._seen.add(call)
                            picked += self.share
                            if picked >= 1.0:
                                picked -= 1.0
                                heapq.heappush(self._due, (time.monotonic() + self.after, call, str(rec["agent"])))
                    continue
                if line:
                    log.seek(-len(line), os.SEEK_CUR)  # a line still being written: read it whole later
                while self._due and self._due[0][0] <= time.monotonic():
                    self._post(heapq.heappop(self._due)[2])
                time.sleep(0.05)


def register_agents(d: Daemon, work: Path) -> None:
    """REGISTER every agent with digest auth from the port its UAS will answer on."""
    for k, port in enumerate(AGENT_PORTS):
        users = [i for i in range(AGENTS) if i % len(AGENT_PORTS) == k]
        csv = work / f"agents{k}.csv"
        csv.write_text("SEQUENTIAL\n" + "".join(f"a{i:03d};[authentication username=a{i:03d} password=pw-{i:03d}-bench]\n"
                                                 for i in users))
        out = subprocess.run(["sipp", d.edge, "-sf", str(HERE / "sipp" / "register_agent.xml"), "-inf", str(csv),
                              "-i", "127.0.0.1", "-p", str(port), "-m", str(len(users)), "-r", "100", "-l", "20",
                              "-key", "expires", "3600", "-timeout", "30s", "-timeout_error", "-nostdin"],
                             cwd=work, capture_output=True, text=True, timeout=60)
        ok, failed = _counts(out.stdout + out.stderr)
        if out.returncode != 0 or ok != len(users):
            raise RuntimeError(f"agent registration on port {port}: {ok} ok, {failed} failed\n{out.stdout[-2000:]}")


def wait_agents(d: Daemon, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        st = d.status() or {}
        n = sum(1 for s in st.get("agents", {}).values() if s == "available")
        if n >= count:
            return n
        time.sleep(0.5)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=5.0, help="new callers per second")
    ap.add_argument("--seconds", type=int, default=60, help="how long callers arrive")
    ap.add_argument("--talk", type=float, default=10.0, help="seconds from the digit to the caller's BYE")
    ap.add_argument("--record", action="store_true", help="record every call the queue connects")
    ap.add_argument("--record-route", choices=("omit", "copy"), default="omit",
                    help="agents copy the edge's Record-Route into their 200 OK, or omit it")
    ap.add_argument("--workers", type=int, default=0,
                    help="pool size (default: enough for the calls up at once, 2 inbound per worker, + 4)")
    ap.add_argument("--rtp-ports", default="17200-17999", help="the whole server's RTP port range")
    ap.add_argument("--limit", type=int, default=0, help="most callers up at once (SIPp -l; default: all)")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--media", choices=("direct", "anchored"), default="direct",
                    help="direct: sip.direct_media on (bridged RTP flows caller<->agent); anchored: through the workers")
    ap.add_argument("--transfer-share", type=float, default=0.0,
                    help="share of connected calls their agent sends back to the queue (blind transfer by the API)")
    ap.add_argument("--transfer-after", type=float, default=3.0, help="seconds from the bridge to that transfer")
    args = ap.parse_args()
    call_s = DIGIT_S + 0.3 + args.talk + 1.0  # answer .. BYE, with setup
    workers = args.workers or math.ceil(args.rate * call_s / 2) + 4
    calls = int(args.rate * args.seconds)
    probe_rate = max(0.2, args.rate / 10)

    tmp = Path(tempfile.mkdtemp(prefix="ringmaster-bench-load-"))
    d = Daemon(tmp, PORTS, bench_config(tmp, workers, args.rtp_ports, args.record, args.media == "direct",
                                         api=args.transfer_share > 0))
    figure("rate", args.rate, "calls/s")
    figure("seconds", args.seconds, "s")
    figure("talk_after_digit", args.talk, "s")
    figure("recording", "on" if args.record else "off")
    figure("media", args.media)
    figure("agents_record_route", args.record_route)
    figure("workers", workers)
    figure("rtp_ports", args.rtp_ports)
    figure("transfer_share", args.transfer_share)
    t0 = time.monotonic()
    d.start(timeout=300)
    figure("pool_start_seconds", round(time.monotonic() - t0, 1), "s")
    assert d.proc is not None
    agents: list[subprocess.Popen[bytes]] = []
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        work = tmp / "load"
        work.mkdir()
        register_agents(d, work)
        figure("agents_available", wait_agents(d, AGENTS, 60), "agents")
        scen = agent_scenario(work, copy_record_route=args.record_route == "copy")
        for port, media in zip(AGENT_PORTS, AGENT_MEDIA, strict=True):
            log = open(work / f"agents-{port}.log", "wb")
            agents.append(subprocess.Popen(
                ["sipp", "-sf", str(scen), "-i", "127.0.0.1", "-p", str(port), "-mp", str(media), "-rtp_echo",
                 "-nostdin", "-trace_msg", "-message_file", str(work / f"agents-{port}-messages.log")],
                cwd=work, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))

        # --- idle server before the run
        time.sleep(3)
        pids = server_pids(d.proc.pid)
        before = ticks(pids)
        time.sleep(args.idle_seconds)
        figure("idle_server_processes", len(pids))
        figure("idle_cpu", round(cpu_percent(before, ticks(server_pids(d.proc.pid)), args.idle_seconds), 2),
               "% of one core")
        figure("idle_pss", round(pss_mb(server_pids(d.proc.pid)), 1), "MB")

        # --- the run
        text = (HERE / "sipp" / "uac_menu_caller.xml").read_text()
        after_reinvite_ms = max(1000, int(args.talk * 1000) - 1300)
        after_second_ms = (max(1000, after_reinvite_ms - int(args.transfer_after * 1000) - 750)
                           if args.transfer_share > 0 else after_reinvite_ms)
        for key, value in {"@@DIGIT_MS@@": str(int(DIGIT_S * 1000)), "@@TALK_REST_MS@@": str(int(args.talk * 1000) - 300),
                           "@@AFTER_REINVITE_MS@@": str(after_reinvite_ms),
                           # the next agent's bridge comes ~0.75 s (her answer) after the transfer
                           "@@AFTER_SECOND_REINVITE_MS@@": str(after_second_ms),
                           "@@SPEECH@@": str(PCAPS / "g711a.pcap"), "@@DTMF@@": str(PCAPS / "dtmf_2833_1.pcap")}.items():
            text = text.replace(key, value)
        caller_scen = work / "uac_menu_caller.xml"
        caller_scen.write_text(text)
        out_path = work / "callers.out"
        transferrer = Transferrer(d, args.transfer_share, args.transfer_after)
        if args.transfer_share > 0:
            transferrer.start()
        gen0 = ticks([a.pid for a in agents])
        srv0 = ticks(server_pids(d.proc.pid))
        w0 = time.monotonic()
        with open(out_path, "w") as out_file:
            callers = subprocess.Popen(sipp_args(caller_scen, d.edge, PORTS.caller(0), service="100", calls=calls,
                                                 rate=args.rate, limit=args.limit or calls, caller="4570001000",
                                                 timeout=int(args.seconds + args.talk + 60),
                                                 extra=["-mp", str(CALLER_MEDIA), "-trace_err", "-error_file",
                                                        str(work / "callers-errors.log")]),
                                       cwd=work, stdout=out_file, stderr=subprocess.STDOUT)
            probes = asyncio.run(probe(("127.0.0.1", PORTS.edge), PORTS.caller(2), PORTS.sink(1), "101",
                                       probe_rate, args.seconds))
            pss_loaded = pss_mb(server_pids(d.proc.pid))
            pss_kinds = pss_by_kind(server_pids(d.proc.pid), d.proc.pid)
            _, status, usage = os.wait4(callers.pid, 0)
            callers.returncode = os.waitstatus_to_exitcode(status)
        window = time.monotonic() - w0
        transferrer.stop.set()
        srv1 = ticks(server_pids(d.proc.pid))
        server_cpu = cpu_percent(srv0, srv1, window)
        by_kind = cpu_by_kind(srv0, srv1, window, d.proc.pid)
        gen_cpu = cpu_percent(gen0, ticks([a.pid for a in agents]), window)
        gen_cpu += 100.0 * (usage.ru_utime + usage.ru_stime) / window
        own1 = resource.getrusage(resource.RUSAGE_SELF)
        gen_cpu += 100.0 * (own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime) / window

        ok, failed = _counts(out_path.read_text(errors="replace"))
        rows = d.wait_calls_ended(ok, timeout=60) if ok else []
        con = sqlite3.connect(d.db_path)
        reached = con.execute("SELECT COUNT(*) FROM calls WHERE agent IS NOT NULL AND called = '100'").fetchone()[0]
        served = con.execute("SELECT COUNT(*) FROM calls WHERE agent IS NOT NULL AND called = '100' "
                             "AND disposition = 'completed'").fetchone()[0]
        recorded = con.execute("SELECT COUNT(*) FROM calls WHERE recording IS NOT NULL").fetchone()[0]
        blind = con.execute("SELECT COUNT(*) FROM queue_log WHERE event = 'BLINDTRANSFER'").fetchone()[0]
        con.close()
        rtts = [1000 * (c.answered_at - c.sent_at) for c in probes if c.answered_at is not None and c.final == 200]
        # a call is ok when SIPp saw it through AND the store has it completed with an agent: a
        # caller left on hold music until it hangs up is a success for SIPp, not for the bench
        figure("calls_ok", min(ok, served), "calls")
        figure("calls_failed", calls - min(ok, served), "calls")
        figure("sipp_calls_ok", ok, "calls")
        figure("sipp_calls_failed", failed + (calls - ok - failed), "calls")
        figure("calls_reached_agent", reached, "calls")
        figure("calls_stored_completed", sum(1 for r in rows if r["disposition"] == "completed" and r["called"] == "100"),
               "calls")
        if args.record:
            figure("calls_recorded", recorded, "calls")
        if args.transfer_share > 0:
            figure("transfers_asked", transferrer.asked, "calls")
            figure("transfers_accepted", transferrer.ok, "calls")
            figure("transfers_refused", len(transferrer.refusals), "calls")
            figure("blindtransfer_events_stored", blind, "events")
            for reason in sorted(set(transferrer.refusals))[:5]:
                print(f"# transfer refused: {reason}")
        figure("probe_calls_ok", len(rtts), "calls")
        figure("probe_calls_failed", len(probes) - len(rtts), "calls")
        figure("run_window", round(window, 1), "s")
        figure("server_cpu", round(server_cpu, 1), "% of one core")
        figure("server_cpu_per_call_per_s", round(server_cpu / args.rate, 2), "% of one core")
        for kind in ("controller", "worker", "edge", "other"):
            figure(f"server_cpu_{kind}", round(by_kind.get(kind, 0.0), 1), "% of one core")
        figure("server_pss", round(pss_loaded, 1), "MB")
        for kind in ("controller", "worker", "edge", "other"):
            figure(f"server_pss_{kind}", round(pss_kinds.get(kind, 0.0), 1), "MB")
        figure("loadgen_cpu", round(gen_cpu, 1), "% of one core")
        figure("loadgen_share_of_cores", round(gen_cpu / (os.cpu_count() or 1), 1), f"% of {os.cpu_count()} cores")
        if rtts:
            figure("invite_to_200_samples", len(rtts), "calls")
            figure("invite_to_200_p50", round(percentile(rtts, 50), 1), "ms")
            figure("invite_to_200_p95", round(percentile(rtts, 95), 1), "ms")
        ev = log_events(d, "call.digit", "acd.connected", "call.ended", "call.flow_started")
        digits: dict[str, float] = {}
        for r in ev["call.digit"]:
            digits.setdefault(str(r["call_id"]), _iso(str(r["timestamp"])))
        # a menu caller whose digit never reached the controller (issue 10 item 6: acted on, or
        # the reason logged): named, so that its worker's log can be read
        undialled = [r for r in ev["call.flow_started"] if r.get("called") == "100" and str(r["call_id"]) not in digits]
        figure("menu_calls_without_digit", len(undialled), "calls")
        for r in undialled[:5]:
            print(f"# no digit: call {r['call_id']} worker {r.get('worker')} leg {r.get('leg')} at {r['timestamp']}")
        invites: dict[str, float] = {}
        for port in AGENT_PORTS:  # a transferred call rings a second agent: its first ring counts
            for call, at in agent_invites(work / f"agents-{port}-messages.log").items():
                invites[call] = min(at, invites.get(call, at))
        lat = [1000 * (invites[c] - t) for c, t in digits.items() if c in invites]
        if lat:
            figure("digit_to_agent_invite_samples", len(lat), "calls")
            figure("digit_to_agent_invite_p50", round(percentile(lat, 50), 1), "ms")
            figure("digit_to_agent_invite_p95", round(percentile(lat, 95), 1), "ms")
        ended = {str(r["call_id"]): _iso(str(r["timestamp"])) for r in ev["call.ended"]}
        first: dict[str, float] = {}  # a transferred call connects twice; it is bridged from the first
        for r in ev["acd.connected"]:
            first.setdefault(str(r["call_id"]), _iso(str(r["timestamp"])))
        spans = [(at, ended.get(call, time.time())) for call, at in first.items()]
        figure("most_bridged_at_once", most_at_once(spans), "calls")
        log = d.log_text()
        figure("log_lines", log.count("\n"), "lines")
        figure("log_no_free_call_leg", log.count("no free call leg"), "lines")
        figure("log_dial_waiting", log.count('"leg.dial_waiting"'), "lines")
        st = d.status() or {}
        paths = st.get("calls", {}).get("media_paths", {})
        figure("bridges_direct_media", paths.get("direct", "n/a"), "calls")
        figure("bridges_media_taken_back", paths.get("anchored", "n/a"), "calls")
        used = [w["slots_used"] for w in st.get("workers", []) if "slots_used" in w]
        figure("slots_used_after_run", sum(used) if used else "n/a", "slots" if used else "")
        # what the calls' memory leaves behind once they have all ended (kept by the allocators)
        figure("server_pss_after_run", round(pss_mb(server_pids(d.proc.pid)), 1), "MB")
    finally:
        for a in agents:
            a.kill()
            a.wait()
        code = d.stop(timeout=120)
        figure("daemon_exit_code", code)
        figure("work_dir", str(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
