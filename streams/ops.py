"""Batched writes of a worker: the ops of its jobs, flushed as one script call per queue.

Owns: :class:`ClaimedJob` (a started job as the claim script returns it), :class:`Op`
(one fenced write: complete, fail, progress, canceled, handback) and
:class:`OpBuffer`, which coalesces the ops of concurrent jobs and flushes them in
one round trip (one ``finish`` script call per queue, pipelined).

Invariant: ops of one job are flushed in the order they were added (a progress op
never lands after its job's completion).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import redis.asyncio as aioredis

from streams.keys import Keys
from streams.scripts import Scripts
from streams.worker_metrics import WorkerMetrics

log = logging.getLogger("jobstream.worker")
_encode = msgspec.json.Encoder().encode


class ClaimedJob(msgspec.Struct, array_like=True):
    """A job the claim script started for this worker (its 9 returned fields)."""

    entry: str
    priority: str
    job_id: str
    kind: str
    payload: bytes
    attempt: int
    max_attempts: int
    timeout_s: float
    enqueued_ms: int
    queue: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """(queue, priority, entry): unique among a worker's jobs (entry ids repeat across
        streams, and a job id can come back as a new entry after a reclaim)."""
        return (self.queue, self.priority, self.entry)


def parse_claimed(queue: str, flat: list[Any]) -> list[ClaimedJob]:
    """Turn the claim script's flat reply into jobs."""
    jobs = []
    for i in range(0, len(flat), 9):
        entry, prio, job_id, kind, payload, attempt, maxa, timeout, enq = flat[i : i + 9]
        jobs.append(
            ClaimedJob(
                entry.decode(),
                prio.decode(),
                job_id.decode(),
                kind.decode(),
                payload,
                int(attempt),
                int(maxa),
                float(timeout),
                int(enq),
                queue,
            )
        )
    return jobs


class Op(msgspec.Struct, array_like=True):
    """One fenced write for one job (see streams/lua/finish.lua for the argument meanings).

    All arguments are strings except ``attempt``; a batch of ops travels as one JSON array.
    """

    op: str
    job: ClaimedJob
    a1: str = ""
    a2: str = ""
    a3: str = ""
    a4: str = ""

    def args(self) -> list[Any]:
        j = self.job
        return [
            self.op,
            j.job_id,
            j.entry,
            j.priority,
            j.attempt,
            self.a1,
            self.a2,
            self.a3,
            self.a4,
        ]


class OpBuffer:
    """Collects ops and writes them in batches; ``flush_forever`` is the flusher task."""

    def __init__(
        self,
        redis: aioredis.Redis,
        scripts: Scripts,
        keys: Keys,
        consumer: str,
        dead_ttl_s: int,
        metrics: WorkerMetrics | None = None,
        dedup_ttl_s: int = 24 * 3600,
    ) -> None:
        self._redis, self._scripts, self._keys = redis, scripts, keys
        self._consumer, self._dead_ttl_s = consumer, dead_ttl_s
        self._dedup_ttl_s = dedup_ttl_s
        self.metrics = metrics or WorkerMetrics()
        self._ops: list[Op] = []
        self._writing: list[Op] = []
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self.fenced = 0
        self.flushed = 0

    def add(self, op: Op) -> None:
        self._ops.append(op)
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    @property
    def empty(self) -> bool:
        return not self._ops and self._idle.is_set()

    async def wait_empty(self) -> None:
        """Wait until every op added so far is written."""
        while not self.empty:
            await self._idle.wait()

    async def flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            await anyio.lowlevel.checkpoint()  # runners finishing now join this flush
            self._wake = anyio.Event()
            await self.flush()

    def keys(self) -> set[tuple[str, str, str]]:
        """Jobs whose outcome is buffered or being written (their entries are still pending)."""
        return {op.job.key for op in (*self._ops, *self._writing) if op.op != "progress"}

    async def flush(self) -> None:
        """Write every buffered op now (retrying on connection and server errors)."""
        ops, self._ops = self._ops, []
        self._writing = ops
        if not ops:
            self._idle.set()
            return
        by_queue: dict[str, list[Op]] = {}
        for op in ops:
            by_queue.setdefault(op.job.queue, []).append(op)
        delay = 0.05
        while True:
            try:
                await self._write(by_queue)
                break
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                log.warning("flush failed (%s); retrying in %.2fs", type(exc).__name__, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except aioredis.ResponseError as exc:
                # OOM, READONLY (fail-over)...: retry; the fence makes a replayed op harmless
                log.error("redis refused a flush (%s); retrying in %.2fs", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._writing = []
        if not self._ops:
            self._idle.set()

    async def _write(self, by_queue: dict[str, list[Op]]) -> None:
        calls = [
            (
                "finish",
                self._keys.queue(queue).prefix,
                [
                    self._consumer,
                    self._dead_ttl_s,
                    _encode([op.args() for op in ops]),
                    self._dedup_ttl_s,
                ],
            )
            for queue, ops in by_queue.items()
        ]
        results = await self._scripts.batch(calls)
        m = self.metrics
        for (queue, ops), res in zip(by_queue.items(), results):
            self.flushed += len(ops)
            m.flush_batch.observe(len(ops))
            for op, ok in zip(ops, res):
                if ok:
                    m.applied(queue, op.job.kind, op.op)
                else:
                    self.fenced += 1
                    m.fenced.inc()
                    log.warning(
                        "lease lost: %s of job %s (attempt %d) on %s not written",
                        op.op,
                        op.job.job_id,
                        op.job.attempt,
                        queue,
                    )
