"""Interleavings found in review: each is one script sequence a real race produces."""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from streams.claimer import Claimer
from streams.client import Client
from streams.events import JobCanceled, JobStarted
from streams.keys import Keys
from streams.registry import Handler, Registry
from streams.scripts import Scripts
from streams.settings import Settings
from streams.worker import Worker
from tests.streams.helpers import events_of, run_burst, tags, wait_for

pytestmark = pytest.mark.anyio


async def _claim_as(redis: aioredis.Redis, prefix: str, consumer: str, n: int = 10) -> list[Any]:
    jobs, _ = await Scripts(redis).call("claim", prefix, [consumer, n, 60_000, 60_000])
    return list(jobs)


async def test_handback_of_a_job_being_canceled_cancels_it(
    settings: Settings, redis: aioredis.Redis
) -> None:
    qk = Keys(settings.namespace).queue("default")
    async with Client(settings) as c:
        job_id = await c.enqueue("demo.noop", {})
        await c.ensure_groups(["default"])
        flat = await _claim_as(redis, qk.prefix, "w1")
        assert await c.cancel(job_id) == "cancelling"
    entry, prio, attempt = flat[0].decode(), flat[1].decode(), flat[5]
    ops = msgspec.json.encode([["handback", job_id, entry, prio, attempt, "", "", "", ""]])
    assert await Scripts(redis).call("finish", qk.prefix, ["w1", 3600, ops, 3600]) == [1]
    evs = await events_of(redis, settings, job_id=job_id)
    assert tags(evs) == ["job.queued", "job.started", "job.canceled"]
    assert await redis.xlen(qk.ready("medium")) == 0


async def test_unadopted_foreign_job_of_a_dead_worker_is_put_back(
    settings: Settings, redis: aioredis.Redis
) -> None:
    qk = Keys(settings.namespace).queue("default")
    async with Client(settings) as c:
        await c.ensure_groups(["default"])
    job = b'{"type":"job.queued","job_id":"f-9","kind":"demo.noop"}'
    await redis.xadd(qk.ready("medium"), {"job": job})
    await redis.xreadgroup("workers", "dead-worker", {qk.ready("medium"): ">"}, count=1)
    later = int(time.time() * 1000) + 60_000
    n = await Scripts(redis).call("reclaim", qk.prefix, [0, 100, 3600, 1000], now_ms=later)
    assert n == 1
    await run_burst(settings)
    assert tags(await events_of(redis, settings, job_id="f-9"))[-1] == "job.completed"


async def test_explicit_job_id_is_not_run_again_after_completion(
    settings: Settings, redis: aioredis.Redis
) -> None:
    async with Client(settings) as c:
        await c.enqueue("demo.noop", {}, job_id="order-42")
        await run_burst(settings)
        assert await c.enqueue("demo.noop", {}, job_id="order-42") == "order-42"
    assert tags(await events_of(redis, settings, job_id="order-42")) == [
        "job.queued",
        "job.started",
        "job.completed",
    ]


async def test_blocking_read_never_starts_more_than_free_slots(
    settings: Settings, redis: aioredis.Redis
) -> None:
    async with Client(settings) as c:
        await c.ensure_groups(["default"])
        ids = [await c.enqueue("demo.noop", {}, priority=p) for p in ("high", "medium", "low")]
        worker = Worker(settings, Registry([]).merged(_noop_registry()), concurrency=1)
        claimer = worker.claimer
        jobs = await claimer.wait_and_claim(1)
        assert [j.job_id for j in jobs] == [ids[0]] and len(claimer.backlog) == 2
        started = [e for e in await events_of(redis, settings) if isinstance(e, JobStarted)]
        assert [e.job_id for e in started] == [ids[0]]
        await claimer.release()  # a stopping worker gives the unstarted ones back
        await worker.redis.aclose()
        await worker.blocking.aclose()
    await run_burst(settings)
    for job_id in ids[1:]:
        assert tags(await events_of(redis, settings, job_id=job_id)) == [
            "job.queued",
            "job.started",
            "job.completed",
        ]


async def test_claim_whose_reply_was_lost_is_recovered(
    settings: Settings, redis: aioredis.Redis
) -> None:
    qk = Keys(settings.namespace).queue("default")
    async with Client(settings) as c:
        job_id = await c.enqueue("demo.noop", {})
        await c.ensure_groups(["default"])
        lost = await _claim_as(redis, qk.prefix, "w-recover")  # started; the reply "lost"
        assert lost[2] == job_id.encode()
        claimer = Claimer(settings, c, redis, ["default"], "w-recover", set)
        claimer._recover = True  # what a connection error during a claim sets
        jobs = await claimer.claim(4)
    assert [j.job_id for j in jobs] == [job_id]
    assert tags(await events_of(redis, settings, job_id=job_id)) == ["job.queued", "job.started"]


async def test_cancel_wins_over_a_handler_whose_cleanup_raises(
    settings: Settings, redis: aioredis.Redis
) -> None:
    class Empty(msgspec.Struct):
        pass

    async def stubborn(ctx: Any, p: Empty) -> None:
        try:
            await anyio.sleep(60)
        finally:
            raise ConnectionResetError("cleanup failed")

    reg = Registry([Handler("stubborn", Empty, stubborn)])
    worker = Worker(settings, reg, concurrency=2)
    async with Client(settings) as c, anyio.create_task_group() as tg:
        job_id = await c.enqueue("stubborn", {})
        tg.start_soon(worker.run, name="worker")

        async def started() -> bool:
            return "job.started" in tags(await events_of(redis, settings, job_id=job_id))

        await wait_for(started)
        assert await c.cancel(job_id) == "cancelling"

        async def ended() -> bool:
            return tags(await events_of(redis, settings, job_id=job_id))[-1] != "job.started"

        await wait_for(ended)
        worker.stop()
    last = (await events_of(redis, settings, job_id=job_id))[-1]
    assert isinstance(last, JobCanceled) and last.by == "operator"


def _noop_registry() -> Registry:
    from handlers.demo import registry

    return registry()
