"""The scheduler against real Redis with a simulated clock: replicas, missed runs, overlap."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

import handlers
from handlers.schedules import SCHEDULES
from streams.client import Client
from streams.cron import CronError, CronSpec, MissedPolicy
from streams.scheduler import Scheduler, plan_ticks
from streams.settings import Settings
from tests.scheduler.conftest import SimClock, queued_events, tick_instants

pytestmark = pytest.mark.anyio


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


async def test_two_schedulers_fire_each_tick_exactly_once_over_a_day(
    settings: Settings, redis: aioredis.Redis
) -> None:
    specs = [
        CronSpec(name="hourly", cron="0 * * * *", kind="demo.noop"),
        CronSpec(name="quarter", cron="*/15 * * * *", kind="demo.noop", payload={"a": 1}),
        CronSpec(name="nightly", cron="0 2 * * *", kind="demo.noop"),
        CronSpec(name="morning", cron="30 9 * * mon-fri", kind="demo.noop"),
    ]
    clock = SimClock(utc(2024, 6, 2, 23, 59, 30))  # 2024-06-03 is a Monday
    rng = random.Random(4)
    async with Client(settings) as c1, Client(settings) as c2:
        a = Scheduler(c1, specs, now=clock)
        b = Scheduler(c2, specs, now=lambda: clock.now - timedelta(seconds=2))  # a lagging replica
        while clock.now < utc(2024, 6, 3, 23, 59, 50):
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.tick)
                tg.start_soon(b.tick)
            clock.advance(timedelta(seconds=rng.randint(5, 55)))
    events = await queued_events(redis, settings, prefix="cron:")
    counts = Counter(e.job_id for e in events)
    assert set(counts.values()) == {1}, [k for k, n in counts.items() if n > 1]
    expected = (
        {f"cron:hourly:20240603T{h:02d}00Z" for h in range(24)}
        | {f"cron:quarter:20240603T{h:02d}{m:02d}Z" for h in range(24) for m in (0, 15, 30, 45)}
        | {"cron:nightly:20240603T0200Z", "cron:morning:20240603T0930Z"}
    )
    assert set(counts) == expected
    assert all(e.dedup_key == e.job_id for e in events)
    quarter = [msgspec.json.decode(e.payload) for e in events if "quarter" in e.job_id]
    assert quarter == [{"a": 1}] * 96


async def test_fired_jobs_carry_the_spec_options(
    client: Client, redis: aioredis.Redis, settings: Settings
) -> None:
    spec = CronSpec(
        name="opts",
        cron="* * * * *",
        kind="demo.sleep",
        payload={"seconds": 1.5},
        queue="reports",
        priority="low",
        max_attempts=7,
        timeout_s=42.0,
    )
    clock = SimClock(utc(2024, 6, 3, 10, 0, 1))
    report = await Scheduler(client, [spec], now=clock).tick()
    assert report.fired == ["cron:opts:20240603T1000Z"]
    [event] = await queued_events(redis, settings, queue="reports", prefix="cron:opts:")
    assert (event.kind, event.priority, event.max_attempts, event.timeout_s) == (
        "demo.sleep",
        "low",
        7,
        42.0,
    )
    assert msgspec.json.decode(event.payload) == {"seconds": 1.5}
    info = await client.get_job(report.fired[0])
    assert info is not None and info.state == "queued"


HOURLY_TICKS_AFTER_GAP = {
    "skip": [],
    "latest": [13],
    "all": [9, 10, 11, 12, 13],
}


@pytest.mark.parametrize("policy", ["skip", "latest", "all"])
async def test_restart_after_a_gap_follows_the_missed_run_policy(
    client: Client, redis: aioredis.Redis, settings: Settings, policy: MissedPolicy
) -> None:
    spec = CronSpec(name="hourly", cron="0 * * * *", kind="demo.noop", missed=policy)
    await Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 8, 0, 10))).tick()
    # down from 08:00:10 until 13:30 (a new process: nothing survives but Redis)
    await Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 13, 30))).tick()
    fired = tick_instants(await queued_events(redis, settings, prefix="cron:hourly:"))
    assert fired == [utc(2024, 6, 3, h) for h in [8, *HOURLY_TICKS_AFTER_GAP[policy]]]


@pytest.mark.parametrize(
    ("window_h", "limit", "hours"), [(3, 100, [11, 12, 13]), (24, 2, [12, 13])]
)
async def test_missed_all_is_bounded_by_window_and_limit(
    client: Client,
    redis: aioredis.Redis,
    settings: Settings,
    window_h: int,
    limit: int,
    hours: list[int],
) -> None:
    spec = CronSpec(
        name="h",
        cron="0 * * * *",
        kind="demo.noop",
        missed="all",
        catchup_window_s=window_h * 3600,
        catchup_limit=limit,
    )
    await Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 8, 0, 10))).tick()
    await Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 13, 30))).tick()
    fired = tick_instants(await queued_events(redis, settings, prefix="cron:h:"))
    assert fired == [utc(2024, 6, 3, h) for h in [8, *hours]]


def test_latest_does_not_stack_a_catch_up_on_an_on_time_tick() -> None:
    spec = CronSpec(name="h", cron="0 * * * *", kind="demo.noop", missed="latest")
    grace = timedelta(seconds=60)
    assert plan_ticks(spec, utc(2024, 6, 3, 8, 0, 10), utc(2024, 6, 3, 13, 0, 20), grace) == [
        utc(2024, 6, 3, 13)
    ]
    # a weekly spec down for six days still catches up its one missed run
    weekly = CronSpec(name="w", cron="0 9 * * mon", kind="demo.noop", missed="latest")
    assert plan_ticks(weekly, utc(2024, 6, 3, 8), utc(2024, 6, 9, 8), grace) == [utc(2024, 6, 3, 9)]
    assert plan_ticks(spec, utc(2024, 6, 3, 9), utc(2024, 6, 3, 8), grace) == []


async def test_first_start_fires_nothing_older_than_the_grace(
    client: Client, redis: aioredis.Redis, settings: Settings
) -> None:
    spec = CronSpec(name="h", cron="0 * * * *", kind="demo.noop", missed="all")
    report = await Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 8, 30))).tick()
    assert report.fired == []


async def test_overlap_skip_waits_for_the_previous_run(
    client: Client, redis: aioredis.Redis, settings: Settings
) -> None:
    specs = [
        CronSpec(name="busy", cron="* * * * *", kind="demo.noop", overlap="skip"),
        CronSpec(name="free", cron="* * * * *", kind="demo.noop", overlap="allow"),
    ]
    clock = SimClock(utc(2024, 6, 3, 10, 0, 5))
    scheduler = Scheduler(client, specs, now=clock)
    first = await scheduler.tick()
    assert sorted(first.fired) == ["cron:busy:20240603T1000Z", "cron:free:20240603T1000Z"]
    clock.advance(timedelta(minutes=1))
    second = await scheduler.tick()  # busy's 10:00 job is still queued
    assert second.fired == ["cron:free:20240603T1001Z"]
    assert second.skipped == ["cron:busy:20240603T1001Z"]
    assert await client.cancel("cron:busy:20240603T1000Z") == "canceled"
    clock.advance(timedelta(minutes=1))
    third = await scheduler.tick()
    assert sorted(third.fired) == ["cron:busy:20240603T1002Z", "cron:free:20240603T1002Z"]
    busy = [e.job_id for e in await queued_events(redis, settings, prefix="cron:busy:")]
    assert busy == ["cron:busy:20240603T1000Z", "cron:busy:20240603T1002Z"]


async def test_overlap_skip_collapses_a_catch_up_to_one_run(
    client: Client, redis: aioredis.Redis, settings: Settings
) -> None:
    spec = CronSpec(name="s", cron="0 * * * *", kind="demo.noop", missed="all", overlap="skip")
    await Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 8, 0, 10))).tick()
    await client.cancel("cron:s:20240603T0800Z")
    report = await Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 11, 30))).tick()
    assert report.fired == ["cron:s:20240603T1100Z"]


async def test_fire_now_uses_a_manual_id_and_counts_for_overlap(
    client: Client, redis: aioredis.Redis, settings: Settings
) -> None:
    spec = CronSpec(name="m", cron="* * * * *", kind="demo.noop", overlap="skip")
    clock = SimClock(utc(2024, 6, 3, 10, 0, 30))
    scheduler = Scheduler(client, [spec], now=clock)
    job_id = await scheduler.fire_now("m")
    assert job_id.startswith("cron:m:manual-20240603T100030")
    assert (await scheduler.last_jobs()) == {"m": job_id}
    clock.advance(timedelta(seconds=45))
    report = await scheduler.tick()
    assert report.fired == [] and report.skipped == ["cron:m:20240603T1001Z"]
    with pytest.raises(CronError):
        await scheduler.fire_now("nope")


async def test_cursor_never_moves_back(client: Client, redis: aioredis.Redis) -> None:
    spec = CronSpec(name="c", cron="0 * * * *", kind="demo.noop")
    await Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 12))).tick()
    late = Scheduler(client, [spec], now=SimClock(utc(2024, 6, 3, 11)))
    await late.tick()
    assert await late.last_evaluated() == {"c": utc(2024, 6, 3, 12)}


async def test_specs_are_validated_at_start(settings: Settings) -> None:
    async with Client(settings, registry=handlers.registry()) as c:
        Scheduler(c, SCHEDULES)  # the platform's schedules fit the platform's registry
        with pytest.raises(CronError, match="unknown job kind"):
            Scheduler(c, [CronSpec(name="x", cron="@daily", kind="unknown.kind")])
        with pytest.raises(CronError, match="invalid payload"):
            bad = CronSpec(name="x", cron="@daily", kind="demo.sleep", payload={"seconds": "x"})
            Scheduler(c, [bad])
        with pytest.raises(CronError, match="unique"):
            spec = CronSpec(name="x", cron="@daily", kind="demo.noop")
            Scheduler(c, [spec, spec])


async def test_the_default_clock_is_redis_time(settings: Settings) -> None:
    """Replicas on hosts with skewed clocks agree: the clock is the Redis server's."""
    async with Client(settings) as client:
        secs, micros = await client.redis.time()
        now = await Scheduler(client, []).clock()
    assert now.tzinfo is not None
    assert abs(now.timestamp() - (int(secs) + int(micros) / 1e6)) < 5
