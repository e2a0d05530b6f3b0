"""The projection benchmarks: events/s applied from a backlog, and lag under steady load.

Uses :class:`projections.projector.Projector` as the projector process does, on
a Postgres schema of its own per run (``bench<hex>``, dropped afterwards) and
the run's Redis namespace.

- backlog: K ``demo.noop`` jobs are enqueued and drained by an in-process burst
  worker (3 events each: queued, started, completed); then a projector runs
  ``until_caught_up``. Figure = events / wall time of that run.
- lag: a worker subprocess runs jobs enqueued at a steady rate while an
  in-process projector follows. Lag of an event = the wall time its batch's
  Postgres transaction committed (rows visible) minus the event's ``at`` (Redis
  ``TIME`` when it was appended; same host clock). Measured on every event,
  with no polling of Postgres.

If the projection package (or Postgres) is not available, the figures are
reported as "not available" with the reason, and the other benchmarks go on.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import anyio
import asyncpg

from bench.common import Figure, Metric, decode_bench_event, percentile, unavailable
from bench.core import enqueue_batches, steady, steady_enqueuer
from bench.procs import WorkerProc
from handlers.demo import registry
from streams.client import Client
from streams.settings import Settings
from streams.worker import Worker

APPLY = Metric("projection.apply", "projector apply from a backlog", "events/s", ">= 20,000")
LAG_P50 = Metric("projection.lag_p50", "projection lag p50 @ 1,000 jobs/s", "ms")
LAG_P99 = Metric("projection.lag_p99", "projection lag p99 @ 1,000 jobs/s", "ms", "<= 500")
APPLY_SYNTH = Metric(
    "projection.apply_synthetic", "projector apply, projections.bench backlog", "events/s"
)
METRICS = [APPLY, APPLY_SYNTH, LAG_P50, LAG_P99]


def projection_api() -> tuple[Any, Any, Any] | str:
    """``(db, Projector, ProjectorConfig)`` or the reason the projector is not available."""
    try:
        from projections import db
        from projections.projector import Projector, ProjectorConfig
    except ImportError as exc:
        return f"projections package not importable: {exc}"
    missing = [n for n in ("migrate_settings", "connect") if not hasattr(db, n)]
    if missing or not hasattr(Projector, "commit"):
        return f"projector API incomplete (missing {missing or ['Projector.commit']})"
    return db, Projector, ProjectorConfig


async def postgres_reason(settings: Settings) -> str:
    """'' if Postgres answers at ``settings.database_url``, else why not."""
    try:
        with anyio.fail_after(5):
            conn = await asyncpg.connect(settings.database_url, timeout=5)
            await conn.close()
        return ""
    except Exception as exc:  # any failure: the projection figures are not available
        return f"Postgres not reachable ({type(exc).__name__})"


async def _drop_schema(settings: Settings, schema: str) -> None:
    with anyio.CancelScope(shield=True):
        conn = await asyncpg.connect(settings.database_url, timeout=10)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


class _Lags:
    """Per-event lag samples, and an event set once ``expected`` events are seen."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.expected = -1
        self.reached = anyio.Event()

    def record(self, entries: list[Any]) -> None:
        now_ms = time.time() * 1000
        self.ms.extend(now_ms - decode_bench_event(e.raw).at for e in entries if e.raw)
        if 0 <= self.expected <= len(self.ms):
            self.reached.set()


def _timed_projector(projector_cls: Any, lags: _Lags, *args: Any) -> Any:
    """A projector whose every committed batch records the lag of its events."""

    class TimedProjector(projector_cls):  # type: ignore[misc]
        async def commit(self, entries: list[Any]) -> Any:
            result = await super().commit(entries)
            lags.record(entries)
            return result

    return TimedProjector(*args)


async def measure_apply(settings: Settings, *, jobs: int) -> dict[str, float]:
    """Events/s a projector applies from a backlog of ``3 * jobs`` events."""
    api = projection_api()
    assert not isinstance(api, str), api
    db, projector_cls, config_cls = api
    schema = settings.namespace.lower()
    await db.migrate_settings(settings, schema)
    try:
        async with Client(settings, registry=registry()) as client:
            await enqueue_batches(client, jobs)
        await Worker(settings, registry(), concurrency=32, burst=True).run()
        config = config_cls(schema=schema, consumer="bench", metrics_port=None)
        async with projector_cls(settings, config) as projector:
            t0 = time.perf_counter()
            await projector.run(until_caught_up=True)
            elapsed = time.perf_counter() - t0
        conn = await db.connect(settings, schema)
        try:
            projected = int(await conn.fetchval("SELECT count(*) FROM job_events"))
        finally:
            await conn.close()
    finally:
        await _drop_schema(settings, schema)
    if projected != 3 * jobs:
        raise RuntimeError(f"projected {projected} events, expected {3 * jobs}")
    return {APPLY.key: projected / elapsed}


async def measure_apply_synthetic(settings: Settings, *, events: int) -> dict[str, float]:
    """The projection engineer's own figure: ``projections.bench.measure_backlog_apply``.

    Its backlog is synthetic (4 events per job, XADDed directly, no worker), so it
    isolates the projector; it uses (and removes) a namespace and schema of its own.
    """
    from projections.bench import measure_backlog_apply

    return {APPLY_SYNTH.key: float(await measure_backlog_apply(settings, events))}


def synthetic_available() -> bool:
    """True when ``projections.bench.measure_backlog_apply`` exists."""
    try:
        from projections.bench import measure_backlog_apply
    except ImportError:
        return False
    return callable(measure_backlog_apply)


async def measure_lag(settings: Settings, *, rate: int, duration_s: float) -> dict[str, float]:
    """Projection lag percentiles while ``rate`` jobs/s flow through one worker process."""
    api = projection_api()
    assert not isinstance(api, str), api
    db, projector_cls, config_cls = api
    schema = settings.namespace.lower()
    await db.migrate_settings(settings, schema)
    lags, stop = _Lags(), anyio.Event()
    try:
        async with (
            Client(settings, registry=registry()) as client,
            await WorkerProc.spawn(settings) as worker,
        ):
            await worker.wait_ready()
            config = config_cls(schema=schema, consumer="bench", metrics_port=None)
            async with (
                _timed_projector(projector_cls, lags, settings, config) as projector,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(partial(projector.run, stop=stop), name="bench-projector")
                sent = await steady(rate, duration_s, steady_enqueuer(client))
                lags.expected = 3 * sent
                lags.record([])
                with anyio.fail_after(60):
                    await lags.reached.wait()
                stop.set()
    finally:
        await _drop_schema(settings, schema)
    return {LAG_P50.key: percentile(lags.ms, 50), LAG_P99.key: percentile(lags.ms, 99)}


async def check_available(settings: Settings) -> list[Figure] | None:
    """None when the projection can be measured, else "not available" figures."""
    api = projection_api()
    reason = api if isinstance(api, str) else await postgres_reason(settings)
    return unavailable(METRICS, "not available", reason) if reason else None
