"""Getting jobs for one worker: claims, the blocking wait, foreign jobs, recovery.

Owns:
- the claim calls (one ``claim`` script call per queue, pipelined), never asking for
  more jobs than the worker has free slots;
- the blocking wait (XREADGROUP BLOCK across every ready stream): entries it
  delivers beyond the free slots wait in a local backlog, unstarted (state
  ``queued``), and are started when slots free up, so a job's clock never starts
  before it can run; on stop the backlog is released to the ready streams;
- adopting foreign producers' jobs (``job`` field): validated here with msgspec
  and the client's own door checks, then enqueued by ``adopt.lua``, their raw
  payload bytes untouched; an invalid one goes to the deadletter stream;
- recovery: the worker's Redis client never replays a command by itself (a
  replayed claim would start jobs nobody runs); after a connection error during a
  claim the worker re-reads its own pending entries (XREADGROUP ... 0) and claims
  those it does not know, which the claim script hands out again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import anyio
import msgspec
import redis.asyncio as aioredis

from streams.client import Client, JobRequest
from streams.errors import EnqueueError
from streams.keys import READY_GROUP, Keys
from streams.ops import ClaimedJob, parse_claimed
from streams.scripts import Call, Scripts
from streams.settings import Settings

log = logging.getLogger("jobstream.worker")
BLOCK_MS = 500
REDIS_DOWN = (aioredis.ConnectionError, aioredis.TimeoutError, OSError)
T = TypeVar("T")
Delivered = tuple[str, str, bytes, bytes, bytes]  # queue, priority, entry id, field, value


class ForeignJob(msgspec.Struct):
    """What a foreign producer XADDs as field ``job`` (a job.queued object, see docs/)."""

    type: Literal["job.queued"]
    job_id: str
    kind: str
    payload: msgspec.Raw = msgspec.Raw(b"{}")
    max_attempts: int = 3
    timeout_s: float = 300.0
    dedup_key: str | None = None


_decode_foreign = msgspec.json.Decoder(ForeignJob).decode


def _queue_of(stream: str) -> tuple[str, str]:
    """(queue, priority) of a ready stream key ``ns:{queue}:ready:priority``."""
    return stream.split("{", 1)[1].split("}", 1)[0], stream.rsplit(":", 1)[1]


class Claimer:
    """Claims jobs for one worker (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        blocking: aioredis.Redis,
        queues: Sequence[str],
        consumer: str,
        known: Callable[[], set[tuple[str, str, str]]],
    ) -> None:
        self.settings, self.client, self.blocking = settings, client, blocking
        self.queues, self.consumer, self._known = list(queues), consumer, known
        self.keys: Keys = client.keys
        self.scripts: Scripts = client.scripts
        self.backlog: list[Delivered] = []
        self._recover = False
        self._delay = 0.05

    def _streams(self, position: str) -> dict[Any, Any]:
        return {s: position for q in self.queues for s in self.keys.queue(q).ready_all}

    async def claim(self, n: int) -> list[ClaimedJob]:
        """Start up to ``n`` jobs without waiting: recovered, then backlog, then new ones."""
        if self._recover:
            await self._recover_pending()
        if self.backlog:
            taken, self.backlog = self.backlog[:n], self.backlog[n:]
            return await self._claim_given(taken)
        per, extra = divmod(n, len(self.queues))
        aging = [self.settings.aging_medium_ms, self.settings.aging_low_ms]
        calls: list[Call] = [
            ("claim", self.keys.queue(q).prefix, [self.consumer, per + (i < extra), *aging])
            for i, q in enumerate(self.queues)
            if per + (i < extra)
        ]
        return await self._run(calls)

    async def wait_and_claim(self, n: int) -> list[ClaimedJob]:
        """Block until something is ready (at most BLOCK_MS), then start up to ``n`` jobs."""
        streams: dict[Any, Any] = {
            s: ">" for q in self.queues for s in self.keys.queue(q).ready_all
        }
        resp: Any = await self._guarded(
            self.blocking.xreadgroup(READY_GROUP, self.consumer, streams, count=1, block=BLOCK_MS)
        )
        for stream, entries in resp or []:
            queue, prio = _queue_of(stream.decode())
            for entry_id, fields in entries:
                field, value = next(iter(fields.items()), (b"", b""))
                self.backlog.append((queue, prio, entry_id, field, value))
        return await self.claim(n) if self.backlog else []

    async def release(self) -> None:
        """Put the unstarted backlog back on the ready streams (on stop)."""
        backlog, self.backlog = self.backlog, []
        try:
            await self.scripts.batch(self._per_queue("release", [self.consumer], backlog))
        except (*REDIS_DOWN, aioredis.ResponseError) as exc:
            log.warning("could not release %d entries (%s); the reaper will", len(backlog), exc)

    def _per_queue(self, script: str, head: list[Any], delivered: list[Delivered]) -> list[Call]:
        """One call of ``script`` per queue with its entries (priority, id, field, value)."""
        by_queue: dict[str, list[Any]] = {}
        for queue, prio, entry, field, value in delivered:
            by_queue.setdefault(queue, []).extend([prio, entry, field, value])
        return [(script, self.keys.queue(q).prefix, [*head, *f]) for q, f in by_queue.items()]

    async def _guarded(self, call: Awaitable[T]) -> T | None:
        """Await ``call``; on a Redis outage or refusal, back off and return None."""
        try:
            return await call
        except REDIS_DOWN as exc:
            await self._down(exc)
        except aioredis.ResponseError as exc:
            await self._refused(exc)
        return None

    async def _claim_given(self, given: list[Delivered]) -> list[ClaimedJob]:
        jobs = await self._run(self._per_queue("claim", [self.consumer, 0, 0, 0], given))
        if self._recover:  # not claimed: the recovery re-reads them from the PEL
            self.backlog = []
        return jobs

    async def _run(self, calls: list[Call]) -> list[ClaimedJob]:
        results = await self._guarded(self.scripts.batch(calls))
        if results is None:
            return []
        self._delay = 0.05
        jobs: list[ClaimedJob] = []
        foreign: list[Delivered] = []
        for (_, prefix, _), (flat, raw_foreign) in zip(calls, results):
            queue = prefix.split("{", 1)[1][:-1]
            jobs += parse_claimed(queue, flat)
            for i in range(0, len(raw_foreign), 3):
                prio, entry, raw = raw_foreign[i : i + 3]
                foreign.append((queue, prio.decode(), entry, b"job", raw))
        if foreign:
            await self._adopt(foreign)
        return jobs

    async def _adopt(self, foreign: list[Delivered]) -> None:
        calls: list[Call] = []
        for queue, prio, entry, _, raw in foreign:
            head = [self.settings.dedup_ttl_s, prio, entry]
            try:
                job = _decode_foreign(raw)
                req = JobRequest(
                    kind=job.kind, payload=bytes(job.payload), queue=queue, job_id=job.job_id,
                    max_attempts=job.max_attempts, timeout_s=job.timeout_s,
                    dedup_key=job.dedup_key,
                )  # fmt: skip
                _, args = self.client._prepare(req)
                job_id, kind, _p, _r, maxa, timeout, dedup, payload, _x = args
                ok = [*head, "ok", job_id, kind, maxa, timeout, dedup, payload]
                calls.append(("adopt", self.keys.queue(queue).prefix, ok))
            except (msgspec.DecodeError, msgspec.ValidationError, EnqueueError, ValueError) as exc:
                log.warning("foreign job on %s refused: %s", queue, exc)
                calls.append(
                    ("adopt", self.keys.queue(queue).prefix, [*head, "bad", raw, str(exc)])
                )
        try:
            await self.scripts.batch(calls)
        except (*REDIS_DOWN, aioredis.ResponseError) as exc:
            log.warning("adopting foreign jobs failed (%s); will retry", exc)
            self._recover = True

    async def _recover_pending(self) -> None:
        """Re-read this consumer's own pending entries and queue those not known locally."""
        streams: dict[Any, Any] = {
            s: "0" for q in self.queues for s in self.keys.queue(q).ready_all
        }
        resp: Any = await self._guarded(
            self.client.redis.xreadgroup(READY_GROUP, self.consumer, streams, count=10_000)
        )
        if resp is None:
            return
        known = self._known()
        queued = {(q, p, e.decode()) for q, p, e, _, _ in self.backlog}
        for stream, entries in resp or []:
            queue, prio = _queue_of(stream.decode())
            for entry_id, fields in entries:
                key = (queue, prio, entry_id.decode())
                if fields and key not in known and key not in queued:
                    field, value = next(iter(fields.items()))
                    self.backlog.append((queue, prio, entry_id, field, value))
        self._recover = False
        log.info("recovered this worker's pending entries: %d to claim", len(self.backlog))

    async def _down(self, exc: BaseException) -> None:
        log.warning("redis unavailable (%s); retrying in %.2fs", type(exc).__name__, self._delay)
        self._recover = True
        await anyio.sleep(self._delay)
        self._delay = min(self._delay * 2, 5.0)

    async def _refused(self, exc: aioredis.ResponseError) -> None:
        if "NOGROUP" in str(exc):  # Redis lost its data (restart): recreate and go on
            await self.client.ensure_groups(self.queues)
            return
        # OOM, READONLY (fail-over), BUSY...: a server condition; wait it out
        log.error("redis refused a claim (%s); retrying in %.2fs", exc, self._delay)
        self._recover = True
        await anyio.sleep(self._delay)
        self._delay = min(self._delay * 2, 5.0)
