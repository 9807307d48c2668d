"""WorkerPool: a supervised set of pjsua2 media workers with fixed SIP ports, `count` of them
warm from the start and up to `max` under load (poolplan.PoolPlan decides when).

Each worker slot has a fixed SIP port and its own slice of the RTP range, so a replacement
comes back at the address the edge's dispatcher list already names: the edge needs no
reload, and calls resume flowing to that slot as soon as it answers again. A slot grown or
retired is added to or removed from the edge's set at run time (Edge.add_worker/remove_worker).

With spawn="zygote" the pool starts a Zygote first and forks every worker from it (shared
import memory, ringmaster.zygote); it is stopped after the workers. A zygote that dies is
restarted; its workers die with it and are replaced like any dead worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from ringmaster import protocol as p
from ringmaster.config import Config
from ringmaster.workerproc import WorkerProcess, WorkerSpec
from ringmaster.zygote import Zygote

log = structlog.get_logger("ringmaster.pool")


def worker_specs(cfg: Config) -> list[WorkerSpec]:
    w = cfg.workers
    lo, hi = w.rtp_range
    share = (hi - lo + 1) // w.ceiling
    share -= share % 2  # RTP on even ports, RTCP beside it
    proxy = f"sip:{cfg.sip.host}:{cfg.sip.port};lr"
    # Workers take SIP from the edge alone: Kamailio sends from its listen socket, so that
    # exact IP:PORT is the only source a worker answers (docs/security.md).
    edge = f"[{cfg.sip.host}]:{cfg.sip.port}" if ":" in cfg.sip.host else f"{cfg.sip.host}:{cfg.sip.port}"
    return [WorkerSpec(name=f"w{i + 1}", sip_host=w.address, sip_port=w.sip_port_base + i,
                       rtp_port=lo + i * share, rtp_count=share, proxy=proxy,
                       public_host=cfg.sip.advertised_address, allowed_sources=(edge,),
                       audio_frame_ptime=w.audio_frame_ptime)
            for i in range(w.ceiling)]


def registration_agent_spec(cfg: Config) -> WorkerSpec:
    """The pjsua2 process that holds upstream registrations and never takes a call.

    It sits on the SIP port after the workers'. Media workers must not hold registration
    accounts: pjsua matches INVITEs to accounts by user part, and a call matched to an
    account whose Contact is forced to the edge answers with that Contact, so the caller's
    ACK loops at the edge (seen in test_upstream_registration).
    """
    w = cfg.workers
    lo, _ = w.rtp_range
    return WorkerSpec(name="reg", sip_host=w.address, sip_port=w.sip_port_base + w.ceiling,
                      rtp_port=lo, rtp_count=2, public_host=cfg.sip.advertised_address)


class WorkerPool:
    def __init__(self, specs: list[WorkerSpec], on_event: Callable[[WorkerProcess, p.Message], None],
                 on_worker_lost: Callable[[str], None], restart_delay: float = 0.2, warm: int | None = None,
                 spawn: str = "exec", per_process: int = 1, copies: str = ""):
        """spawn: "zygote" (fork workers from one zygote process) or "exec" (a new interpreter each).
        per_process, copies: see Zygote (zygote spawning only)."""
        if spawn not in ("zygote", "exec"):
            raise ValueError(f"spawn: expected zygote or exec, got {spawn!r}")
        if per_process > 1 and spawn != "zygote":
            raise ValueError("per_process above 1 needs spawn zygote")
        self.zygote = Zygote(per_process, copies) if spawn == "zygote" else None
        self.specs = {s.name: s for s in specs}  # every slot; the first `warm` run from the start
        self.warm = len(specs) if warm is None else warm
        self.on_event = on_event
        self.on_worker_lost = on_worker_lost
        self.restart_delay = restart_delay
        self.workers: dict[str, WorkerProcess] = {}
        self.restarts = 0
        self.stopping = False
        self._respawns: set[asyncio.Task[None]] = set()
        self.last_restart_seconds: float | None = None  # death -> replacement ready

    async def start(self) -> None:
        if self.zygote is not None:
            await self.zygote.start()
        await asyncio.gather(*(self._spawn(name) for name in list(self.specs)[:self.warm]))

    async def grow(self, name: str) -> None:
        """Start the worker of one more slot (PoolPlan decided it); raises if it fails."""
        if name in self.workers:
            return
        try:
            await self._spawn(name)
        except Exception:
            self.workers.pop(name, None)
            raise
        log.info("pool.grown", worker=name, running=len(self.workers))

    async def retire(self, name: str) -> int:
        """Stop one worker for good (no respawn); its slot may be grown again later."""
        wp = self.workers.get(name)
        if wp is None:
            return 0
        code = await wp.stop()
        if self.workers.get(name) is wp:
            del self.workers[name]
        log.info("pool.retired", worker=name, running=len(self.workers), code=code)
        return code

    async def _spawn(self, name: str) -> None:
        wp = WorkerProcess(self.specs[name], self.on_event, self._exited, zygote=self.zygote)
        self.workers[name] = wp
        await wp.start()

    def _exited(self, wp: WorkerProcess, code: int) -> None:
        if wp.stopping or self.stopping or self.workers.get(wp.name) is not wp:
            return
        if not wp.ready.done() or wp.ready.cancelled() or wp.ready.exception() is not None:
            # it never became ready: whoever started it (start, grow, _respawn with its
            # backoff) has its failure; a respawn here too made a second, undelayed loop
            return
        log.error("worker.died", worker=wp.name, code=code, pid=wp.pid)
        self.on_worker_lost(wp.name)
        task = asyncio.create_task(self._respawn(wp.name, time.monotonic()))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, name: str, died_at: float) -> None:
        delay = self.restart_delay
        while not self.stopping:
            await asyncio.sleep(delay)
            try:
                await self._spawn(name)
                self.restarts += 1
                self.last_restart_seconds = time.monotonic() - died_at
                log.info("worker.replaced", worker=name, seconds=round(self.last_restart_seconds, 3))
                return
            except Exception:
                log.exception("worker.respawn_failed", worker=name)
                delay = min(max(delay, 0.5) * 2, 30.0)  # crash loop: back off, don't spin

    def send(self, worker: str, cmd: p.Message) -> bool:
        wp = self.workers.get(worker)
        if wp is None:
            return False
        try:
            wp.send(cmd)
            return True
        except ConnectionError:
            return False

    async def stop(self) -> list[int]:
        self.stopping = True
        for t in list(self._respawns):
            t.cancel()
        codes = list(await asyncio.gather(*(w.stop() for w in self.workers.values())))
        if self.zygote is not None:
            await self.zygote.stop()  # after the workers: it reports their exit codes
        return codes
