"""SupervisedChild: a helper program (Kamailio, mosquitto) run in the foreground as the
daemon's child, restarted with backoff when it dies, stopped with TERM (then KILL).

Subclasses say how to start it (`_spawn`) and when it is ready (`_wait_ready`); the restart
policy and the stop sequence live here once.

A child runs in its own session (process group = its pid), so that Kamailio's forked
processes go with it: when Kamailio's main process is killed (-9), its 15 workers keep the
SIP ports and the stderr pipe open, so a restart failed to bind and a stop waited forever for
the pipe. Every signal therefore goes to the whole group. `die_with_parent` makes the kernel
send SIGTERM to a child when the daemon dies, however it dies (PR_SET_PDEATHSIG, Linux).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("ringmaster.child")

MAX_BACKOFF = 30.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the process that spawned it dies (prctl(2)).
    Our children all stop cleanly on SIGTERM (Kamailio takes its own processes down)."""

    def _set() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return _set


def kill_group(pid: int, sig: int) -> bool:
    """Signal the process group led by pid; False if there is none any more."""
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: a container's
    init may never reap the orphans of a killed Kamailio, and they hold nothing."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


async def clear_leftover(pidfile: Path, marker: str, what: str) -> bool:
    """A previous run that died without stopping its child left it running (holding ports):
    if pidfile names a live process whose command line contains `marker`, stop its group
    (TERM, then KILL after 3 s). Never touches a process that is not ours."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return False
    if marker not in cmdline:
        return False
    log.warning(f"{what}.leftover_stopped", pid=pid)
    kill_group(pid, signal.SIGTERM)
    for _ in range(60):
        if not group_alive(pid):
            return True
        await asyncio.sleep(0.05)
    kill_group(pid, signal.SIGKILL)
    return True


class SupervisedChild:
    name = "child"  # log events are NAME.died, NAME.restart_failed, NAME.stop_timeout, NAME.stopped

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None

    async def _spawn(self) -> None:
        raise NotImplementedError

    async def _wait_ready(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    async def _start_supervised(self) -> None:
        await self._spawn()
        await self._wait_ready()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self.stopping:
            assert self.proc is not None
            code = await self._exited()
            if self.stopping:
                return
            self.restarts += 1
            log.error(f"{self.name}.died", code=code, restart_in=backoff)
            # what it forked may live on (Kamailio's processes hold its ports): end the group
            kill_group(self.proc.pid, signal.SIGKILL)
            await self._end_stderr()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            try:
                await self._spawn()
                await self._wait_ready()
                backoff = 0.5
            except Exception:
                log.exception(f"{self.name}.restart_failed")

    async def stop(self) -> None:
        self.stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self.proc is not None:
            pid = self.proc.pid
            # the main process stops its own children; a SIGTERM that lands while Kamailio is
            # still starting its processes was seen to be lost (a stop 0.6 s after start waited
            # out the timeout), so it is sent again each second
            for _ in range(5):
                if self.proc.returncode is not None:
                    break
                self.proc.send_signal(signal.SIGTERM)
                await self._exited(timeout=1.0, every=0.05)
            else:
                if self.proc.returncode is None:
                    log.error(f"{self.name}.stop_timeout")
            # the main process is gone; anything of its group that is not goes now
            for _ in range(40):
                if not group_alive(pid):
                    break
                await asyncio.sleep(0.05)
            else:
                kill_group(pid, signal.SIGKILL)
            if self.proc.returncode is None:
                self.proc.kill()
                await self._exited(timeout=2)
        await self._end_stderr()
        log.info(f"{self.name}.stopped")

    async def _exited(self, timeout: float | None = None, every: float = 0.25) -> int | None:
        """The child's exit code once its main process is gone (None at the timeout).

        Not `Process.wait()`: on Python 3.11 it returns only once every pipe is closed too, and
        processes the child forked keep its stderr open after it died (kill -9 of Kamailio's
        main process went unnoticed). The return code is set as soon as the process exits."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.proc.returncode is None:
            if deadline is not None and loop.time() >= deadline:
                return None
            await asyncio.sleep(every)
        return self.proc.returncode

    async def _end_stderr(self, timeout: float = 2.0) -> None:
        """Let the log pump read the last lines, but never wait on a pipe someone else holds."""
        task, self._stderr_task = self._stderr_task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except Exception:
            pass
