"""The projector process: every queue's events stream -> Postgres, then XACK, then metrics.

Owns: the read loop, its consumer group membership, claiming dead projectors'
batches, retries with back-off when Postgres or Redis fail, trimming, and the
``/metrics`` server.

Invariants:
- Order per batch: one Postgres transaction (see :mod:`projections.store`),
  commit, then XACK, then metrics for the newly inserted events only. A crash
  anywhere leaves the entries pending; whoever replays them (this consumer
  reading its own pending list at start, or another projector's XAUTOCLAIM)
  changes nothing already committed.
- A batch is retried until it commits (Postgres down: back off, reconnect,
  retry the same entries); it is never acknowledged before that. A batch that
  Postgres rejects as data (:data:`projections.store.DATA_ERRORS`: SQLSTATE
  class 22/23) is not an outage: it is re-applied entry by entry
  (:func:`projections.store.apply_each`), the rejected entries dead-lettered,
  so one bad entry never wedges the projection.
- Every Postgres connection first checks that the schema belongs to this
  namespace (:func:`projections.db.claim_namespace`); :meth:`Projector.run`
  checks it before projecting anything and raises
  :class:`projections.db.NamespaceMismatch` if not.
- Queues are rediscovered every ``queue_refresh_s``; after any Redis error the
  groups are re-ensured (recreated at id 0 if Redis lost them) and this
  consumer re-reads its own pending entries first.
- Streams are trimmed only by :data:`projections.redis_io.TRIM_SCRIPT`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from types import TracebackType

import anyio
import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from projections import db
from projections.gauges import refresh_queue
from projections.metrics import MetricsServer, ProjectorMetrics
from projections.redis_io import DEFAULT_GROUP, StreamIO
from projections.store import DATA_ERRORS, BatchResult, Entry, apply_batch, apply_each
from streams.settings import Settings

log = logging.getLogger("jobstream.projector")

PG_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection whose server end was killed, seen idle
    OSError,
    TimeoutError,
)
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class ProjectorConfig(msgspec.Struct, kw_only=True, frozen=True):
    """Tuning of one projector process."""

    schema: str = db.DEFAULT_SCHEMA
    group: str = DEFAULT_GROUP
    consumer: str = ""  # default: "<host>-<pid>"
    batch_size: int = 2000
    block_ms: int = 500
    queue_refresh_s: float = 2.0
    claim_interval_s: float = 5.0
    claim_min_idle_ms: int = 30_000  # a batch pending this long belongs to a dead projector
    trim_interval_s: float = 1.0
    gauge_interval_s: float = 5.0
    metrics_port: int | None = None  # None: no HTTP server; 0: any free port
    backoff_max_s: float = 5.0


class _Backoff:
    def __init__(self, max_s: float) -> None:
        self.max_s, self.delay_s = max_s, 0.05

    async def wait(self) -> None:
        await anyio.sleep(self.delay_s * random.uniform(0.5, 1.0))
        self.delay_s = min(self.max_s, self.delay_s * 2)

    def reset(self) -> None:
        self.delay_s = 0.05


class Projector:
    """One projector: one consumer of the projector group on every queue's events stream."""

    def __init__(
        self, settings: Settings, config: ProjectorConfig, metrics: ProjectorMetrics | None = None
    ) -> None:
        self.settings, self.config = settings, config
        self.metrics = metrics or ProjectorMetrics()
        consumer = config.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.redis = aioredis.Redis.from_url(settings.redis_url)
        self.io = StreamIO(self.redis, settings.namespace, config.group, consumer)
        self._conn: asyncpg.Connection | None = None
        self._ids: dict[str, str] = {}  # queue -> "0" (re-read own pending) or ">"
        self._dirty: set[str] = set()
        self._drained = False  # the last read was of new entries (">") and found none
        self._prefetched: list[Entry] = []  # read while the previous batch was committing
        self._until_caught_up = False
        self._next_refresh = self._next_claim = self._next_trim = 0.0
        self._last_ok = time.monotonic()
        self._backoff = _Backoff(config.backoff_max_s)
        self.server: MetricsServer | None = None

    async def __aenter__(self) -> Projector:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        await self.redis.aclose()

    def healthy(self) -> bool:
        """True while the loop makes progress (Postgres and Redis reachable)."""
        return time.monotonic() - self._last_ok < max(10.0, 3 * self.config.block_ms / 1000)

    # -- Postgres ---------------------------------------------------------------

    async def _pg(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            app = f"jobstream-projector-{self.io.consumer}"
            conn = await db.connect(self.settings, self.config.schema, app=app)
            try:
                await db.claim_namespace(conn, self.settings.namespace)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
        return self._conn

    async def _connect_pg(self) -> None:
        """Connect (checking the namespace), retrying while Postgres is unavailable."""
        while True:
            try:
                await self._pg()
                self._backoff.reset()
                return
            except PG_ERRORS as exc:
                await self._pg_failed(exc)

    async def _pg_failed(self, exc: BaseException) -> None:
        if isinstance(exc, asyncpg.SyntaxOrAccessError):  # SQLSTATE 42: a bug or a bad grant
            log.error("projection statement failed (%s: %s); retrying", type(exc).__name__, exc)
        else:
            log.warning("postgres unavailable (%s: %s); retrying", type(exc).__name__, exc)
        self.metrics.errors.labels("postgres").inc()
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        await self._backoff.wait()

    async def commit(self, entries: list[Entry]) -> BatchResult:
        """Apply ``entries`` in one transaction, retrying (reconnecting) until it commits.

        Bad data is no outage: a batch failing with a data error is re-applied
        entry by entry, dead-lettering what Postgres rejects.
        """
        lock_prefix = f"{self.config.schema}:{self.settings.namespace}"
        one_by_one = False
        while True:
            try:
                conn = await self._pg()
                if one_by_one:
                    with anyio.fail_after(60 + len(entries)):
                        result = await apply_each(conn, entries, lock_prefix)
                else:
                    with anyio.fail_after(60):
                        result = await apply_batch(conn, entries, lock_prefix)
                self._backoff.reset()
                return result
            except DATA_ERRORS as exc:
                if one_by_one:  # not an entry's fault (apply_each absorbs those): retry
                    await self._pg_failed(exc)
                    continue
                log.warning("batch rejected as data (%s: %s); applying entry by entry",
                            type(exc).__name__, exc)  # fmt: skip
                self.metrics.errors.labels("data").inc()
                one_by_one = True
            except PG_ERRORS as exc:
                await self._pg_failed(exc)

    async def process(self, entries: list[Entry]) -> BatchResult:
        """Commit, then XACK, then count metrics; the whole per-batch protocol."""
        started = time.perf_counter()
        result = await self.commit(entries)
        await self.io.ack(entries)
        self.metrics.batch_s.observe(time.perf_counter() - started)
        self.metrics.count(result.applied)
        for queue in result.dead_lettered:
            self.metrics.dead_letters.labels(queue).inc()
        self._dirty.update(e.queue for e in entries)
        return result

    # -- Redis ------------------------------------------------------------------

    async def _refresh_queues(self) -> None:
        for queue in await self.io.queues():
            if queue not in self._ids:
                await self.io.ensure_group(queue)
                self._ids[queue] = "0"
        self._next_refresh = anyio.current_time() + self.config.queue_refresh_s

    async def _claim(self) -> int:
        n = 0
        for queue in list(self._ids):
            claimed = await self.io.claim(
                queue, self.config.claim_min_idle_ms, self.config.batch_size
            )
            if claimed:
                await self.process(claimed)
                n += len(claimed)
        self._next_claim = anyio.current_time() + self.config.claim_interval_s
        return n

    async def trim(self) -> int:
        """Trim the streams of queues projected since the last trim."""
        n = 0
        for queue in sorted(self._dirty):
            trimmed = await self.io.trim(queue)
            self.metrics.trimmed.labels(queue).inc(trimmed)
            n += trimmed
        self._dirty.clear()
        self._next_trim = anyio.current_time() + self.config.trim_interval_s
        return n

    async def _read(self) -> list[Entry]:
        own = {q: i for q, i in self._ids.items() if i == "0"}
        if not own:
            # until caught up, an empty read means done: no point blocking on it
            block = None if self._until_caught_up else self.config.block_ms
            entries = await self.io.read(self._ids, self.config.batch_size, block)
            self._drained = not entries
            return entries
        self._drained = False
        entries = await self.io.read(own, self.config.batch_size, None)
        seen = {e.queue for e in entries}
        self._ids.update({q: ">" for q in own if q not in seen})
        return entries

    async def step(self) -> int:
        """One loop turn: refresh queues, claim, read and project one batch; entries handled."""
        now = anyio.current_time()
        if not self._ids or now >= self._next_refresh:
            await self._refresh_queues()
        n = await self._claim() if now >= self._next_claim else 0
        if not self._ids:
            self._drained = True
            await anyio.sleep(self.config.block_ms / 1000)
            return n
        entries, self._prefetched = self._prefetched or await self._read(), []
        if entries:
            await self._process_and_prefetch(entries)
        if now >= self._next_trim:
            await self.trim()
        self._last_ok = time.monotonic()
        return n + len(entries)

    async def _process_and_prefetch(self, entries: list[Entry]) -> None:
        """Project ``entries`` while the next batch is read from Redis (no blocking read).

        The prefetched entries are pending in the group like any read ones, so a
        crash loses nothing; they are projected first on the next step.
        """
        if any(i == "0" for i in self._ids.values()):
            await self.process(entries)
            return

        async def prefetch() -> None:
            self._prefetched = await self.io.read(self._ids, self.config.batch_size, None)

        async with anyio.create_task_group() as tg:
            tg.start_soon(prefetch, name="projector-prefetch")
            await self.process(entries)
        if self._prefetched:
            self._drained = False

    async def caught_up(self) -> bool:
        """True when every stream is fully delivered and nothing is pending in the group."""
        if not self._drained and self._ids:
            return False
        for queue in self._ids:
            if await self.io.pending_count(queue):
                return False
        return True

    async def _guarded_step(self) -> int | None:
        """``step`` with Redis failures absorbed; None after an error."""
        try:
            n = await self.step()
            self._backoff.reset()
            return n
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("projector group missing (Redis restarted?); recreating")
        except REDIS_ERRORS as exc:
            log.warning("redis unavailable (%s: %s); retrying", type(exc).__name__, exc)
        self.metrics.errors.labels("redis").inc()
        self._ids.clear()
        await self._backoff.wait()
        return None

    async def _loop(self, stop: anyio.Event, until_caught_up: bool) -> None:
        while not stop.is_set():
            n = await self._guarded_step()
            if n == 0 and until_caught_up:
                if await self.caught_up():
                    await self.trim()
                    return
                if self._drained:  # the rest is pending on another consumer: give it time
                    await anyio.sleep(self.config.block_ms / 1000)

    async def _gauge_loop(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            try:
                for queue in list(self._ids):
                    await refresh_queue(
                        self.redis, self.io.keys, queue, self.config.group, self.metrics
                    )
            except (*REDIS_ERRORS, ResponseError) as exc:
                log.debug("gauge refresh failed: %s", exc)
            except Exception:  # gauges are advisory: they never stop the projection
                log.exception("gauge refresh failed")
            with anyio.move_on_after(self.config.gauge_interval_s):
                await stop.wait()

    async def run(self, *, until_caught_up: bool = False, stop: anyio.Event | None = None) -> None:
        """Project until ``stop`` is set (or, with ``until_caught_up``, nothing is left)."""
        stop = stop or anyio.Event()
        await self._connect_pg()  # NamespaceMismatch: refuse before projecting anything
        if self.config.metrics_port is not None and self.server is None:
            self.server = MetricsServer(
                self.metrics.registry, self.config.metrics_port, self.healthy
            )
            log.info("metrics on :%d/metrics", self.server.port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._gauge_loop, stop, name="projector-gauges")
            self._until_caught_up = until_caught_up
            await self._loop(stop, until_caught_up)
            tg.cancel_scope.cancel()
