"""Cancel of queued, delayed and running jobs."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

from streams.client import Client
from streams.events import JobCanceled, JobStarted
from streams.keys import Keys
from streams.settings import Settings
from streams.worker import Worker
from tests.streams.helpers import events_of, fast_registry, run_burst, tags, wait_for

pytestmark = pytest.mark.anyio


async def test_cancel_queued_and_delayed(settings: Settings, redis: aioredis.Redis) -> None:
    async with Client(settings) as c:
        queued = await c.enqueue("demo.noop", {})
        delayed = await c.enqueue("demo.noop", {}, delay_s=3600)
        kept = await c.enqueue("demo.noop", {})
        assert await c.cancel(queued, by="test", reason="changed my mind") == "canceled"
        assert await c.cancel(delayed) == "canceled"
        assert await c.cancel(queued) == "terminal"
        assert await c.cancel("nope") == "missing"
    await run_burst(settings)
    assert tags(await events_of(redis, settings, job_id=queued)) == ["job.queued", "job.canceled"]
    assert tags(await events_of(redis, settings, job_id=delayed)) == ["job.queued", "job.canceled"]
    assert tags(await events_of(redis, settings, job_id=kept))[-1] == "job.completed"
    canceled = (await events_of(redis, settings, job_id=queued))[-1]
    assert isinstance(canceled, JobCanceled) and canceled.by == "test"
    assert await redis.zcard(Keys(settings.namespace).queue("default").delayed) == 0


async def test_cancel_running_job(settings: Settings, redis: aioredis.Redis) -> None:
    worker = Worker(settings, fast_registry(), concurrency=4)
    async with Client(settings) as c, anyio.create_task_group() as tg:
        job_id = await c.enqueue("demo.sleep", {"seconds": 60})
        other = await c.enqueue("demo.sleep", {"seconds": 0.05})
        tg.start_soon(worker.run, name="worker")

        async def started() -> bool:
            evs = await events_of(redis, settings, job_id=job_id)
            return any(isinstance(e, JobStarted) for e in evs)

        await wait_for(started, what="the long job to start")
        assert await c.cancel(job_id, by="admin") == "cancelling"

        async def canceled() -> bool:
            return tags(await events_of(redis, settings, job_id=job_id))[-1] == "job.canceled"

        await wait_for(canceled, what="job.canceled")
        worker.stop()
    evs = await events_of(redis, settings, job_id=job_id)
    assert tags(evs) == ["job.queued", "job.started", "job.canceled"]
    assert tags(await events_of(redis, settings, job_id=other))[-1] == "job.completed"
    async with Client(settings) as c:
        assert (await c.get_job(job_id)).state == "canceled"  # type: ignore[union-attr]
        assert await c.retry(job_id) == "queued"
