"""The background loops of a worker: heartbeat, reaper, promoter, control listener.

Owns: liveness (a heartbeat per queue every TTL/3; a worker silent for a TTL is
dead), cancel requests (pub/sub for speed, the cancel set polled by the heartbeat
for safety: a missed message delays a cancel by at most TTL/3), reclaiming the
jobs of dead workers and of jobs past their hard timeout, and promoting due
delayed jobs and retries. Every loop survives a Redis outage (logs, backs off,
resumes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup

from streams.scripts import Call

if TYPE_CHECKING:
    from streams.worker import Worker

log = logging.getLogger("jobstream.worker")
_REDIS_DOWN = (aioredis.ConnectionError, aioredis.TimeoutError, OSError)


class Loops:
    """The periodic tasks of one :class:`~streams.worker.Worker`."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.ttl_ms = int(worker.settings.heartbeat_ttl_s * 1000)
        self.last_beat = time.monotonic()

    def healthy(self) -> bool:
        """True while the heartbeat reaches Redis (the worker's lease is valid)."""
        return time.monotonic() - self.last_beat < self.w.settings.heartbeat_ttl_s

    def start(self, tg: TaskGroup) -> None:
        ttl_s = self.w.settings.heartbeat_ttl_s
        tg.start_soon(self._every, ttl_s / 3, self.beat_once, name="heartbeat")
        tg.start_soon(self._every, max(ttl_s / 2, 0.2), self.reap_once, name="reaper")
        tg.start_soon(self._promoter, name="promoter")
        tg.start_soon(self._control, name="control")

    async def _every(self, period_s: float, step: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await anyio.sleep(period_s)
            try:
                await step()
            except _REDIS_DOWN as exc:
                log.warning("%s: redis unavailable (%s)", step.__name__, type(exc).__name__)

    async def beat_once(self) -> None:
        """Renew this worker's lease on every queue; cancel jobs found in the cancel sets."""
        w = self.w
        calls: list[Call] = []
        for q in w.queues:
            ids = [r.job.job_id for r in w.running.values() if r.job.queue == q]
            calls.append(("heartbeat", w.keys.queue(q).prefix, [w.name, self.ttl_ms, *ids]))
        for q, res in zip(w.queues, await w.scripts.batch(calls)):
            for job_id in res:
                self.cancel(job_id.decode(), q)
        self.last_beat = time.monotonic()

    def cancel(self, job_id: str, queue: str | None = None) -> None:
        """Cancel the running attempt(s) of ``job_id`` (on ``queue``, when known)."""
        for running in list(self.w.running.values()):
            job = running.job
            if job.job_id == job_id and (queue is None or job.queue == queue):
                log.info("cancelling running job %s", job_id)
                running.cancel("operator")

    async def reap_once(self) -> int:
        """Reclaim jobs of dead workers / past their hard timeout; returns how many."""
        w = self.w
        args = [self.ttl_ms, 100, w.settings.dead_ttl_s, self.ttl_ms]
        calls: list[Call] = [("reclaim", w.keys.queue(q).prefix, args) for q in w.queues]
        n = sum(int(x) for x in await w.scripts.batch(calls))
        if n:
            log.info("reclaimed %d job(s) from dead workers or past their timeout", n)
        return n

    async def promote_once(self) -> float:
        """Promote due jobs on every queue; returns seconds until the next one is due."""
        w = self.w
        calls: list[Call] = [("promote", w.keys.queue(q).prefix, [1000]) for q in w.queues]
        results = await w.scripts.batch(calls)
        if any(int(n) >= 1000 for n, _, _ in results):
            return 0.0
        # waits from the server's clock (promote returns it): no trust in the local one
        waits = [(int(nxt) - int(now)) / 1000 for _, nxt, now in results if int(nxt) >= 0]
        return min([1.0, *waits])

    async def _promoter(self) -> None:
        while True:
            try:
                wait_s = await self.promote_once()
            except _REDIS_DOWN as exc:
                log.warning("promoter: redis unavailable (%s)", type(exc).__name__)
                wait_s = 1.0
            await anyio.sleep(max(0.005, wait_s))

    async def _control(self) -> None:
        while True:
            try:
                async with self.w.redis.pubsub() as ps:
                    await ps.subscribe(self.w.keys.control)
                    async for msg in ps.listen():
                        if msg.get("type") != "message":
                            continue
                        kind, _, rest = msg["data"].decode().partition(" ")
                        queue, _, job_id = rest.partition(" ")
                        if kind == "cancel" and job_id:
                            self.cancel(job_id, queue)
            except _REDIS_DOWN as exc:
                log.warning("control: redis unavailable (%s)", type(exc).__name__)
                await anyio.sleep(1.0)
