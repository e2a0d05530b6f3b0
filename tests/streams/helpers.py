"""Test helpers for the core: reading a queue's events, waiting for a condition, workers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import redis.asyncio as aioredis

from handlers.demo import registry as demo_registry
from streams.events import Event, decode_event
from streams.keys import Keys
from streams.registry import Backoff, Registry
from streams.settings import Settings
from streams.worker import Worker


async def events_of(
    redis: aioredis.Redis, settings: Settings, queue: str = "default", job_id: str | None = None
) -> list[Event]:
    """Every event of ``queue`` (optionally of one job), oldest first."""
    rows: Any = await redis.xrange(Keys(settings.namespace).queue(queue).events)
    events = [decode_event(fields[b"e"]) for _, fields in rows]
    return [e for e in events if job_id is None or e.job_id == job_id]


def tags(events: list[Event]) -> list[str]:
    return [str(type(e).__struct_config__.tag) for e in events]


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.02)


def fast_registry() -> Registry:
    """The demo kinds with zero backoff, so retries are immediate."""
    return demo_registry(Backoff(base_s=0.0, jitter=0.0))


async def run_burst(
    settings: Settings,
    registry: Registry | None = None,
    concurrency: int = 8,
    timeout_s: float = 60,
    worker: dict[str, Any] | None = None,
) -> Worker:
    """Run a burst worker to completion and return it (``worker``: more Worker options)."""
    w = Worker(
        settings, registry or fast_registry(), concurrency=concurrency, burst=True, **(worker or {})
    )
    with anyio.fail_after(timeout_s):
        await w.run()
    return w
