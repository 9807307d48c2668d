"""The zygote: one process that imports pjsua2 and the media engine once, then forks every
media worker from that state, so the Python import state (about 13 MB per worker, measured)
is shared copy-on-write instead of built again by each worker (docs/engine-findings.md 50).
Run as `python -m ringmaster.worker.zygote --fd N` by ringmaster.zygote.Zygote.

No libCreate ever runs here: pjsua2's endpoint, threads, sockets and pools are made in each
child after the fork, so a child starts exactly as an exec'd worker does (worker.__main__.run)
and the zygote stays single-threaded (fork is safe; PR_SET_PDEATHSIG, which follows the
thread that forked, follows the zygote itself).

It speaks JSON over an AF_UNIX SOCK_SEQPACKET socket, one message per datagram:
  controller -> zygote  {"op": "fork", "id": N, "settings": {WorkerSettings fields}}
                        with two descriptors by SCM_RIGHTS: the worker's end of its protocol
                        socketpair, then the write end of its output pipe (stdout and stderr)
  zygote -> controller  {"op": "ready", "pid": P}           imports done, forks served
                        {"op": "forked", "id": N, "pid": P, "shared": S}  S: in a worker host
                        {"op": "fork_failed", "id": N, "error": "..."}
                        {"op": "exited", "pid": P, "code": C} C as asyncio's returncode
                                                             (-SIGNAL when killed by one)
                        {"op": "exited", "id": N, "code": C}  one engine of a host ended
With `--per-process N` above 1 a fork request is served by a worker host (worker.host): the
zygote forks a host when none it made has room and passes it the next requests, up to N; the
"forked" answer names the host's pid. Its engines' ends are reported one by one (by id), the
host's own exit by pid (every worker it still ran has ended with that code).
Ending: on SIGTERM (the daemon's stop, or PR_SET_PDEATHSIG when the daemon dies) the zygote
passes SIGTERM to its workers, which hang up their calls, and waits for them (STOP_WAIT
seconds at most) before it exits, as an exec'd worker stopped with the daemon would. If the
zygote dies any other way (killed, crashed) its workers get SIGKILL (their PR_SET_PDEATHSIG):
the controller sees worker deaths, closes their calls as failed (worker_died) and the edge
hangs the callers up; a worker that hung up cleanly on its own would report its calls as
ended normally ("caller_hangup", seen when they got SIGTERM), which they were not.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# everything a worker imports, imported once here: these pages are what the forks share
import pjsua2  # noqa: F401

from ringmaster.worker import copies
from ringmaster.worker.__main__ import run
from ringmaster.worker.engine import WorkerSettings
from ringmaster.worker.host import Host

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PR_SET_NAME = 15  # the thread name `ps`/`top` show (15 bytes)
MAX_MESSAGE = 65536
STOP_WAIT = 5.0  # seconds the zygote waits for its workers after SIGTERM

children: set[int] = set()  # the workers forked and not yet reaped
terminating = False
per_process = 1  # engines a forked process runs (--per-process); 1: the engine is the process


@dataclass
class HostLink:
    """The zygote's end of a worker host's socket, how many engines it was given, and the
    requests it has not said "started" to yet (with their descriptors, kept to send again)."""

    sock: socket.socket
    taken: int
    offered: dict[int, tuple[dict[str, Any], list[int]]] = field(default_factory=dict)


hosts: dict[int, HostLink] = {}  # pid -> link, for hosts whose socket is open
wake_pipe: tuple[int, int] = (-1, -1)  # serve()'s self-pipe, which a forked child closes


def _prctl(option: int, arg: int | bytes) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _send(ctl: socket.socket, msg: dict[str, Any]) -> None:
    try:
        ctl.send(json.dumps(msg).encode())
    except OSError:
        pass  # the controller's end is gone (its EOF ends the loop): the workers still get stopped


def _child(ctl: socket.socket, wake: tuple[int, int], req: dict[str, Any], proto_fd: int,
           out_fd: int, host: socket.socket | None) -> int:
    """In the forked child: become a worker as an exec'd one would be, then run the engine
    (or, with a host socket, a worker host whose first engine it is)."""
    zygote = os.getppid()
    os.setsid()  # a signal to the zygote's group must not reach workers mid-call
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # see the module's docstring: "Ending"
    if os.getppid() != zygote:
        return 1  # the zygote died before the prctl: nobody would stop this worker
    ctl.close()
    for link in hosts.values():
        link.sock.close()  # other hosts' sockets are the zygote's alone
    signal.set_wakeup_fd(-1)
    for fd in wake:
        os.close(fd)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # run() sets its own TERM/INT handlers
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    settings = req["settings"]
    name = str(settings["name"])
    if host is not None:
        # a host's output stays the zygote's (logged as zygote.output): a worker's own pipe
        # must reach EOF when its engine ends, not when the process does (the controller
        # waits for that EOF when it stops or retires one worker of a running host)
        _prctl(PR_SET_NAME, f"rm-host-{name}".encode()[:15])
        return Host(host, per_process).serve(req, proto_fd, out_fd)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    _prctl(PR_SET_NAME, f"rm-{name}".encode()[:15])
    fields = dict(settings, allowed_sources=tuple(settings.get("allowed_sources", ())))
    run(WorkerSettings(**fields), socket.socket(fileno=proto_fd))
    return 0


def _fork(ctl: socket.socket, wake: tuple[int, int], req: dict[str, Any], fds: list[int]) -> None:
    if len(fds) != 2 or not isinstance(req.get("settings"), dict):
        for fd in fds:
            os.close(fd)
        _send(ctl, {"op": "fork_failed", "id": req.get("id"), "error": f"expected settings and 2 fds, got {len(fds)}"})
        return
    if per_process > 1 and _to_host(ctl, req, fds):
        return
    host_end, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if per_process > 1 else (None, None)
    sys.stdout.flush()
    sys.stderr.flush()  # nothing buffered here may be written again by the child
    gc.freeze()  # what the zygote made since the last fork: kept out of the child's collections
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if host_end is not None:
                host_end.close()
            code = _child(ctl, wake, req, fds[0], fds[1], host)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)  # never back into the zygote's loop
    children.add(pid)
    if host_end is not None and host is not None:
        host.close()
        hosts[pid] = HostLink(host_end, 1)
    for fd in fds:
        os.close(fd)
    _send(ctl, {"op": "forked", "id": req.get("id"), "pid": pid, "shared": host_end is not None})


def _to_host(ctl: socket.socket, req: dict[str, Any], fds: list[int]) -> bool:
    """Hand the request to a host with room; False if none took it (fork a new one)."""
    for link in list(hosts.values()):
        if link.taken >= per_process:
            continue
        msg = json.dumps({"op": "engine", "id": req.get("id"), "settings": req["settings"]}).encode()
        try:
            socket.send_fds(link.sock, [msg], fds)
        except OSError:
            link.taken = per_process  # exiting: it takes nothing more
            continue
        link.taken += 1
        link.offered[int(req.get("id", 0))] = (req, fds)  # "forked" once the host says "started"
        return True
    return False


def _from_host(ctl: socket.socket, pid: int) -> None:
    """A host's message or its EOF. "started": the request is its; "refused" (it is full or
    stopping) and EOF (it exited, maybe with requests unread: a host ends when its last engine
    does): the requests it did not take are forked again, into another host."""
    link = hosts[pid]
    try:
        data = link.sock.recv(MAX_MESSAGE)
    except OSError:
        data = b""
    if not data:
        link.sock.close()
        del hosts[pid]
        for req, fds in link.offered.values():
            _fork(ctl, wake_pipe, req, fds)
        return
    try:
        msg = json.loads(data)
        op, req_id = msg.get("op"), int(msg["id"])
        if op == "ended":
            _send(ctl, {"op": "exited", "id": req_id, "code": int(msg["code"])})
        elif op in ("started", "refused") and req_id in link.offered:
            req, fds = link.offered.pop(req_id)
            if op == "started":
                for fd in fds:
                    os.close(fd)
                _send(ctl, {"op": "forked", "id": req_id, "pid": pid, "shared": True})
            else:
                link.taken = per_process
                _fork(ctl, wake_pipe, req, fds)
        else:
            raise ValueError(f"unexpected {op!r} for request {req_id}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"zygote: bad message from host {pid}: {exc}", file=sys.stderr, flush=True)


def _reap(ctl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        link = hosts.get(pid)
        if link is not None:
            while pid in hosts and _pending_message(link.sock):  # its engines' ends come before its own
                _from_host(ctl, pid)
            if hosts.pop(pid, None) is not None:
                link.sock.close()
        _send(ctl, {"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _pending_message(sock: socket.socket) -> bool:
    return sock.fileno() >= 0 and bool(select.select([sock], [], [], 0)[0])


def serve(ctl: socket.socket) -> None:
    """Fork workers on request and report their exits until the controller's end closes."""
    global wake_pipe
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    wake_pipe = (wake_r, wake_w)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # the wake-up byte does the work
    signal.signal(signal.SIGTERM, _on_term)
    _send(ctl, {"op": "ready", "pid": os.getpid()})
    while not terminating:
        links = {link.sock.fileno(): pid for pid, link in hosts.items()}
        readable, _, _ = select.select([ctl.fileno(), wake_r, *links], [], [])
        for fd in readable:
            if fd in links and links[fd] in hosts:
                _from_host(ctl, links[fd])
        if wake_r in readable:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
            _reap(ctl)
        if ctl.fileno() in readable:
            data, fds, _, _ = socket.recv_fds(ctl, MAX_MESSAGE, 2)
            if not data:
                break  # the controller is gone or stopping
            try:
                req = json.loads(data)
                if req.get("op") != "fork":
                    raise ValueError(f"unknown op {req.get('op')!r}")
            except (ValueError, AttributeError) as exc:
                for fd in fds:
                    os.close(fd)
                print(f"zygote: bad request: {exc}", file=sys.stderr, flush=True)
                continue
            _fork(ctl, (wake_r, wake_w), req, fds)
    _stop_children(ctl, wake_r)


def _on_term(signum: int, frame: object) -> None:
    global terminating
    terminating = True  # the wake-up byte ends the select


def _stop_children(ctl: socket.socket, wake_r: int) -> None:
    """SIGTERM to every worker, then reap them (reporting their codes) for STOP_WAIT seconds."""
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_WAIT
    while children and time.monotonic() < deadline:
        select.select([wake_r], [], [], 0.1)
        try:
            os.read(wake_r, 512)
        except BlockingIOError:
            pass
        _reap(ctl)


def main() -> None:
    ap = argparse.ArgumentParser(prog="ringmaster-zygote")
    ap.add_argument("--fd", type=int, required=True, help="inherited SOCK_SEQPACKET socket to the controller")
    ap.add_argument("--per-process", type=int, default=1, help="engines one forked process runs (worker.host)")
    ap.add_argument("--copies", default="", help="directory for the copies of pjsua2 that --per-process needs")
    args = ap.parse_args()
    global per_process
    per_process = max(1, args.per_process)
    if per_process > 1:
        if not args.copies:
            ap.error("--per-process above 1 needs --copies")
        try:
            copies.prepare(Path(args.copies), per_process)
            copies.load(Path(args.copies), per_process)  # these imports are shared by every fork too
        except (OSError, ImportError) as exc:
            # workers still run, each in a process: more memory, nothing lost
            print(f"zygote: warning: {per_process} workers per process need copies of pjsua2 in {args.copies}:"
                  f" {exc}; one worker per process instead", file=sys.stderr, flush=True)
            per_process = 1
    copies.load(Path(args.copies or "."), per_process)
    ctl = socket.socket(fileno=args.fd)
    _prctl(PR_SET_NAME, b"rm-zygote")
    gc.collect()
    # move every object made so far out of the collector's reach: a collection in a worker would
    # otherwise write to their headers and copy the pages they sit on (gc.freeze docs)
    gc.freeze()
    serve(ctl)


if __name__ == "__main__":
    main()
