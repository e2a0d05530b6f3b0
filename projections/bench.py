"""Projector throughput measurement, callable by the bench harness.

Owns: :func:`measure_backlog_apply`: build a backlog of ``n_events`` realistic
events (queued, started, progress, completed per job) in a fresh namespace,
then time one projector applying all of it into a fresh Postgres schema.
Invariant: leaves nothing behind (namespace keys and schema are removed).

Run: ``python -m projections.bench [n_events]``.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import TypedDict

import anyio
import msgspec
import redis.asyncio as aioredis

from projections import db
from projections.projector import Projector, ProjectorConfig
from streams.events import JobCompleted, JobProgress, JobQueued, JobStarted, encode_event
from streams.keys import Keys
from streams.settings import Settings


class _Job(TypedDict):
    job_id: str
    queue: str
    kind: str
    attempt: int


async def _fill(client: aioredis.Redis, keys: Keys, n_events: int, queues: int) -> None:
    s, us = await client.time()
    t0 = int(s) * 1000 + int(us) // 1000
    n_jobs = max(1, n_events // 4)
    for start in range(0, n_jobs, 500):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n_jobs, start + 500)):
                q = f"bench{i % queues}"
                j = _Job(job_id=f"b{i}", queue=q, kind="bench", attempt=1)
                stream = keys.queue(q).events
                for e in (
                    JobQueued(**j, at=t0, payload=msgspec.Raw(b'{"i":1}'), run_at=t0),
                    JobStarted(**j, at=t0 + 5, worker="w"),
                    JobProgress(**j, at=t0 + 6, fraction=0.5),
                    JobCompleted(**j, at=t0 + 9, duration_ms=4.0, result=msgspec.Raw(b"null")),
                ):
                    pipe.xadd(stream, {"e": encode_event(e)})
            await pipe.execute()
    await client.sadd(keys.queues, *(f"bench{i}" for i in range(queues)))


async def measure_backlog_apply(
    settings: Settings, n_events: int = 100_000, *, queues: int = 1, batch_size: int = 2000
) -> float:
    """Events per second one projector applies from a backlog of ``n_events``."""
    ns = f"bench{uuid.uuid4().hex[:8]}"
    schema = db.validate_schema(ns)
    s = msgspec.structs.replace(settings, namespace=ns)
    client = aioredis.Redis.from_url(s.redis_url)
    try:
        await _fill(client, Keys(ns), n_events, queues)
        await db.migrate_settings(s, schema)
        config = ProjectorConfig(schema=schema, consumer="bench", batch_size=batch_size)
        async with Projector(s, config) as projector:
            started = time.perf_counter()
            await projector.run(until_caught_up=True)
            elapsed = time.perf_counter() - started
        return (n_events // 4) * 4 / elapsed
    finally:
        keys = [k async for k in client.scan_iter(match=f"{ns}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
        await client.aclose()
        conn = await db.connect(s, schema)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rate = anyio.run(measure_backlog_apply, Settings.from_env(), n)
    print(f"projector applied {n} events at {rate:,.0f} events/s")


if __name__ == "__main__":
    main()
