"""WorkerProcess: the controller's handle on one pjsua2 media worker child process.

Starts the worker with one end of a socketpair, either forked by the zygote (ringmaster.zygote,
`workers.spawn: zygote`, the default) or exec'd as `python -m ringmaster.worker`
(`workers.spawn: exec`); sends commands and delivers decoded events to a callback. Knows
nothing about calls or routing.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ringmaster import protocol as p
from ringmaster.child import die_with_parent
from ringmaster.zygote import ForkedWorker, Zygote

log = structlog.get_logger("ringmaster.worker")

EventHandler = Callable[["WorkerProcess", p.Message], None]


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    sip_host: str
    sip_port: int
    rtp_port: int
    rtp_count: int
    proxy: str = ""
    public_host: str = ""
    # who may open dialogs with this worker (IP or IP:PORT): the edge alone for the pool
    allowed_sources: tuple[str, ...] = ()
    audio_frame_ptime: int = 40  # ms the worker's conference bridge mixes per tick

    @property
    def sip_uri(self) -> str:
        return f"sip:{self.name}@{self.sip_host}:{self.sip_port}"

    def settings(self) -> dict[str, Any]:
        """The worker engine's settings (ringmaster.worker.engine.WorkerSettings fields), as the
        zygote gets them; the exec'd worker gets the same from its command line."""
        return {"name": self.name, "sip_host": self.sip_host, "sip_port": self.sip_port,
                "rtp_port": self.rtp_port, "rtp_port_range": self.rtp_count, "proxy": self.proxy,
                "public_host": self.public_host, "allowed_sources": list(self.allowed_sources),
                "audio_frame_ptime": self.audio_frame_ptime}


class WorkerProcess:
    def __init__(self, spec: WorkerSpec, on_event: EventHandler,
                 on_exit: Callable[[WorkerProcess, int], None] | None = None, zygote: Zygote | None = None):
        """zygote: fork the worker from it; None: exec a new interpreter."""
        self.spec = spec
        self.on_event = on_event
        self.on_exit = on_exit
        self.zygote = zygote
        self.proc: asyncio.subprocess.Process | ForkedWorker | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self._reader_task: asyncio.Task[None] | None = None
        self._output_task: asyncio.Task[None] | None = None
        self.stopping = False
        self.slots: p.Slots | None = None  # the worker's last report of its pjsua call slots
        self._waker: socket.socket | None = None  # sends the wake-up datagram (see _wake)
        self.log = log.bind(worker=spec.name)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        """Ready for commands: the worker said Ready and its process is still running."""
        return (self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None
                and self.proc is not None and self.proc.returncode is None)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self, timeout: float = 10.0) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = await (self.zygote.fork(self.spec.settings(), child, timeout) if self.zygote is not None
                               else self._exec(child))
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        s = self.spec
        self._output_task = asyncio.create_task(self._pump_output(self.proc), name=f"out-{s.name}")
        reader, self.writer = await asyncio.open_unix_connection(sock=parent)
        self._reader_task = asyncio.create_task(self._read(reader), name=f"read-{s.name}")
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), timeout)
        except TimeoutError:
            if isinstance(self.proc, ForkedWorker) and self.proc.shared:
                # one engine of a worker host: it ends when its socket closes; a SIGKILL
                # would end the host's other workers and their calls
                if self.writer is not None:
                    self.writer.close()
            else:
                self.kill()
            raise RuntimeError(f"worker {s.name} did not become ready in {timeout}s") from None
        self.log.info("worker.ready", pid=self.proc.pid, sip=s.sip_uri, spawn="zygote" if self.zygote else "exec")

    async def _exec(self, child: socket.socket) -> asyncio.subprocess.Process:
        s = self.spec
        args = [sys.executable, "-m", "ringmaster.worker", "--fd", str(child.fileno()),
                "--name", s.name, "--sip", f"{s.sip_host}:{s.sip_port}",
                "--rtp", f"{s.rtp_port}:{s.rtp_count}"]
        if s.proxy:
            args += ["--proxy", s.proxy]
        if s.public_host:
            args += ["--public-host", s.public_host]
        for source in s.allowed_sources:
            args += ["--allow-source", source]
        args += ["--audio-frame-ptime", str(s.audio_frame_ptime)]
        return await asyncio.create_subprocess_exec(
            *args, pass_fds=[child.fileno()], stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C to the daemon must not kill workers mid-call
            preexec_fn=die_with_parent())  # ... but a daemon that dies takes them with it

    async def _pump_output(self, proc: asyncio.subprocess.Process | ForkedWorker) -> None:
        """pjsua's console lines and any traceback become log events bound to this worker."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            if any(k in line for k in ("Traceback", "Error", "ERROR", "Assertion", "assert", "  File ")):
                self.log.error("worker.output", line=line)
            else:
                self.log.debug("worker.output", line=line)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = p.decode(line)
                except p.ProtocolError as exc:
                    self.log.error("worker.bad_message", error=str(exc))
                    continue
                if isinstance(msg, p.Ready) and not self.ready.done():
                    self.ready.set_result(msg)
                try:
                    self.on_event(self, msg)
                except Exception:  # a handler bug must not stop event delivery
                    self.log.exception("worker.event_handler_failed", event=msg.type)
        finally:
            code = await self.proc.wait() if self.proc else -1
            if not self.ready.done():
                self.ready.set_exception(RuntimeError(f"worker exited with {code}"))
            if self.on_exit is not None:
                self.on_exit(self, code)

    def send(self, cmd: p.Message) -> None:
        if self.writer is None or self.writer.is_closing():
            raise ConnectionError(f"worker {self.name} is not connected")
        self.writer.write(p.encode(cmd))
        self._wake()

    def _wake(self) -> None:
        """An idle worker sleeps in pjsip's ioqueue, which does not watch our socket: a CRLF
        keep-alive (RFC 5626 3.5.1) to its SIP port ends the sleep; pjsip drops it unparsed.
        Sent after every command, so no command ever waits out the idle poll (no race with the
        worker falling asleep: the datagram waits in the socket until the next poll)."""
        if self._waker is None:
            self._waker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._waker.setblocking(False)
            self._waker.bind((self.spec.sip_host, 0))  # never 0.0.0.0: the daemon binds only where told
        try:
            self._waker.sendto(b"\r\n\r\n", (self.spec.sip_host, self.spec.sip_port))
        except OSError:
            pass  # the command is in the socket anyway; the worker reads it at its next poll

    def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    async def stop(self, timeout: float = 5.0) -> int:
        """Ask the worker to hang up and exit; kill it if it does not within timeout."""
        self.stopping = True
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            try:
                self.send(p.Shutdown())
                await self.writer.drain()  # type: ignore[union-attr]
            except (ConnectionError, OSError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                # hung: in a worker host this ends its other workers too (they are replaced)
                self.log.error("worker.stop_timeout", shared=isinstance(self.proc, ForkedWorker) and self.proc.shared)
                self.kill()
                await self.proc.wait()
        for task in (self._reader_task, self._output_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        if self.writer is not None:
            self.writer.close()
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        return self.proc.returncode or 0
