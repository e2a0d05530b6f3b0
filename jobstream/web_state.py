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
    open_streams: int = field(default=0)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.stream_redis.aclose()
        await self.projection.aclose()
