"""Promotion of due delayed jobs: several promoters at once promote each job exactly once."""

from __future__ import annotations

import time
from collections import defaultdict

import anyio
import pytest
import redis.asyncio as aioredis

from streams.client import Client, JobRequest
from streams.keys import Keys
from streams.scheduler import Scheduler
from streams.settings import Settings
from tests.scheduler.conftest import queued_events

pytestmark = pytest.mark.anyio

JOBS_PER_QUEUE = 300
QUEUES = ("default", "mail")


async def test_due_jobs_are_promoted_once_with_several_promoters(
    settings: Settings, redis: aioredis.Redis
) -> None:
    future_ms = int(time.time() * 1000) + 3_600_000
    async with Client(settings) as producer:
        for q in QUEUES:
            await producer.enqueue_many(
                JobRequest(kind="demo.noop", queue=q, delay_s=60, job_id=f"{q}-{i}")
                for i in range(JOBS_PER_QUEUE)
            )
        promoted, next_due_ms = await producer.promote_due("default")  # Redis time: not due
        assert promoted == 0 and next_due_ms > 0
        totals: list[int] = []
        clients = [Client(settings) for _ in range(6)]

        async def scheduler_promoter(c: Client) -> None:
            totals.append(await Scheduler(c, []).promote(now_ms=future_ms))

        async def raw_promoter(c: Client, q: str) -> None:
            for _ in range(3):  # small batches so the promoters interleave
                totals.append((await c.promote_due(q, now_ms=future_ms, limit=50))[0])

        async with anyio.create_task_group() as tg:
            for i, c in enumerate(clients):
                tg.start_soon(scheduler_promoter, c)
                tg.start_soon(raw_promoter, c, QUEUES[i % 2])
        for c in clients:
            await c.aclose()

        assert sum(totals) == JOBS_PER_QUEUE * len(QUEUES)
        keys = Keys(settings.namespace)
        for q in QUEUES:
            qk = keys.queue(q)
            assert await redis.zcard(qk.delayed) == 0
            ready = sum([await redis.xlen(s) for s in qk.ready_all])
            assert ready == JOBS_PER_QUEUE
            by_job: dict[str, list[str]] = defaultdict(list)
            for e in await queued_events(redis, settings, queue=q):
                by_job[e.job_id].append(e.reason)
            assert len(by_job) == JOBS_PER_QUEUE
            # the initial job.queued (delayed) and exactly one more when promoted
            assert all(reasons == ["enqueue", "enqueue"] for reasons in by_job.values())
        info = await producer.get_job("mail-7")
        assert info is not None and info.state == "queued"
