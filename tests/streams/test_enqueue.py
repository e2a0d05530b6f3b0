"""Producer behaviour: ids, events, dedup, validation at the door, no secrets in errors."""

from __future__ import annotations

import msgspec
import pytest
import redis.asyncio as aioredis

from handlers.demo import registry
from streams.client import Client, JobRequest
from streams.errors import EnqueueError, PayloadTooLarge
from streams.events import JobQueued
from streams.keys import Keys
from streams.settings import Settings
from tests.streams.helpers import events_of

pytestmark = pytest.mark.anyio


async def test_enqueue_appends_queued_event(settings: Settings, redis: aioredis.Redis) -> None:
    async with Client(settings, registry=registry()) as c:
        job_id = await c.enqueue("demo.sleep", {"seconds": 0.1}, priority="high")
    (event,) = await events_of(redis, settings)
    assert isinstance(event, JobQueued)
    assert (event.job_id, event.kind, event.priority, event.attempt) == (
        job_id, "demo.sleep", "high", 1
    )  # fmt: skip
    assert msgspec.json.decode(event.payload) == {"seconds": 0.1}
    assert event.at > 1_600_000_000_000 and event.timeout_s == 600


async def test_enqueue_many_is_ordered_and_spans_queues(
    settings: Settings, redis: aioredis.Redis
) -> None:
    reqs = [JobRequest(kind="demo.noop", queue=f"q{i % 3}") for i in range(30)]
    async with Client(settings) as c:
        ids = await c.enqueue_many(reqs)
        assert len(set(ids)) == 30
        assert await c.queues() == ["q0", "q1", "q2"]
    for q in ("q0", "q1", "q2"):
        evs = await events_of(redis, settings, q)
        assert [e.job_id for e in evs] == ids[int(q[1]) :: 3]


async def test_dedup_key_and_explicit_id_are_idempotent(
    settings: Settings, redis: aioredis.Redis
) -> None:
    async with Client(settings) as c:
        a = await c.enqueue("demo.noop", {}, dedup_key="welcome:42")
        b = await c.enqueue("demo.noop", {}, dedup_key="welcome:42")
        c1 = await c.enqueue("demo.noop", {}, job_id="fixed-1")
        c2 = await c.enqueue("demo.noop", {}, job_id="fixed-1")
    assert a == b and c1 == c2 == "fixed-1"
    assert len(await events_of(redis, settings)) == 2


async def test_refused_at_the_door(settings: Settings, redis: aioredis.Redis) -> None:
    small = msgspec.structs.replace(settings, payload_cap_bytes=100)
    async with Client(small, registry=registry()) as c:
        with pytest.raises(PayloadTooLarge, match="over the cap"):
            await c.enqueue("demo.noop", {"x": "y" * 200})
        with pytest.raises(EnqueueError, match=r"invalid.*\$\.seconds"):
            await c.enqueue("demo.sleep", {"seconds": "soon"})
        with pytest.raises(EnqueueError, match="unknown job kind"):
            await c.enqueue("demo.nope", {})
        with pytest.raises(EnqueueError, match="priority"):
            await c.enqueue("demo.noop", {}, priority="urgent")
        with pytest.raises(ValueError, match="queue name"):
            await c.enqueue("demo.noop", {}, queue="a}b")
        with pytest.raises(EnqueueError, match="delay must be"):
            await c.enqueue("demo.noop", {}, delay_s=1e13)
        with pytest.raises(EnqueueError, match="delay must be"):
            await c.enqueue("demo.noop", {}, delay_s=float("nan"))
        with pytest.raises(EnqueueError, match="run_at must be"):
            await c.enqueue("demo.noop", {}, run_at_ms=10**16)
        with pytest.raises(EnqueueError, match="max_attempts"):
            await c.enqueue("demo.noop", {}, max_attempts=10**9)
    assert await events_of(redis, settings) == []


async def test_delayed_job_waits_in_delayed_set(settings: Settings, redis: aioredis.Redis) -> None:
    async with Client(settings) as c:
        job_id = await c.enqueue("demo.noop", {}, delay_s=60)
        (event,) = await events_of(redis, settings)
        assert isinstance(event, JobQueued) and event.run_at >= event.at + 59_000
        qk = Keys(settings.namespace).queue("default")
        assert await redis.zscore(qk.delayed, job_id) == event.run_at
        assert await c.promote_due("default") == (0, event.run_at)
        assert await c.promote_due("default", now_ms=event.run_at) == (1, -1)
    queued = (await events_of(redis, settings))[-1]
    assert isinstance(queued, JobQueued) and queued.run_at <= queued.at


async def test_no_secret_in_connection_errors(settings: Settings) -> None:
    bad = msgspec.structs.replace(settings, redis_url="redis://app:hunter2secret@127.0.0.1:1/0")
    assert "hunter2secret" not in repr(bad) and "hunter2secret" not in str(bad)
    async with Client(bad) as c:
        with pytest.raises(aioredis.ConnectionError) as info:
            await c.enqueue("demo.noop", {})
    assert "hunter2secret" not in str(info.value)
