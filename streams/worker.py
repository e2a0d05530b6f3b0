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

from streams.client import Client
from streams.jobrun import Running, run_job
from streams.keys import Keys
from streams.metrics_http import MetricsServer
from streams.ops import ClaimedJob, Op, OpBuffer, parse_claimed
from streams.registry import Registry
from streams.scripts import Call
from streams.settings import Settings
from streams.worker_loops import Loops
from streams.worker_metrics import WorkerMetrics

log = logging.getLogger("jobstream.worker")
BLOCK_MS = 500


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
        self.redis = aioredis.Redis.from_url(settings.redis_url, max_connections=64)
        self.blocking = aioredis.Redis.from_url(settings.redis_url, max_connections=2)
        self.client = Client(settings, redis=self.redis)
        self.scripts = self.client.scripts
        self.metrics = WorkerMetrics()
        self.metrics.concurrency.set(concurrency)
        self.metrics.in_flight.set_function(lambda: len(self.running))
        self.metrics_port = metrics_port
        self.metrics_server_port: int | None = None
        self.buffer = OpBuffer(
            self.redis, self.scripts, self.keys, self.name, settings.dead_ttl_s, self.metrics
        )
        self.running: dict[str, Running] = {}
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
                await self.buffer.wait_empty()
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

    async def _reader(self, send: MemoryObjectSendStream[ClaimedJob]) -> None:
        async with send:
            while not self.stopping:
                if self.free <= 0:
                    await self._wait_slot()
                    continue
                jobs = await self._claim(self.free)
                if not jobs:
                    if self.burst and await self._all_idle():
                        break
                    jobs = await self._block_and_claim()
                for job in jobs:
                    self.free -= 1
                    self.started_jobs += 1
                    self.running[job.job_id] = Running(job)
                    await send.send(job)

    async def _claim(self, n: int) -> list[ClaimedJob]:
        per, extra = divmod(n, len(self.queues))
        calls: list[Call] = []
        for i, q in enumerate(self.queues):
            count = per + (1 if i < extra else 0)
            if count:
                args = [self.name, count, self.settings.aging_medium_ms, self.settings.aging_low_ms]
                calls.append(("claim", self.keys.queue(q).prefix, args))
        return self._parse(calls, await self._retrying(self.scripts.batch, calls))

    def _parse(self, calls: list[Call], results: list[Any]) -> list[ClaimedJob]:
        return [
            job
            for (_, prefix, _), flat in zip(calls, results)
            for job in parse_claimed(prefix.split("{", 1)[1][:-1], flat)
        ]

    async def _block_and_claim(self) -> list[ClaimedJob]:
        streams = {s: ">" for q in self.queues for s in self.keys.queue(q).ready_all}
        resp = await self._retrying(
            self.blocking.xreadgroup, "workers", self.name, streams, count=1, block=BLOCK_MS
        )
        if not resp:
            return []
        calls: list[Call] = []
        for stream, entries in resp:
            stream_s = stream.decode()
            queue = stream_s.split("{", 1)[1].split("}", 1)[0]
            prio = stream_s.rsplit(":", 1)[1]
            flat: list[Any] = []
            for entry_id, fields in entries:
                field, value = next(iter(fields.items()), (b"", b""))
                flat += [prio, entry_id, field, value]
            calls.append(("claim", self.keys.queue(queue).prefix, [self.name, 0, 0, 0, *flat]))
        return self._parse(calls, await self._retrying(self.scripts.batch, calls))

    async def _retrying(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        delay = 0.05
        while True:
            try:
                return await fn(*args, **kwargs)
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                if self.stopping:
                    return []
                log.warning("redis unavailable (%s); retrying in %.2fs", type(exc).__name__, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except aioredis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost its data (restart): recreate and go on
                    await self.client.ensure_groups(self.queues)
                    continue
                # OOM, READONLY (fail-over), BUSY...: a server condition; wait it out
                log.error("redis refused a claim (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _all_idle(self) -> bool:
        if self.running or self.free < self.concurrency or not self.buffer.empty:
            return False
        await self.buffer.wait_empty()
        calls: list[Call] = [("idle", self.keys.queue(q).prefix, []) for q in self.queues]
        results = await self.scripts.batch(calls)
        return all(sum(int(x) for x in r) == 0 for r in results)

    # -- running ---------------------------------------------------------------

    async def _runner(self, receive: MemoryObjectReceiveStream[ClaimedJob]) -> None:
        async with receive:
            async for job in receive:
                running = self.running[job.job_id]
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
                self.running.pop(job.job_id, None)
                self.free += 1
                self._slot_freed.set()
