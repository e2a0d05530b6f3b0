"""Realistic event sequences for projection tests, XADDed the way the worker appends them.

Owns: a :class:`Producer` writing encoded events to ``ns:{q}:events`` (field
``e``) and registering the queue in ``ns:queues``, and lifecycle scenarios
with ``at`` values based on the Redis server clock. Invariant: a job's events
are appended in lifecycle order; jobs are interleaved round-robin.
"""

from __future__ import annotations

import itertools
from typing import Final, TypedDict

import msgspec
import redis.asyncio as aioredis

from streams.events import (
    Event,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRetryScheduled,
    JobStarted,
    encode_event,
)
from streams.keys import Keys

# scenario -> final status
SCENARIOS: Final = {
    "completed": "completed",
    "retried": "completed",
    "dead": "failed",
    "canceled": "canceled",
    "running": "running",
    "scheduled": "scheduled",
    "queued": "queued",
}


class _Job(TypedDict):
    job_id: str
    queue: str
    kind: str


def lifecycle(job_id: str, queue: str, kind: str, scenario: str, t0: int) -> list[Event]:
    """The events of one job living through ``scenario``, starting at ``t0`` ms."""
    j = _Job(job_id=job_id, queue=queue, kind=kind)
    payload = msgspec.Raw(msgspec.json.encode({"n": job_id}))
    q = JobQueued(
        **j, attempt=1, at=t0, payload=payload, priority="high", run_at=t0, max_attempts=2
    )
    if scenario == "queued":
        return [q]
    if scenario == "scheduled":
        return [msgspec.structs.replace(q, run_at=t0 + 60_000)]
    if scenario == "canceled":
        return [q, JobCanceled(**j, attempt=1, at=t0 + 5, by="operator", reason="not needed")]
    start = JobStarted(**j, attempt=1, at=t0 + 10, worker="w1")
    prog = JobProgress(**j, attempt=1, at=t0 + 20, fraction=0.5, message="half")
    if scenario == "running":
        return [q, start, prog]
    if scenario == "completed":
        result = msgspec.Raw(b'{"ok":true}')
        return [
            q,
            start,
            prog,
            JobCompleted(**j, attempt=1, at=t0 + 40, result=result, duration_ms=30),
        ]
    fail1 = JobFailed(**j, attempt=1, at=t0 + 30, error_type="IOError", message="boom",
                      will_retry=True, duration_ms=20)  # fmt: skip
    retry = JobRetryScheduled(**j, attempt=2, at=t0 + 31, run_at=t0 + 100, delay_ms=69)
    requeue = JobQueued(**j, attempt=2, at=t0 + 100, payload=payload, priority="high",
                        run_at=t0 + 100, max_attempts=2, reason="retry")  # fmt: skip
    start2 = JobStarted(**j, attempt=2, at=t0 + 110, worker="w2")
    if scenario == "retried":
        done = JobCompleted(
            **j, attempt=2, at=t0 + 150, duration_ms=40, result=msgspec.Raw(b"null")
        )
        return [q, start, fail1, retry, requeue, start2, done]
    dead = JobFailed(**j, attempt=2, at=t0 + 150, error_type="IOError", message="boom again",
                     will_retry=False, duration_ms=40)  # fmt: skip
    return [q, start, fail1, retry, requeue, start2, dead]


def interleave(sequences: list[list[Event]]) -> list[Event]:
    """Round-robin merge keeping each sequence's order."""
    merged = itertools.zip_longest(*sequences)
    return [e for group in merged for e in group if e is not None]


class Producer:
    """Appends events to a namespace's events streams as the worker's scripts would."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client, self.keys = client, Keys(namespace)
        self.appended = 0  # events appended so far

    async def now_ms(self) -> int:
        s, us = await self.client.time()
        return int(s) * 1000 + int(us) // 1000

    async def jobs(
        self, n: int, queue: str = "default", kind: str = "demo", prefix: str = "j",
        scenarios: tuple[str, ...] = tuple(SCENARIOS),
    ) -> dict[str, str]:  # fmt: skip
        """Append ``n`` jobs cycling through ``scenarios``; return job id -> expected status."""
        t0 = await self.now_ms()
        seqs, expected = [], {}
        for i in range(n):
            scenario = scenarios[i % len(scenarios)]
            job_id = f"{prefix}{i}"
            seqs.append(lifecycle(job_id, queue, kind, scenario, t0 + i))
            expected[job_id] = SCENARIOS[scenario]
        await self.add(interleave(seqs))
        return expected

    async def add(self, events: list[Event], chunk: int = 1000) -> list[str]:
        """XADD every event (pipelined) and register its queue; return the entry ids."""
        ids: list[str] = []
        for i in range(0, len(events), chunk):
            async with self.client.pipeline(transaction=False) as pipe:
                for e in events[i : i + chunk]:
                    pipe.sadd(self.keys.queues, e.queue)
                    pipe.xadd(self.keys.queue(e.queue).events, {"e": encode_event(e)})
                replies = await pipe.execute()
            ids.extend(r.decode() for r in replies[1::2])
        self.appended += len(ids)
        return ids

    async def add_raw(self, queue: str, fields: dict[str, bytes]) -> str:
        """XADD an arbitrary entry (for dead-letter tests)."""
        await self.client.sadd(self.keys.queues, queue)
        stream = self.keys.queue(queue).events
        entry_id: bytes = await self.client.xadd(stream, fields)  # type: ignore[arg-type,assignment]
        return entry_id.decode()
