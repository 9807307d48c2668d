"""Zygote: the controller's handle on the process that forks media workers
(ringmaster.worker.zygote), and ForkedWorker, the handle on one worker it forked.

Why: an exec'd worker builds its own Python import state (pjsua2 and the engine, about 13 MB
of private memory); workers forked from one process that imported them once share it
copy-on-write (docs/design.md, "Worker spawning"; docs/engine-findings.md 50).

Life cycle and exit codes:
- The zygote is a SupervisedChild of the daemon: it gets SIGTERM when the daemon dies
  (PR_SET_PDEATHSIG) and passes it to its workers, which hang up their calls as on any stop.
  It is restarted with backoff when it dies. Its workers have it as parent and die with it
  (PR_SET_PDEATHSIG again, SIGKILL: a zygote that died unasked is a crash, and their calls are
  closed as on any worker death, not recorded as hung up normally).
- The zygote reaps its children and reports each exit code; ForkedWorker.wait() returns it.
- A worker whose zygote died before reporting its exit has no parent left to learn the code
  from: it is watched through a pidfd (pidfd_open(2), which names the process and not a
  recyclable pid) and reported with code 255 once it has exited, as asyncio does for a child
  whose status it could not get. The pool then treats it as any dead worker: its calls are
  closed and the slot is respawned, from the restarted zygote.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from typing import Any

import structlog

from ringmaster.child import SupervisedChild, die_with_parent

log = structlog.get_logger("ringmaster.zygote")

UNKNOWN_EXIT = 255  # a worker whose zygote died before it could report the exit
MAX_MESSAGE = 65536


class ForkedWorker:
    """One worker forked by the zygote, with the part of asyncio.subprocess.Process's surface
    that WorkerProcess uses: pid, returncode (None while running; -SIGNAL if killed by one),
    stdout (its stdout and stderr, a StreamReader), wait(), kill(), send_signal().
    A worker in a worker host (workers.per_process > 1) shares its pid with the host's other
    workers: it has ended when its engine has, and a signal reaches the whole host."""

    def __init__(self, pid: int, shared: bool = False) -> None:
        """shared: one engine of a worker host (kill() and send_signal() reach the others too)."""
        self.pid = pid
        self.shared = shared
        self.returncode: int | None = None
        self.stdout: asyncio.StreamReader | None = None
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watching = False
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = None  # already exited and reaped: the zygote's report is on its way

    async def wait(self) -> int:
        """The exit code, once the process has exited."""
        return await asyncio.shield(self._exit)

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)  # the process itself, never a reused pid
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _exited(self, code: int) -> None:
        if self._exit.done():
            return
        self.returncode = code
        self._exit.set_result(code)
        if self._pidfd is not None:
            if self._watching:
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _orphaned(self) -> None:
        """The zygote died without reporting this worker's exit: learn the exit from the pidfd
        (readable once the process has exited), the code is unknown."""
        if self._exit.done():
            return
        if self._pidfd is None:
            self._exited(UNKNOWN_EXIT)
            return
        self._watching = True
        asyncio.get_running_loop().add_reader(self._pidfd, self._exited, UNKNOWN_EXIT)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Zygote(SupervisedChild):
    """Starts the zygote, forks workers through it (fork), and restarts it if it dies.

    Events: zygote.ready, zygote.died / zygote.restart_failed (SupervisedChild),
    zygote.workers_orphaned, zygote.output, zygote.stopped."""

    name = "zygote"

    def __init__(self, per_process: int = 1, copies: str = "") -> None:
        """per_process: workers (engines) one forked process runs (worker.host; config
        workers.per_process); copies: the directory for the pjsua2 copies that takes."""
        super().__init__()
        self.per_process = per_process
        self.copies = copies
        self._sock: socket.socket | None = None
        self._up = asyncio.Event()  # ready for forks
        self._ready: asyncio.Future[int] | None = None
        self._pending: dict[int, asyncio.Future[ForkedWorker]] = {}
        self._children: dict[int, ForkedWorker] = {}  # fork request id -> the worker it made
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()  # one request at a time waits for room (see _send_request)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def start(self) -> None:
        await self._start_supervised()

    async def _spawn(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ringmaster.worker.zygote", "--fd", str(child.fileno()),
                "--per-process", str(self.per_process), "--copies", self.copies,
                pass_fds=[child.fileno()], stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to the daemon must not reach it
                preexec_fn=die_with_parent())  # ... but it dies with the daemon, and its workers with it
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        self._sock = parent
        self._ready = asyncio.get_running_loop().create_future()
        self._stderr_task = asyncio.create_task(self._pump_output(self.proc.stdout), name="zygote-out")
        self._reader = asyncio.create_task(self._read(parent, self._ready), name="zygote-read")

    async def _wait_ready(self, timeout: float = 10.0) -> None:
        assert self._ready is not None
        try:
            pid = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            raise RuntimeError(f"zygote did not become ready in {timeout}s") from None
        self._up.set()
        log.info("zygote.ready", pid=pid)

    async def fork(self, settings: dict[str, Any], proto: socket.socket, timeout: float = 10.0) -> ForkedWorker:
        """Fork one worker running the engine with `settings` (WorkerSettings fields) on the
        protocol socket `proto` (the worker's end; the caller closes its copy). Waits up to
        `timeout` seconds for a zygote that is restarting. Raises RuntimeError if the zygote
        refuses or dies first."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(f"zygote not ready within {timeout}s") from None
        assert self._sock is not None
        self._next_id += 1
        req_id = self._next_id
        answer: asyncio.Future[ForkedWorker] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = answer
        out_r, out_w = os.pipe()
        try:
            await self._send_request(self._sock, json.dumps({"op": "fork", "id": req_id, "settings": settings}).encode(),
                                     [proto.fileno(), out_w], timeout)
        except (OSError, TimeoutError) as exc:
            os.close(out_r)
            self._pending.pop(req_id, None)
            raise RuntimeError(f"zygote unreachable: {exc!r}") from exc
        finally:
            os.close(out_w)  # the child holds it now: EOF on out_r when the worker has gone
        try:
            worker = await asyncio.wait_for(answer, timeout)
        except BaseException:
            os.close(out_r)
            raise
        finally:
            self._pending.pop(req_id, None)
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(out_r, "rb", buffering=0))
        worker.stdout = reader
        return worker

    async def _send_request(self, sock: socket.socket, data: bytes, fds: list[int], timeout: float) -> None:
        """Send one request datagram with its descriptors, waiting (up to `timeout` s) while the
        socket has no room. A connected AF_UNIX SEQPACKET pair holds what its send buffer takes
        (net.core.wmem_default, 208 KiB: ~170 fork requests, measured) until the zygote reads,
        and the zygote forks one at a time: a pool that started 200 workers at once got EAGAIN
        and failed to start (bench/run load at 30 calls/s). The lock keeps requests in order
        and one writer callback on the socket (add_writer keeps one per descriptor). Raises
        OSError, or TimeoutError if the socket never drains."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout), self._sending:
            while True:
                try:
                    socket.send_fds(sock, [data], fds)
                    return
                except BlockingIOError:
                    room: asyncio.Future[None] = loop.create_future()
                    loop.add_writer(sock.fileno(), _settle, room)
                    try:
                        await room
                    finally:
                        loop.remove_writer(sock.fileno())

    async def _read(self, sock: socket.socket, ready: asyncio.Future[int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(sock, MAX_MESSAGE)
                if not data:
                    break
                try:
                    msg = json.loads(data)
                    self._handle(msg, ready)
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("zygote.bad_message", error=str(exc))
        except OSError:
            pass
        finally:
            self._lost(sock, ready)

    def _handle(self, msg: dict[str, Any], ready: asyncio.Future[int]) -> None:
        op = msg["op"]
        if op == "ready":
            if not ready.done():
                ready.set_result(int(msg["pid"]))
        elif op == "forked":
            worker = ForkedWorker(int(msg["pid"]), bool(msg.get("shared")))
            self._children[int(msg["id"])] = worker
            answer = self._pending.get(int(msg["id"]))
            if answer is not None and not answer.done():
                answer.set_result(worker)
            elif not worker.shared:  # the fork was given up (timeout): nobody will drive this worker
                worker.kill()
            # (an engine in a host ends by itself: its protocol socket's other end is closed;
            # a SIGKILL would take the host's other workers and their calls)
        elif op == "fork_failed":
            answer = self._pending.get(int(msg["id"]))
            if answer is not None and not answer.done():
                answer.set_exception(RuntimeError(f"zygote could not fork: {msg.get('error')}"))
        elif op == "exited":
            if "id" in msg:  # one engine of a worker host (worker.host) ended; the host runs on
                found = [self._children.pop(int(msg["id"]))] if int(msg["id"]) in self._children else []
            else:  # a process: every worker it ran
                found = [w for w in self._children.values() if w.pid == int(msg["pid"])]
                self._children = {i: w for i, w in self._children.items() if w.pid != int(msg["pid"])}
            for worker in found:
                worker._exited(int(msg["code"]))
        else:
            raise ValueError(f"unknown op {op!r}")

    def _lost(self, sock: socket.socket, ready: asyncio.Future[int]) -> None:
        """The zygote's end closed: it died or is stopping. Forks waiting fail; its workers'
        exits are learnt from their pidfds."""
        self._up.clear()
        sock.close()
        if not ready.done():
            ready.set_exception(RuntimeError("zygote exited before it was ready"))
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(RuntimeError("zygote exited"))
        orphans, self._children = list(self._children.values()), {}
        if orphans and not self.stopping:
            log.error("zygote.workers_orphaned", pids=[w.pid for w in orphans])
        for worker in orphans:
            worker._orphaned()

    async def _pump_output(self, out: asyncio.StreamReader | None) -> None:
        assert out is not None
        async for raw in out:
            line = raw.decode(errors="replace").rstrip()
            if line:
                (log.error if "Traceback" in line or "Error" in line else log.debug)("zygote.output", line=line)

    async def stop(self) -> None:
        await super().stop()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
