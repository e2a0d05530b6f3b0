"""Queue and projector-lag gauges, read from Redis on a timer.

Owns: how depth, delayed, pending and projector lag are computed from Redis.
Works on Redis 6.2 (no ``lag`` in XINFO GROUPS: the undelivered entries are
counted with a bounded XRANGE after the group's last-delivered-id) and 7.0.
Invariant: read-only; never changes a stream or group.
"""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from projections.metrics import ProjectorMetrics
from streams.keys import READY_GROUP, Keys

COUNT_CAP: Final = 100_000  # 6.2 fallback: count at most this many undelivered entries


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def _group(client: aioredis.Redis, key: str, group: str) -> dict[str, Any] | None:
    try:
        groups = await client.xinfo_groups(key)
    except ResponseError:  # no such key
        return None
    for g in groups:
        if _s(g["name"]) == group:
            return dict(g)
    return None


async def _undelivered(client: aioredis.Redis, key: str, info: dict[str, Any] | None) -> list[Any]:
    """(count of entries after the group's last-delivered-id, id of the first one or None)."""
    if info is None:
        first = await client.xrange(key, count=1)
        return [int(await client.xlen(key)), first[0][0] if first else None]
    last = _s(info["last-delivered-id"])
    first = await client.xrange(key, min=f"({last}", count=1)
    lag = info.get("lag")
    if lag is None:
        rest = await client.xrange(key, min=f"({last}", count=COUNT_CAP) if first else None
        lag = len(rest or [])
    return [int(lag), first[0][0] if first else None]


def _ms(entry_id: Any) -> int:
    return int(_s(entry_id).partition("-")[0])


async def refresh_queue(
    client: aioredis.Redis, keys: Keys, queue: str, group: str, m: ProjectorMetrics
) -> None:
    """Set depth/delayed/pending and projector lag gauges of one queue."""
    qk = keys.queue(queue)
    depth = pending = 0
    for key in qk.ready_all:
        info = await _group(client, key, READY_GROUP)
        depth += (await _undelivered(client, key, info))[0]
        pending += int(info["pending"]) if info else 0
    m.depth.labels(queue).set(depth)
    m.pending.labels(queue).set(pending)
    m.delayed.labels(queue).set(int(await client.zcard(qk.delayed)))
    info = await _group(client, qk.events, group)
    behind, first_id = await _undelivered(client, qk.events, info)
    oldest = [_ms(first_id)] if first_id is not None else []
    if info and int(info["pending"]):
        summary = await client.xpending(qk.events, group)
        if summary["min"] is not None:  # an XACK may land between XINFO and XPENDING
            oldest.append(_ms(summary["min"]))
            behind += int(summary["pending"])
    now_s, now_us = await client.time()
    now_ms = int(now_s) * 1000 + int(now_us) // 1000
    m.lag_entries.labels(queue).set(behind)
    m.lag_s.labels(queue).set(max(0, now_ms - min(oldest)) / 1000 if oldest else 0.0)
