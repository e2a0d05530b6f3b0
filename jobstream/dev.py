"""``jobstream dev`` (what ``make run`` runs): the whole system in one process.

Owns the development wiring: real Redis and Postgres (embedded ones when nothing
is configured or listening, see jobstream/embedded.py), migrations, then a worker
for every registered queue, the projector (metrics on ``--metrics-port``) and the
scheduler, all in one anyio task group, plus a demo burst of every demo kind. Once
the burst is projected it prints the projection's stats; with ``--once`` it then
exits, otherwise it serves until SIGINT/SIGTERM. Production runs each process on
its own (Procfile).
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from typing import Any

import anyio
import msgspec

import handlers
from handlers.schedules import SCHEDULES
from jobstream.cli_projections import print_stats
from jobstream.embedded import ensure_postgres, ensure_redis
from projections import db, queries
from projections.projector import Projector, ProjectorConfig
from streams.client import Client, JobRequest
from streams.scheduler import Scheduler
from streams.settings import Settings, redact_url
from streams.worker import Worker

log = logging.getLogger("jobstream.dev")


def demo_burst(n_noop: int) -> list[JobRequest]:
    """A burst touching every demo behaviour: plain, progress, retries, sleeping."""
    reqs = [JobRequest(kind="demo.noop", payload={}) for _ in range(n_noop)]
    reqs += [JobRequest(kind="demo.progress", payload={"steps": 5}) for _ in range(5)]
    reqs += [JobRequest(kind="demo.flaky", payload={"failures": 1}) for _ in range(5)]
    reqs += [JobRequest(kind="demo.sleep", payload={"seconds": 0.5}) for _ in range(3)]
    return reqs


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("dev", help="run worker + projector + scheduler in one process")
    p.add_argument("--once", action="store_true", help="exit after the demo burst is projected")
    p.add_argument("--demo-jobs", type=int, default=1000, help="demo.noop jobs in the burst")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--metrics-port", type=int, default=9102, help="projector /metrics (0: off)")
    p.add_argument("--json", action="store_true", help="print the burst's stats as JSON")
    p.set_defaults(func=cmd_dev)


def cmd_dev(args: argparse.Namespace) -> int:
    settings = ensure_postgres(ensure_redis(Settings.from_env()))
    log.info("redis %s, postgres %s, namespace %s", redact_url(settings.redis_url),
             redact_url(settings.database_url), settings.namespace)  # fmt: skip
    anyio.run(_dev, settings, args)
    return 0


async def _dev(settings: Settings, args: argparse.Namespace) -> None:
    schema = db.schema_from_env()
    await db.migrate_settings(settings, schema)
    registry = handlers.registry()
    config = ProjectorConfig(schema=schema, metrics_port=args.metrics_port or None)
    stop = anyio.Event()
    worker = Worker(settings, registry, concurrency=args.concurrency)
    async with (
        Client(settings, registry=registry) as client,
        Projector(settings, config) as projector,
        anyio.create_task_group() as tg,
    ):
        scheduler = Scheduler(client, SCHEDULES)
        tg.start_soon(worker.run, name="worker")
        tg.start_soon(lambda: scheduler.run(handle_signals=False), name="scheduler")
        tg.start_soon(lambda: projector.run(stop=stop), name="projector")
        signals_scope = anyio.CancelScope()
        tg.start_soon(_signals, stop, signals_scope, name="signals")
        await _run_burst(settings, client, schema, args.demo_jobs, args.json)
        if not args.once:
            await stop.wait()
        stop.set()
        worker.stop()
        scheduler.stop()
        signals_scope.cancel()


async def _signals(stop: anyio.Event, scope: anyio.CancelScope) -> None:
    with scope, anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            log.info("stopping")
            stop.set()
            return


async def _run_burst(
    settings: Settings, client: Client, schema: str, n_noop: int, as_json: bool
) -> None:
    reqs = demo_burst(n_noop)
    t0 = time.perf_counter()
    ids = await client.enqueue_many(reqs)
    log.info("enqueued a demo burst of %d jobs; waiting for the projection", len(ids))
    conn = await db.connect(settings, schema, app="jobstream-dev")
    try:
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE job_id = ANY($1::text[])"
                " AND status IN ('completed', 'failed', 'canceled')",
                ids,
            )
            if done == len(ids):
                break
            await anyio.sleep(0.2)
        log.info("demo burst done and projected in %.2fs", time.perf_counter() - t0)
        st = await queries.stats(conn, window_s=3600)
        if as_json:
            print(msgspec.json.encode(st).decode(), flush=True)
        else:
            print_stats(st)
    finally:
        await conn.close()
