"""``jobstream events tail``: print events as they are appended, one readable line each.

Owns: following every queue's events stream (XREAD BLOCK, new queues picked up
each round) and formatting events for a person. Read-only: it joins no group and
acknowledges nothing, so it never disturbs the projector.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec
import redis.asyncio as aioredis

from streams.events import (
    Event,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRetryScheduled,
    JobStarted,
    decode_event,
)
from streams.keys import Keys
from streams.settings import Settings


def describe(e: Event) -> str:
    """The event-specific part of a tail line."""
    if isinstance(e, JobQueued):
        return f"priority={e.priority} reason={e.reason} max_attempts={e.max_attempts}"
    if isinstance(e, JobStarted):
        return f"worker={e.worker}"
    if isinstance(e, JobProgress):
        return f"{e.fraction:.0%} {e.message}"
    if isinstance(e, JobCompleted):
        return f"in {e.duration_ms:.1f} ms result={bytes(e.result).decode()[:80]}"
    if isinstance(e, JobFailed):
        return f"{e.error_type}: {e.message[:120]} will_retry={e.will_retry}"
    if isinstance(e, JobRetryScheduled):
        return f"retry in {e.delay_ms} ms"
    if isinstance(e, JobCanceled):
        return f"by={e.by} {e.reason}"
    return ""


def format_line(e: Event) -> str:
    at = datetime.fromtimestamp(e.at / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    tag = type(e).__struct_config__.tag
    return f"{at}Z {tag:<20} {e.queue}/{e.job_id} {e.kind} #{e.attempt} {describe(e)}"


async def tail_events(
    settings: Settings,
    *,
    job_id: str | None = None,
    from_start: bool = False,
    count: int | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Follow the events of every queue (optionally one job) until ``count`` are printed."""
    keys = Keys(settings.namespace)
    printed = 0
    async with aioredis.Redis.from_url(settings.redis_url) as r:
        positions: dict[str, str] = {}
        while count is None or printed < count:
            members: Any = await r.smembers(keys.queues)
            for q in sorted(m.decode() for m in members):
                positions.setdefault(keys.queue(q).events, "0-0" if from_start else "$")
            if not positions:
                positions[keys.queue("default").events] = "0-0" if from_start else "$"
            resp: Any = await r.xread(positions, block=1000, count=500)  # type: ignore[arg-type]
            for stream, entries in resp or []:
                for entry_id, fields in entries:
                    positions[stream.decode()] = entry_id.decode()
                    try:
                        event = decode_event(fields[b"e"])
                    except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                        print(f"{entry_id.decode()} <undecodable event: {exc}>", file=out)
                        continue
                    if job_id is None or event.job_id == job_id:
                        print(format_line(event), file=out, flush=True)
                        printed += 1
                        if count is not None and printed >= count:
                            return
