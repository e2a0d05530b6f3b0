"""Worker behaviour: running, progress, retries with backoff, timeouts, priorities, bad input."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from handlers.demo import registry as demo_registry
from streams.client import Client, JobRequest
from streams.events import (
    JobCompleted,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRetryScheduled,
    JobStarted,
)
from streams.keys import Keys
from streams.registry import Backoff, Handler, Registry
from streams.scripts import Scripts
from streams.settings import Settings
from tests.streams.helpers import events_of, fast_registry, run_burst, tags

pytestmark = pytest.mark.anyio


class BigIntPayload(msgspec.Struct):
    """A payload with what Redis's cjson would mangle: a 64-bit int and an empty list."""

    id: int
    tags: list[str]
    y: float


async def test_burst_runs_every_demo_kind(settings: Settings, redis: aioredis.Redis) -> None:
    async with Client(settings, registry=fast_registry()) as c:
        noop = await c.enqueue("demo.noop", {})
        prog = await c.enqueue("demo.progress", {"steps": 5})
        flaky = await c.enqueue("demo.flaky", {"failures": 2})
        slept = await c.enqueue("demo.sleep", {"seconds": 0.05})
    await run_burst(settings)
    assert tags(await events_of(redis, settings, job_id=noop)) == [
        "job.queued", "job.started", "job.completed"
    ]  # fmt: skip
    progress = [
        e for e in await events_of(redis, settings, job_id=prog) if isinstance(e, JobProgress)
    ]
    assert [p.fraction for p in progress] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert progress[0].message == "step 1 of 5"
    evs = await events_of(redis, settings, job_id=flaky)
    assert [e.attempt for e in evs if isinstance(e, JobStarted)] == [1, 2, 3]
    done = evs[-1]
    assert isinstance(done, JobCompleted) and msgspec.json.decode(done.result) == {
        "succeeded_on_attempt": 3
    }
    last = (await events_of(redis, settings, job_id=slept))[-1]
    assert isinstance(last, JobCompleted) and last.duration_ms >= 50
    # nothing left behind: ready streams empty of undelivered work, job hashes gone
    assert not [k async for k in redis.scan_iter(match=f"{settings.namespace}:*:job:*")]


async def test_retries_back_off_exponentially(settings: Settings, redis: aioredis.Redis) -> None:
    reg = demo_registry(Backoff(base_s=10.0, factor=2.0, jitter=0.5))
    async with Client(settings, registry=reg) as c:
        job_id = await c.enqueue("demo.flaky", {"failures": 2})
        delays = []
        for _ in range(2):
            await run_burst(settings, reg)
            retry = (await events_of(redis, settings, job_id=job_id))[-1]
            assert isinstance(retry, JobRetryScheduled)
            delays.append(retry.delay_ms)
            # a test clock instead of a sleep: promote as if the retry were due
            assert (await c.promote_due("default", now_ms=retry.run_at))[0] == 1
        await run_burst(settings, reg)
    assert 5_000 <= delays[0] <= 10_000 and 10_000 <= delays[1] <= 20_000
    evs = await events_of(redis, settings, job_id=job_id)
    fails = [e for e in evs if isinstance(e, JobFailed)]
    assert [(f.attempt, f.will_retry, f.error_type) for f in fails] == [
        (1, True, "FlakyError"), (2, True, "FlakyError")
    ]  # fmt: skip
    assert [e.reason for e in evs if isinstance(e, JobQueued)] == ["enqueue", "retry", "retry"]
    assert isinstance(evs[-1], JobCompleted) and evs[-1].attempt == 3


async def test_exhausted_attempts_and_timeouts_are_dead(
    settings: Settings, redis: aioredis.Redis
) -> None:
    async with Client(settings, registry=fast_registry()) as c:
        flaky = await c.enqueue("demo.flaky", {"failures": 9}, max_attempts=2)
        slow = await c.enqueue("demo.sleep", {"seconds": 30}, timeout_s=0.2, max_attempts=1)
    await run_burst(settings)
    last = (await events_of(redis, settings, job_id=flaky))[-1]
    assert isinstance(last, JobFailed) and not last.will_retry and last.attempt == 2
    last = (await events_of(redis, settings, job_id=slow))[-1]
    assert isinstance(last, JobFailed) and last.error_type == "Timeout" and not last.will_retry
    dead = Keys(settings.namespace).queue("default").dead
    assert set(await redis.zrange(dead, 0, -1)) == {flaky.encode(), slow.encode()}
    async with Client(settings) as c:
        assert await c.retry(flaky) == "queued"
        assert await c.retry(flaky) == "queued"  # still queued: the state is returned
    evs = await events_of(redis, settings, job_id=flaky)
    requeued = evs[-1]
    assert isinstance(requeued, JobQueued) and requeued.reason == "operator"
    assert (requeued.attempt, requeued.max_attempts) == (3, 4)


async def test_strict_priority(settings: Settings, redis: aioredis.Redis) -> None:
    reqs = [JobRequest(kind="demo.noop", priority=p) for p in ("low", "medium", "high") * 4]
    async with Client(settings) as c:
        ids = await c.enqueue_many(reqs)
    await run_burst(settings, concurrency=1)
    prio = dict(zip(ids, [r.priority for r in reqs]))
    started = [
        prio[e.job_id] for e in await events_of(redis, settings) if isinstance(e, JobStarted)
    ]
    assert started == ["high"] * 4 + ["medium"] * 4 + ["low"] * 4


async def test_aging_serves_old_low_work_first(settings: Settings, redis: aioredis.Redis) -> None:
    async with Client(settings) as c:
        low = await c.enqueue("demo.noop", {}, priority="low")
        await c.enqueue_many([JobRequest(kind="demo.noop", priority="high") for _ in range(3)])
        await c.ensure_groups(["default"])
        prefix = Keys(settings.namespace).queue("default").prefix
        scripts = Scripts(redis)
        now = int(time.time() * 1000)
        # not old yet: high first
        fresh = await scripts.call("claim", prefix, ["w1", 1, 60_000, 60_000], now_ms=now)
        assert fresh[0][2] != low.encode()
        # the low entry has waited past its bound (a test clock 61 s ahead): it goes first
        aged = await scripts.call("claim", prefix, ["w1", 1, 60_000, 60_000], now_ms=now + 61_000)
        assert aged[0][2] == low.encode()


async def test_poison_entries_are_dead_lettered(settings: Settings, redis: aioredis.Redis) -> None:
    qk = Keys(settings.namespace).queue("default")
    async with Client(settings) as c:
        await c.ensure_groups(["default"])
        bad_payload = await c.enqueue("demo.sleep", b'{"seconds": "x"}')  # producer w/o registry
        unknown = await c.enqueue("demo.unknown", {})
        good = await c.enqueue("demo.noop", {})
    await redis.xadd(qk.ready("medium"), {"garbage": "\x00\xff"})
    await redis.xadd(qk.ready("medium"), {"id": "no-such-job"})
    await redis.xadd(qk.ready("high"), {"job": "{not json"})
    huge = {"type": "job.queued", "job_id": "huge", "queue": "default", "kind": "demo.noop",
            "attempt": 1, "payload": {"x": "y" * (settings.payload_cap_bytes + 1)}}  # fmt: skip
    await redis.xadd(qk.ready("low"), {"job": msgspec.json.encode(huge)})
    await run_burst(settings, demo_registry())
    assert await events_of(redis, settings, job_id="huge") == []  # refused at the door
    last = (await events_of(redis, settings, job_id=bad_payload))[-1]
    assert isinstance(last, JobFailed) and last.error_type == "PayloadDecodeError"
    assert "$.seconds" in last.message and not last.will_retry
    last = (await events_of(redis, settings, job_id=unknown))[-1]
    assert isinstance(last, JobFailed) and last.error_type == "UnknownKind"
    assert isinstance((await events_of(redis, settings, job_id=good))[-1], JobCompleted)
    letters: Any = await redis.xrange(qk.deadletter)
    errors = sorted(f[b"error"].decode() for _, f in letters)
    assert errors == [
        "JSON is malformed: object keys must be strings (byte 1)",
        "entry has neither an id nor a job field",
        "no such job: no-such-job",
        f"payload of 'demo.noop' is {len(msgspec.json.encode(huge['payload']))} bytes, "
        f"over the cap of {settings.payload_cap_bytes}",
    ]
    assert ("huge" in letters[-1][1][b"raw"].decode()) or any(
        b"huge" in f[b"raw"] for _, f in letters
    )


async def test_foreign_producer_xadds_a_job(settings: Settings, redis: aioredis.Redis) -> None:
    """A producer in another language XADDs a job.queued object (docs/events.schema.json)."""
    qk = Keys(settings.namespace).queue("default")
    await redis.sadd(Keys(settings.namespace).queues, "default")
    job = {"type": "job.queued", "job_id": "php-1", "queue": "default", "kind": "demo.progress",
           "attempt": 1, "payload": {"steps": 2}, "max_attempts": 2}  # fmt: skip
    await redis.xadd(qk.ready("high"), {"job": msgspec.json.encode(job)})
    await redis.xadd(qk.ready("high"), {"job": msgspec.json.encode(job)})  # a duplicate
    await run_burst(settings)
    assert tags(await events_of(redis, settings, job_id="php-1")) == [
        "job.queued", "job.started", "job.progress", "job.progress", "job.completed"
    ]  # fmt: skip


async def test_one_worker_serves_several_queues(settings: Settings, redis: aioredis.Redis) -> None:
    reqs = [JobRequest(kind="demo.noop", queue=q) for q in ("mail", "pdf", "mail", "other")]
    async with Client(settings) as c:
        ids = await c.enqueue_many(reqs)
    w = await run_burst(settings, concurrency=3, worker={"queues": ["mail", "pdf"]})
    assert w.started_jobs == 3
    for job_id, q in zip(ids, ("mail", "pdf", "mail")):
        assert tags(await events_of(redis, settings, q, job_id))[-1] == "job.completed"
    assert tags(await events_of(redis, settings, "other")) == ["job.queued"]


async def test_a_retried_claim_is_idempotent(settings: Settings, redis: aioredis.Redis) -> None:
    """A claim whose reply was lost is sent again: the job is handed out again, started once."""
    qk = Keys(settings.namespace).queue("default")
    async with Client(settings) as c:
        job_id = await c.enqueue("demo.noop", {})
        await c.ensure_groups(["default"])
    resp: Any = await redis.xreadgroup("workers", "w1", {qk.ready("medium"): ">"}, count=1)
    entry_id, fields = resp[0][1][0]
    args = ["w1", 0, 0, 0, "medium", entry_id, b"id", fields[b"id"]]
    scripts = Scripts(redis)
    first = await scripts.call("claim", qk.prefix, args)
    second = await scripts.call("claim", qk.prefix, args)
    assert first == second and first[0][2] == job_id.encode()
    assert tags(await events_of(redis, settings, job_id=job_id)) == ["job.queued", "job.started"]


async def test_foreign_jobs_keep_their_payload_bytes_and_are_validated(
    settings: Settings, redis: aioredis.Redis
) -> None:
    qk = Keys(settings.namespace).queue("default")
    await redis.sadd(Keys(settings.namespace).queues, "default")
    payload = b'{"id":1234567890123456789,"tags":[],"y":0.1}'
    good = b'{"type":"job.queued","job_id":"f-1","kind":"demo.noop","payload":' + payload + b"}"
    bad = b'{"type":"job.queued","job_id":"f-2","kind":"demo.noop","timeout_s":1e999}'
    await redis.xadd(qk.ready("medium"), {"job": good})
    await redis.xadd(qk.ready("medium"), {"job": bad})
    async with Client(settings) as c:
        await c.ensure_groups(["default"])
    seen: list[BigIntPayload] = []

    async def record(ctx: Any, p: BigIntPayload) -> None:
        seen.append(p)

    reg = Registry([Handler("demo.noop", BigIntPayload, record)])
    await run_burst(settings, reg)
    queued = (await events_of(redis, settings, job_id="f-1"))[0]
    assert isinstance(queued, JobQueued) and bytes(queued.payload) == payload
    assert seen == [BigIntPayload(id=1234567890123456789, tags=[], y=0.1)]
    assert await events_of(redis, settings, job_id="f-2") == []
    letters: Any = await redis.xrange(qk.deadletter)
    assert len(letters) == 1 and "timeout_s" in letters[0][1][b"error"].decode()
