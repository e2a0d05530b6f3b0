"""Sub-commands of the cron layer: ``scheduler``, ``cron list``, ``cron run NAME``.

Owns: the command-line face of :mod:`streams.scheduler` over the platform's
schedules (:data:`handlers.schedules.SCHEDULES`), with the platform registry
(:func:`handlers.registry`: kinds are checked at start, queues and priorities
default to the kind's). Configuration comes from the environment, as for every
other command (``cli_core.settings_from_env``). ``cron list`` reads each spec's last run
from the Postgres projection when it is reachable and falls back to what Redis
knows (the last fired job id and its live state) when it is not; it never fails
because Postgres is down or not migrated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import asyncpg

import handlers
from handlers.schedules import SCHEDULES
from jobstream.cli_core import settings_from_env
from streams.client import Client
from streams.cron import CronError, CronSpec
from streams.metrics_http import MetricsServer
from streams.scheduler import Scheduler
from streams.settings import Settings

NEXT_FIRES = 3
_PG_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this module's sub-commands to the jobstream parser."""
    p = sub.add_parser("scheduler", help="fire cron specs and promote due delayed jobs")
    p.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz on this port")
    p.add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how late a tick may fire and still count as on time (default 60)",
    )
    p.add_argument(
        "--no-promote",
        action="store_true",
        help="do not promote due delayed/retry jobs (workers do it too)",
    )
    p.set_defaults(func=cmd_scheduler)

    cron = sub.add_parser("cron", help="inspect and trigger cron specs")
    cron_sub = cron.add_subparsers(dest="cron_command", required=True)
    lst = cron_sub.add_parser("list", help="every spec with its next fire times and last run")
    lst.add_argument("--json", action="store_true", help="print JSON for scripts")
    lst.set_defaults(func=cmd_cron_list)
    run = cron_sub.add_parser("run", help="fire one spec now (manual job id)")
    run.add_argument("name", help="the spec's name")
    run.set_defaults(func=cmd_cron_run)


def cmd_scheduler(args: argparse.Namespace) -> int:
    settings = settings_from_env()

    async def serve() -> None:
        async with Client(settings, registry=handlers.registry()) as client:
            scheduler = Scheduler(
                client, SCHEDULES, grace_s=args.grace, promote=not args.no_promote
            )
            server = None
            if args.metrics_port is not None:
                m = scheduler.metrics
                server = MetricsServer(m.registry, args.metrics_port, m.healthy)
            try:
                await scheduler.run()
            finally:
                if server is not None:
                    server.close()

    anyio.run(serve)
    return 0


def cmd_cron_run(args: argparse.Namespace) -> int:
    settings = settings_from_env()

    async def fire() -> str:
        async with Client(settings, registry=handlers.registry()) as client:
            return await Scheduler(client, SCHEDULES).fire_now(args.name)

    try:
        print(anyio.run(fire))
    except CronError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_cron_list(args: argparse.Namespace) -> int:
    rows = anyio.run(collect_rows, settings_from_env(), SCHEDULES, datetime.now(UTC))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


async def collect_rows(
    settings: Settings, specs: Sequence[CronSpec], now: datetime
) -> list[dict[str, Any]]:
    """One dict per spec: its definition, next fire times and last run."""
    async with Client(settings, registry=handlers.registry()) as client:
        scheduler = Scheduler(client, specs)
        cursors = await scheduler.last_evaluated()
        last_ids = await scheduler.last_jobs()
        live = {n: await client.get_job(i) if i else None for n, i in last_ids.items()}
    projected = await projected_last_runs(settings, [s.name for s in specs])
    rows = []
    for spec in specs:
        cursor = cursors.get(spec.name)
        info = live.get(spec.name)
        last_run = projected.get(spec.name) or {
            "job_id": last_ids.get(spec.name),
            "status": info.state if info else None,
            "source": "redis",
        }
        rows.append(
            {
                "name": spec.name,
                "cron": spec.cron,
                "timezone": spec.timezone,
                "kind": spec.kind,
                "queue": spec.queue or _registered_queue(spec.kind),
                "missed": spec.missed,
                "overlap": spec.overlap,
                "next": [t.isoformat() for t in spec.next_fires(now, NEXT_FIRES)],
                "last_evaluated": cursor.isoformat() if cursor else None,
                "last_run": last_run,
            }
        )
    return rows


async def projected_last_runs(settings: Settings, names: Sequence[str]) -> dict[str, Any]:
    """Newest projected job per spec name, or {} when Postgres or the table is not there."""
    schema = os.environ.get("JOBSTREAM_PG_SCHEMA", "") or "jobstream"
    if not _PG_SCHEMA_RE.fullmatch(schema):
        return {}
    sql = (
        f"SELECT job_id, status, enqueued_at, finished_at FROM {schema}.jobs "
        "WHERE job_id LIKE $1 ESCAPE '\\' ORDER BY enqueued_at DESC NULLS LAST LIMIT 1"
    )
    out: dict[str, Any] = {}
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return {}
    try:
        for name in names:
            pattern = "cron:" + re.sub(r"([\\_%])", r"\\\1", name) + ":%"
            row = await conn.fetchrow(sql, pattern)
            if row is not None:
                out[name] = {
                    "job_id": row["job_id"],
                    "status": row["status"],
                    "enqueued_at": _iso(row["enqueued_at"]),
                    "finished_at": _iso(row["finished_at"]),
                    "source": "postgres",
                }
    except (asyncpg.PostgresError, OSError):
        return {}
    finally:
        await conn.close()
    return out


def _registered_queue(kind: str) -> str:
    handler = handlers.registry().get(kind)
    return handler.queue if handler else "default"


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def format_table(rows: list[dict[str, Any]]) -> str:
    """The human-readable table of ``cron list``."""
    lines = []
    for r in rows:
        last = r["last_run"]
        last_txt = (
            "never"
            if not last.get("job_id")
            else (
                f"{last['job_id']} ({last.get('status') or 'no longer live in Redis'}"
                + (f", finished {last['finished_at']}" if last.get("finished_at") else "")
                + f"; from {last['source']})"
            )
        )
        lines += [
            f"{r['name']}  [{r['cron']}  {r['timezone']}]  kind={r['kind']}  "
            f"missed={r['missed']} overlap={r['overlap']}",
            f"    next: {', '.join(r['next'])}",
            f"    last run: {last_txt}",
        ]
    return "\n".join(lines)
