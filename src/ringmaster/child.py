"""SupervisedChild: a helper program (Kamailio, mosquitto) run in the foreground as the
daemon's child, restarted with backoff when it dies, stopped with TERM (then KILL).

Subclasses say how to start it (`_spawn`) and when it is ready (`_wait_ready`); the restart
policy and the stop sequence live here once.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

log = structlog.get_logger("ringmaster.child")

MAX_BACKOFF = 30.0


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
            code = await self.proc.wait()
            if self.stopping:
                return
            self.restarts += 1
            log.error(f"{self.name}.died", code=code, restart_in=backoff)
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
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                log.error(f"{self.name}.stop_timeout")
                self.proc.kill()
                await self.proc.wait()
        if self._stderr_task is not None:
            await asyncio.gather(self._stderr_task, return_exceptions=True)
        log.info(f"{self.name}.stopped")
