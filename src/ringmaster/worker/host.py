"""A worker host: one forked process that runs up to `workers.per_process` media engines, each
its own pjsua instance (a copy of the library, worker.copies) on a thread of its own.

Why: a process of its own per 4-leg engine cost ~6.8 MB PSS, ~4 MB of it the interpreter's
pages that every process copies as it runs; engines that share a process share those
(docs/engine-findings.md 108). Each engine keeps everything a worker had: its protocol
socket, SIP port, RTP slice and 4 legs; the controller still sees one worker per engine.

The zygote forks a host for a worker request when no host it made has room, and hands the
next requests to that host over their SOCK_SEQPACKET pair (same JSON as the zygote's own
protocol, one datagram each):
  zygote -> host  {"op": "engine", "id": N, "settings": {WorkerSettings fields}}
                  with the worker's protocol socket and output pipe (SCM_RIGHTS)
  host -> zygote  {"op": "started", "id": N}            its thread runs (the zygote answers
                                                         the controller "forked" only now)
                  {"op": "refused", "id": N}            full or stopping: fork it elsewhere
                  {"op": "ended", "id": N, "code": C}   the engine's thread has finished
A host takes `capacity` engines in its life (library i serves the i-th: a library is never
set up twice) and exits when the last has ended; a request it had not read by then is sent
again to another host by the zygote, which sees the EOF.

Failure: an engine that raises while it runs may hold its ports and its library's locks, so
the whole host exits with code 1 and the controller replaces each of its workers, as for a
worker process that died. One that fails to start ends alone (it carries no call). SIGTERM stops every engine (hang up, let the BYEs out) as it stops a worker.

Collections: pjlib aborts when a thread it does not know calls it, and Python frees a
cycle's objects on the thread that runs the collection, which may hold another engine's
pjsua2 objects. The automatic collector is off; engine threads (worker.copies.register_thread)
and this main thread, known to every library, collect: the engines at their own points
(recordings, stop), this thread every COLLECT_EVERY seconds when there is anything to collect.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from ringmaster.worker import copies

MAX_MESSAGE = 65536
COLLECT_EVERY = 5.0  # seconds between this host's garbage collections
PR_SET_NAME = 15  # linux/prctl.h: the calling thread's name (15 bytes)


def _prctl_name(name: str) -> None:
    ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class Host:
    """The host's main thread: takes engine requests, starts their threads, reports ends."""

    def __init__(self, sock: socket.socket, capacity: int) -> None:
        self.sock: socket.socket | None = sock
        self.capacity = capacity
        self.started = 0
        self.threads: dict[int, threading.Thread] = {}  # request id -> the engine's thread
        self.engines: dict[int, Any] = {}  # request id -> MediaEngine, once made
        self.ended: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.terminating = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self, first: dict[str, Any], proto_fd: int, out_fd: int) -> int:
        """Run the first engine, then the ones the zygote sends, until every engine has ended.
        Returns the exit code. Each engine's output pipe is held until it ends (its EOF tells
        the controller so); what the host prints goes to the zygote's output."""
        gc.disable()
        copies.register_thread("rm-host")
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self._start(first, proto_fd, out_fd)
        collect_at = time.monotonic() + COLLECT_EVERY
        while self.threads:
            watched = [self.wake_r] + ([self.sock.fileno()] if self.sock is not None else [])
            readable, _, _ = select.select(watched, [], [], max(0.0, collect_at - time.monotonic()))
            if time.monotonic() >= collect_at:
                self._collect()
                collect_at = time.monotonic() + COLLECT_EVERY
            if self.wake_r in readable:
                try:
                    os.read(self.wake_r, 512)
                except BlockingIOError:
                    pass
            if self.sock is not None and self.sock.fileno() in readable:
                self._receive()
            self._report_ended()
            if self.terminating:
                self._stop_engines()
        return 0

    def _collect(self) -> None:
        """What the automatic collector would have done since the last call, on this thread:
        nothing while the engines allocate nothing (an idle host; a full collection every 5 s
        in 25 idle hosts cost ~1.3 % of a core), the young generations when they are over
        their thresholds, everything when the old generation is. Measured under load with
        recorded and transferred calls: no cycle found here held a pjsua2 object
        (docs/engine-findings.md 108)."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[0] < thresholds[0]:
            return
        generation = 2 if counts[2] >= thresholds[2] else 1 if counts[1] >= thresholds[1] else 0
        gc.collect(generation)

    def _receive(self) -> None:
        assert self.sock is not None
        data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 2)
        if not data:
            self.sock.close()  # the zygote is gone: nothing more comes (PR_SET_PDEATHSIG ends us)
            self.sock = None
            return
        try:
            req = json.loads(data)
            if req.get("op") != "engine" or len(fds) != 2 or not isinstance(req.get("settings"), dict):
                raise ValueError(f"expected an engine request with 2 fds, got {data[:200]!r}")
        except (ValueError, AttributeError) as exc:
            for fd in fds:
                os.close(fd)
            print(f"worker host: bad request: {exc}", file=sys.stderr, flush=True)
            return
        if self.started >= self.capacity or self.terminating:
            for fd in fds:
                os.close(fd)
            self._tell({"op": "refused", "id": req.get("id")})
            return
        self._start(req, fds[0], fds[1])
        self._tell({"op": "started", "id": req.get("id")})

    def _tell(self, msg: dict[str, Any]) -> None:
        if self.sock is not None:
            try:
                self.sock.send(json.dumps(msg).encode())
            except OSError:
                pass  # the zygote is gone; PR_SET_PDEATHSIG ends this host

    def _start(self, req: dict[str, Any], proto_fd: int, out_fd: int) -> None:
        index, self.started = self.started, self.started + 1
        req_id = int(req.get("id", 0))
        name = str(req["settings"].get("name", "?"))
        thread = threading.Thread(target=self._engine, args=(index, req_id, req["settings"], proto_fd, out_fd),
                                  name=f"rm-{name}", daemon=True)
        self.threads[req_id] = thread
        thread.start()

    def _engine(self, index: int, req_id: int, settings: dict[str, Any], proto_fd: int, out_fd: int) -> None:
        """An engine's thread: as worker.__main__.run, on library `index`. An engine that
        fails to start (its SIP port taken, say) ends alone with code 1: it carries no call
        yet, and its library is never used again; one that fails while running takes the
        host down (see the module's docstring: "Failure")."""
        name = f"rm-{settings.get('name', '?')}"
        code = 0
        sock = socket.socket(fileno=proto_fd)
        try:
            _prctl_name(name)  # `top -H` and /proc/PID/task/*/comm show which worker a thread is
            copies.register_thread(name)
            module = copies.engine_module(index)
            fields = dict(settings, allowed_sources=tuple(settings.get("allowed_sources", ())))
            engine = module.MediaEngine(module.WorkerSettings(**fields), sock)
            with self.lock:
                self.engines[req_id] = engine
                engine.running = not self.terminating
            engine.start()
        except Exception:
            print(f"worker host: {name} could not start", file=sys.stderr, flush=True)
            traceback.print_exc()
            code = 1
        if code == 0:
            try:
                engine.run()
            except BaseException:
                traceback.print_exc()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)  # see the module's docstring: "Failure"
            if engine.waker is not None:
                engine.waker.close()
        sock.close()  # the controller's EOF: this worker has gone
        os.close(out_fd)
        self.ended.put((req_id, code))
        try:
            os.write(self.wake_w, b"e")
        except BlockingIOError:
            pass  # a byte is waiting already

    def _report_ended(self) -> None:
        while not self.ended.empty():
            req_id, code = self.ended.get()
            thread = self.threads.pop(req_id, None)
            if thread is not None:
                thread.join()
            with self.lock:
                self.engines.pop(req_id, None)
            self._tell({"op": "ended", "id": req_id, "code": code})

    def _on_term(self, signum: int, frame: object) -> None:
        self.terminating = True  # the wake-up byte ends the select; the loop stops the engines

    def _stop_engines(self) -> None:
        """Each engine hangs up and ends as on a worker's SIGTERM; a CRLF to its SIP port ends
        its sleep in pjsip's ioqueue (the signal woke only this thread)."""
        with self.lock:
            engines = list(self.engines.values())
        for engine in engines:
            if engine.running:
                engine.running = False
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.sendto(b"\r\n\r\n", (engine.s.sip_host, engine.s.sip_port))
                except OSError:
                    pass
