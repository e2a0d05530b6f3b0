"""Fixtures of the scheduler tests: a client on the test namespace, a simulated clock,
and readers of the events streams (what the scheduler did is read from the log)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import msgspec
import pytest
import redis.asyncio as aioredis

from streams.client import Client
from streams.events import JobQueued, decode_event
from streams.keys import Keys
from streams.settings import Settings


class SimClock:
    """A controllable clock: ``clock()`` returns the current simulated instant."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@pytest.fixture
async def client(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[Client]:
    """A producer client on the test namespace (keys removed by the ``redis`` fixture)."""
    async with Client(settings) as c:
        yield c


async def queued_events(
    redis: aioredis.Redis, settings: Settings, queue: str = "default", prefix: str = ""
) -> list[JobQueued]:
    """Every job.queued event of ``queue`` whose job id starts with ``prefix``, in order."""
    stream = Keys(settings.namespace).queue(queue).events
    out: list[JobQueued] = []
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(stream)  # type: ignore[assignment]
    for _, fields in entries:
        event = decode_event(fields[b"e"])
        if isinstance(event, JobQueued) and event.job_id.startswith(prefix):
            out.append(event)
    return out


def tick_instants(events: list[JobQueued]) -> list[datetime]:
    """The UTC instants encoded in cron tick ids ``cron:{name}:{YYYYmmddTHHMMZ}``."""
    return [datetime.strptime(e.job_id.rsplit(":", 1)[1], "%Y%m%dT%H%M%z") for e in events]


def decode_payload(event: JobQueued) -> object:
    return msgspec.json.decode(event.payload)
