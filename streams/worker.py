"""The worker process: claims jobs from its queues' ready streams and runs them.

Owns the tasks of one worker (anyio, one task group, every task named):
``reader`` (claims; blocks on XREADGROUP when idle) feeding a memory stream,
``runner-N`` x concurrency, ``flusher`` (batched fenced writes), ``heartbeat``
(liveness + polled cancel requests), ``reaper`` (reclaims jobs of dead workers and
hard-timed-out jobs), ``promoter`` (due delayed jobs and retries), ``control``
(pub/sub cancel requests) and ``signals`` (SIGTERM/SIGINT: graceful stop).

Invariants: at most ``concurrency`` jobs execute at once (a blocking read may
start up to 3 x queues more, which wait in the buffer); every started job ends in
exactly one op (complete/fail/canceled/handback), written fenced; on stop the
worker stops reading, lets in-flight jobs finish for ``shutdown_grace_s``, then
hands back the rest, so nothing waits for the reaper after a clean stop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streams.claimer import Claimer
from streams.client import Client
from streams.jobrun import Running, run_job
from streams.keys import Keys
from streams.metrics_http import MetricsServer
from streams.ops import ClaimedJob, Op, OpBuffer
from streams.registry import Registry
from streams.scripts import Call
from streams.settings import Settings
from streams.worker_loops import Loops
from streams.worker_metrics import WorkerMetrics

log = logging.getLogger("jobstream.worker")


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker process's job loop. ``await Worker(...).run()``; ``stop()`` ends it."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 32,
        burst: bool = False,
        resources: Mapping[str, Any] | None = None,
        handle_signals: bool = False,
        metrics_port: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.settings, self.registry = settings, registry
        self.queues = list(queues or registry.queues)
        if not self.queues:
            raise ValueError("no queues to serve: the registry routes no kind anywhere")
        self.concurrency, self.burst = concurrency, burst
        self.resources = resources or {}
        self.handle_signals = handle_signals
        self.name = consumer_name()
        self.keys = Keys(settings.namespace)
        # no automatic replays: a replayed script would act twice (see streams/claimer.py)
        no_retry = Retry(NoBackoff(), 0)
        self.redis = aioredis.Redis.from_url(settings.redis_url, max_connections=64, retry=no_retry)
        self.blocking = aioredis.Redis.from_url(
            settings.redis_url, max_connections=2, retry=no_retry
        )
        self.client = Client(settings, redis=self.redis)
        self.scripts = self.client.scripts
        self.metrics = WorkerMetrics()
        self.metrics.concurrency.set(concurrency)
        self.metrics.in_flight.set_function(lambda: len(self.running))
        self.metrics_port = metrics_port
        self.metrics_server_port: int | None = None
        self.buffer = OpBuffer(
            self.redis, self.scripts, self.keys, self.name, settings.dead_ttl_s, self.metrics,
            settings.dedup_ttl_s,
        )  # fmt: skip
        self.running: dict[tuple[str, str, str], Running] = {}  # by ClaimedJob.key
        self.claimer = Claimer(
            settings, self.client, self.blocking, self.queues, self.name, self._known
        )
        self.free = concurrency
        self._slot_freed = anyio.Event()
        self.stopping = False
        self.started_jobs = 0
        self.ready = anyio.Event()

    def stop(self) -> None:
        """Ask the worker to stop gracefully (idempotent)."""
        self.stopping = True
        self._slot_freed.set()

    async def run(self) -> None:
        """Serve until stopped (or, in burst mode, until no work is left)."""
        await self.client.ensure_groups(self.queues)
        loops = Loops(self)
        await loops.beat_once()
        server = None
        if self.metrics_port is not None:
            server = MetricsServer(self.metrics.registry, self.metrics_port, loops.healthy)
            self.metrics_server_port = server.port
            log.info("worker %s: metrics on :%d/metrics", self.name, server.port)
        send, receive = anyio.create_memory_object_stream[ClaimedJob](max_buffer_size=10_000)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.buffer.flush_forever, name="flusher")
                loops.start(tg)
                if self.handle_signals:
                    tg.start_soon(self._signals, tg, name="signals")
                async with anyio.create_task_group() as work:
                    for i in range(self.concurrency):
                        work.start_soon(self._runner, receive.clone(), name=f"runner-{i}")
                    receive.close()
                    self.ready.set()
                    await self._reader(send)
                    await self._drain(work)
                with anyio.move_on_after(max(5.0, self.settings.heartbeat_ttl_s)) as flushing:
                    await self.buffer.wait_empty()
                if flushing.cancelled_caught:  # Redis down: the reaper will reclaim them
                    log.error("stopping with %d outcomes unwritten", len(self.buffer.keys()))
                tg.cancel_scope.cancel()
        finally:
            if server is not None:
                server.close()
            await self._leave()
            await self.redis.aclose()
            await self.blocking.aclose()

    async def _drain(self, work: TaskGroup) -> None:
        with anyio.move_on_after(self.settings.shutdown_grace_s):
            while self.running or self.free < self.concurrency:
                await self._wait_slot()
        for r in list(self.running.values()):
            r.cancel("shutdown")

    async def _leave(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                pipe = self.redis.pipeline(transaction=False)
                for q in self.queues:
                    pipe.zrem(self.keys.queue(q).workers, self.name)
                await pipe.execute()
            except aioredis.RedisError:
                pass

    async def _wait_slot(self) -> None:
        await self._slot_freed.wait()
        self._slot_freed = anyio.Event()

    async def _signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for sig in signals:
                if self.stopping:
                    log.warning("second %s: cancelling in-flight jobs now", sig.name)
                    for r in list(self.running.values()):
                        r.cancel("shutdown")
                else:
                    log.info("%s: stopping (grace %.0fs)", sig.name, self.settings.shutdown_grace_s)
                    self.stop()

    # -- reading ---------------------------------------------------------------

    def _known(self) -> set[tuple[str, str, str]]:
        """Entries this process runs or has an unwritten outcome for."""
        return set(self.running) | self.buffer.keys()

    async def _reader(self, send: MemoryObjectSendStream[ClaimedJob]) -> None:
        async with send:
            while not self.stopping:
                if self.free <= 0:
                    await self._wait_slot()
                    continue
                jobs = await self.claimer.claim(self.free)
                if not jobs:
                    if self.burst and await self._all_idle():
                        break
                    jobs = await self.claimer.wait_and_claim(self.free)
                for job in jobs:
                    self.free -= 1
                    self.started_jobs += 1
                    self.running[job.key] = Running(job)
                    await send.send(job)
        await self.claimer.release()

    async def _all_idle(self) -> bool:
        busy = self.running or self.free < self.concurrency or self.claimer.backlog
        if busy or not self.buffer.empty:
            return False
        await self.buffer.wait_empty()
        calls: list[Call] = [("idle", self.keys.queue(q).prefix, []) for q in self.queues]
        results = await self.scripts.batch(calls)
        return all(sum(int(x) for x in r) == 0 for r in results)

    # -- running ---------------------------------------------------------------

    async def _runner(self, receive: MemoryObjectReceiveStream[ClaimedJob]) -> None:
        async with receive:
            async for job in receive:
                running = self.running[job.key]
                if self.stopping and running.cancel_reason is None:
                    op = Op("handback", job)
                else:
                    op = await run_job(
                        job,
                        running,
                        self.registry,
                        self.buffer,
                        self.resources,
                        self.settings.payload_cap_bytes,
                    )
                self.buffer.add(op)
                self.running.pop(job.key, None)
                self.free += 1
                self._slot_freed.set()
