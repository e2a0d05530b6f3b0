"""DST days through the scheduler (real Redis, simulated clock): no tick skipped or doubled."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest
import redis.asyncio as aioredis

from streams.client import Client
from streams.cron import CronSpec
from streams.scheduler import Scheduler
from streams.settings import Settings
from tests.scheduler.conftest import SimClock, queued_events, tick_instants

pytestmark = pytest.mark.anyio


def utc(month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


# (zone, local date, real hours in that local day, UTC instants of the 02:30 and of
# the 01:30 daily runs). Berlin: 02:00-03:00 is the gap (March) and the repeated hour
# (October); New York: 02:00-03:00 is the gap, 01:00-02:00 the repeated hour.
DST_DAYS = [
    ("Europe/Berlin", date(2024, 3, 31), 23, utc(3, 31, 1, 0), utc(3, 31, 0, 30)),
    ("Europe/Berlin", date(2024, 10, 27), 25, utc(10, 27, 0, 30), utc(10, 26, 23, 30)),
    ("America/New_York", date(2024, 3, 10), 23, utc(3, 10, 7, 0), utc(3, 10, 6, 30)),
    ("America/New_York", date(2024, 11, 3), 25, utc(11, 3, 7, 30), utc(11, 3, 5, 30)),
]


@pytest.mark.parametrize(("tz", "day", "hours", "at_0230", "at_0130"), DST_DAYS)
async def test_dst_day_hourly_once_per_real_hour_and_daily_once(
    settings: Settings,
    redis: aioredis.Redis,
    tz: str,
    day: date,
    hours: int,
    at_0230: datetime,
    at_0130: datetime,
) -> None:
    zone = ZoneInfo(tz)
    specs = [
        CronSpec(name="hourly", cron="0 * * * *", kind="demo.noop", timezone=tz),
        CronSpec(name="daily", cron="30 2 * * *", kind="demo.noop", timezone=tz),
        CronSpec(name="nightly", cron="30 1 * * *", kind="demo.noop", timezone=tz),
    ]
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    clock = SimClock(start - timedelta(seconds=30))
    async with Client(settings) as c1, Client(settings) as c2:
        replicas = [Scheduler(c, specs, now=clock) for c in (c1, c2)]
        while clock.now < end - timedelta(seconds=30):
            async with anyio.create_task_group() as tg:
                for r in replicas:
                    tg.start_soon(r.tick)
            clock.advance(timedelta(seconds=50))

    hourly = await queued_events(redis, settings, prefix="cron:hourly:")
    assert set(Counter(e.job_id for e in hourly).values()) == {1}
    assert tick_instants(hourly) == [start + timedelta(hours=h) for h in range(hours)]
    daily = tick_instants(await queued_events(redis, settings, prefix="cron:daily:"))
    assert daily == [at_0230]
    nightly = tick_instants(await queued_events(redis, settings, prefix="cron:nightly:"))
    assert nightly == [at_0130]
