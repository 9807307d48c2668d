"""rtpengine, the media relay between browser phones and the workers, run as a supervised child.

A browser (the desk's WebRTC phone) speaks only DTLS-SRTP with ICE (RFC 8827, 8445) and the
pjsua2 workers only plain RTP. The edge's rtpengine module asks this rtpengine (its "ng"
control protocol, bencoded over loopback UDP) to rewrite each SDP of a browser's call and
relays the media between the two: SRTP/ICE on the browser's side, RTP/AVP on the worker's.
Userspace forwarding only (`--table=-1`: no kernel module). It runs in the foreground in its
own process group like the edge (ringmaster.child), as the `run_as` user when started as root.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
from pathlib import Path

import structlog

from ringmaster import runas
from ringmaster.child import SupervisedChild, clear_leftover, die_with_parent
from ringmaster.config import Config, WebRtcConfig

log = structlog.get_logger("ringmaster.edge.rtpengine")


def command(w: WebRtcConfig, pidfile: Path) -> list[str]:
    """rtpengine's command line for the config's webrtc section."""
    lo, hi = w.rtp_range
    binary = w.rtpengine if Path(w.rtpengine).exists() else (shutil.which("rtpengine") or w.rtpengine)
    return [binary, "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
            f"--interface={w.host}", f"--listen-ng=127.0.0.1:{w.ng_port}",
            f"--port-min={lo}", f"--port-max={hi}", f"--pidfile={pidfile}",
            "--num-threads=2", "--log-level=5", "--delete-delay=0", "--tos=184"]


def bencode(value: object) -> bytes:
    """The ng protocol's encoding (BitTorrent's bencode): str, bytes, int, list, dict."""
    if isinstance(value, bytes):
        return str(len(value)).encode() + b":" + value
    if isinstance(value, str):
        return bencode(value.encode())
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


async def ng_ping(port: int, timeout: float = 0.5) -> bool:
    """True when rtpengine answers an ng `ping` with `pong` on 127.0.0.1:port."""
    cookie = secrets.token_hex(6).encode()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, cookie + b" " + bencode({"command": "ping"}))
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
    except (OSError, TimeoutError):
        return False
    finally:
        sock.close()
    return data.startswith(cookie + b" ") and b"pong" in data


class RtpEngine(SupervisedChild):
    """Runs rtpengine in the foreground as a child, restarts it if it dies."""

    name = "rtpengine"

    def __init__(self, cfg: Config):
        assert cfg.sip.webrtc is not None
        super().__init__()
        self.cfg = cfg
        self.w = cfg.sip.webrtc
        self.rundir = Path(cfg.paths.runtime).resolve() / "rtpengine"
        self.pidfile = self.rundir / "rtpengine.pid"

    async def start(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        run_as = runas.resolve(self.cfg.run_as)
        if run_as is not None:
            run_as.check_reachable(self.rundir, "rtpengine's runtime dir")
            run_as.give(self.rundir)
        await self._start_supervised()

    async def _spawn(self) -> None:
        args = command(self.w, self.pidfile)
        await clear_leftover(self.pidfile, f"--listen-ng=127.0.0.1:{self.w.ng_port}", "rtpengine")
        run_as = runas.resolve(self.cfg.run_as)
        # rtpengine cannot drop privileges itself: the process starts as the run_as user
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent(),
            user=run_as.uid if run_as else None, group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None)
        self._stderr_task = asyncio.create_task(self._pump_stderr(self.proc), name="rtpengine-stderr")
        log.info("rtpengine.started", pid=self.proc.pid, ports=self.w.rtp_ports, control=self.w.ng_port)

    async def _pump_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if "ERR" in line or "CRIT" in line or "ALERT" in line:
                log.error("rtpengine.log", line=line)
            elif "WARNING" in line:
                log.warning("rtpengine.log", line=line)
            else:
                log.debug("rtpengine.log", line=line)

    async def _wait_ready(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"rtpengine exited with {self.proc.returncode} at start (see log)")
            if await ng_ping(self.w.ng_port):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"rtpengine not answering on 127.0.0.1:{self.w.ng_port} after {timeout}s")
