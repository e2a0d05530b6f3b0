"""What a running ``jobstream web`` app holds: its clients, its limits, its projection reader.

Owns: :class:`WebState` (built and closed by the app's lifespan; one per app, no
globals) and :class:`ProjectionReader`, the read side of the Postgres projection
as the web process sees it.

Invariants:
- The projection is optional: when Postgres is unreachable, its schema is not
  migrated, or a query fails, :meth:`ProjectionReader.get_job` answers None (the
  caller falls back to Redis) and the reader stays quiet for ``retry_after_s``
  before trying again, so a Postgres outage never slows every request.
- Event streams (SSE) hold a blocking ``XREAD`` each, so they use their own Redis
  pool (``stream_redis``), capped at ``max_streams``; they can never starve the
  pool that enqueues and answers status requests.
- A stream runs only while it holds a :class:`StreamSlot`:
  :meth:`WebState.reserve_stream` checks the cap and counts the slot with no
  ``await`` in between (atomic on the event loop), so a burst of requests can
  never open more than ``max_streams`` streams (the extras get None -> 503, not
  a "Too many connections" error mid-stream). :meth:`StreamSlot.release` is
  idempotent; the response releases its slot when it ends, however it ends.
- Each stream is bounded: at most ``max_stream_s`` seconds and
  ``max_scan_entries`` events-stream entries scanned (see
  :mod:`jobstream.web_events`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import cast

import anyio
import asyncpg
import redis.asyncio as aioredis

from jobstream.web_http import Tokens, WebMetrics
from projections import db, queries
from streams.client import Client
from streams.settings import Settings

log = logging.getLogger("jobstream.web")


class ProjectionReader:
    """Job look-ups in the Postgres projection, degrading to None when it is unavailable."""

    def __init__(self, settings: Settings, schema: str, *, retry_after_s: float = 10.0) -> None:
        self.settings = settings
        self.schema = db.validate_schema(schema)
        self.retry_after_s = retry_after_s
        self._pool: asyncpg.Pool | None = None
        self._down_until = 0.0
        self._lock = anyio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:  # min_size=0: creating the pool connects nothing yet
                self._pool = await asyncpg.create_pool(
                    self.settings.database_url,
                    min_size=0,
                    max_size=4,
                    command_timeout=5,
                    server_settings={
                        "search_path": f"{self.schema}, public",
                        "application_name": "jobstream-web",
                    },
                )
            return self._pool

    async def get_job(self, job_id: str) -> queries.JobDetail | None:
        """The projected job with its timeline; None if absent or the projection is unavailable."""
        if time.monotonic() < self._down_until:
            return None
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=3) as proxy:  # a proxy of a pooled Connection
                return await queries.get_job(cast(asyncpg.Connection, proxy), job_id)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._down_until = time.monotonic() + self.retry_after_s
            log.warning(
                "projection unavailable (%s); answering from Redis for %.0f s",
                type(exc).__name__,
                self.retry_after_s,
            )
            return None

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class StreamSlot:
    """One reserved event-stream slot of a :class:`WebState`; release it exactly once."""

    def __init__(self, state: WebState) -> None:
        self._state: WebState | None = state

    @property
    def released(self) -> bool:
        return self._state is None

    def release(self) -> None:
        """Give the slot back (idempotent: later calls do nothing)."""
        state, self._state = self._state, None
        if state is not None:
            state.open_streams -= 1
            state.metrics.streams.dec()


@dataclass
class WebState:
    """Everything the routes of one app use; built in the lifespan, closed at its end."""

    settings: Settings
    tokens: Tokens
    client: Client
    stream_redis: aioredis.Redis
    projection: ProjectionReader
    metrics: WebMetrics
    max_streams: int = 100
    sse_block_ms: int = 1000
    keepalive_s: float = 15.0
    max_stream_s: float = 600.0
    max_scan_entries: int = 100_000
    open_streams: int = field(default=0)

    def reserve_stream(self) -> StreamSlot | None:
        """A slot for one event stream, or None when ``max_streams`` are open.

        Synchronous on purpose: the check and the count cannot interleave with
        another request's, so the cap holds under any burst.
        """
        if self.open_streams >= self.max_streams:
            return None
        self.open_streams += 1
        self.metrics.streams.inc()
        return StreamSlot(self)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.stream_redis.aclose()
        await self.projection.aclose()
