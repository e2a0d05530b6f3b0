"""Sub-commands of the projection layer.

Owns: ``migrate``, ``projector``, ``projections rebuild|check|prune``,
``jobs show|list`` and ``stats``. ``jobs show ID [--queue Q]`` shows the job
ID of queue Q, else the most recently enqueued job with that id (ids are
unique per queue only). ``migrate`` and ``projector`` exit with 2 when the
schema holds another namespace's projection. Human output is a table; ``--json`` prints
machine-readable JSON (``jobs show``: one object with its ``events``, oldest
first; ``jobs list``: a list of objects without events). Every command returns
an exit code; nothing here holds state between commands.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import msgspec

from jobstream.embedded import ensure_postgres, ensure_redis
from projections import db, maintenance, queries
from projections.projector import Projector, ProjectorConfig
from streams.settings import Settings

T = TypeVar("T")
log = logging.getLogger("jobstream.projections")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"45s"``, ``"2w"`` (or plain seconds) -> seconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30d, 12h, 15m, 45s)")
    return float(m[1]) * _UNIT_S[m[2]]


def _settings() -> Settings:
    return ensure_postgres(ensure_redis(Settings.from_env()))


def _with_conn(args: argparse.Namespace, fn: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        conn = await db.connect(_settings(), args.schema, app="jobstream-cli")
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return anyio.run(main)


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for line in (list(headers), *cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


# -- commands -------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        applied = anyio.run(db.migrate_settings, _settings(), args.schema)
    except db.NamespaceMismatch as exc:
        print(f"jobstream migrate: {exc}", file=sys.stderr)
        return 2
    print(f"schema {args.schema}: applied {', '.join(applied) or 'nothing (up to date)'}")
    return 0


def cmd_projector(args: argparse.Namespace) -> int:
    settings = _settings()
    config = ProjectorConfig(
        schema=args.schema,
        consumer=args.consumer,
        batch_size=args.batch_size,
        metrics_port=args.metrics_port or None,
    )

    async def main() -> None:
        await db.migrate_settings(settings, args.schema)
        stop = anyio.Event()
        async with Projector(settings, config) as projector, anyio.create_task_group() as tg:

            async def on_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        stop.set()
                        return

            tg.start_soon(on_signals, name="projector-signals")
            await projector.run(until_caught_up=args.until_caught_up, stop=stop)
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except db.NamespaceMismatch as exc:
        print(f"jobstream projector: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    n = _with_conn(args, maintenance.rebuild)
    print(f"rebuilt {n} jobs from job_events")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    result = _with_conn(args, maintenance.check)
    if args.json:
        _print_json({"ok": result.ok, **msgspec.structs.asdict(result)})
    else:
        state = "OK" if result.ok else "DIFFERENT"
        print(f"{state}: jobs={result.jobs} rebuilt={result.rebuilt} differing={result.differing}")
    return 0 if result.ok else 1


def cmd_prune(args: argparse.Namespace) -> int:
    result = _with_conn(args, lambda c: maintenance.prune(c, args.older_than))
    print(f"pruned {result.jobs} jobs, {result.events} events, {result.dead_letters} dead letters")
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    job = _with_conn(args, lambda c: queries.get_job(c, args.job_id, args.queue))
    if job is None:
        where = f" in queue {args.queue}" if args.queue else ""
        print(f"job {args.job_id} not found{where}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(job)
        return 0
    fields = msgspec.structs.asdict(job)
    events = fields.pop("events")
    print_table(["field", "value"], [(k, v) for k, v in fields.items()])
    print()
    print_table(
        ["at", "type", "attempt", "entry"], [(e.at, e.type, e.attempt, e.entry_id) for e in events]
    )
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    jobs = _with_conn(
        args,
        lambda c: queries.list_jobs(
            c,
            status=args.status,
            kind=args.kind,
            queue=args.queue,
            since_s=args.since,
            limit=args.limit,
        ),
    )
    if args.json:
        _print_json(jobs)
        return 0
    print_table(
        ["job_id", "queue", "kind", "status", "attempt", "enqueued_at", "finished_at", "error"],
        [
            (j.job_id, j.queue, j.kind, j.status, j.attempt, j.enqueued_at, j.finished_at, j.error)
            for j in jobs
        ],
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    st = _with_conn(args, lambda c: queries.stats(c, window_s=args.window))
    if args.json:
        _print_json(st)
    else:
        print_stats(st)
    return 0


_KIND_STATS = ("completed", "failed", "wait_p50_s", "wait_p95_s", "wait_p99_s",
               "run_p50_s", "run_p95_s", "run_p99_s")  # fmt: skip


def print_stats(st: queries.Stats) -> None:
    """Counts by status, then per-kind wait/run percentiles, as tables."""
    print_table(["status", "jobs"], sorted(st.by_status.items()))
    print()
    print_table(
        ["kind", *_KIND_STATS],
        [(k.kind, *(getattr(k, f) for f in _KIND_STATS)) for k in st.kinds],
    )


# -- registration ---------------------------------------------------------------


def _schema_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--schema",
        type=db.validate_schema,
        default=db.schema_from_env(),
        help="Postgres schema of the projection (env JOBSTREAM_PG_SCHEMA, default jobstream)",
    )
    return parent


def _group(sub: argparse._SubParsersAction[Any], name: str, help_: str) -> Any:
    """The sub-command group ``name`` (reused if another module registered it first)."""
    existing = sub.choices.get(name)
    if existing is not None:
        for action in existing._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
    parser = sub.add_parser(name, help=help_)
    return parser.add_subparsers(dest=f"{name}_command", required=True)


def _register_projector(sub: argparse._SubParsersAction[Any], parent: Any) -> None:
    p = sub.add_parser("projector", parents=[parent], help="project events into Postgres")
    p.add_argument("--until-caught-up", action="store_true", help="exit once nothing is left")
    p.add_argument("--metrics-port", type=int, default=9102, help="HTTP /metrics port (0 = off)")
    p.add_argument("--consumer", default="", help="consumer name (default host-pid)")
    p.add_argument("--batch-size", type=int, default=2000)
    p.set_defaults(func=cmd_projector)


def _register_jobs(sub: argparse._SubParsersAction[Any], parent: Any) -> None:
    jobs = _group(sub, "jobs", "inspect jobs (from the projection)")
    show = jobs.add_parser("show", parents=[parent], help="one job and its event timeline")
    show.add_argument("job_id")
    show.add_argument("--queue", help="the job's queue (default: the newest job of that id)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_jobs_show)
    ls = jobs.add_parser("list", parents=[parent], help="list jobs, newest first")
    ls.add_argument("--status")
    ls.add_argument("--kind")
    ls.add_argument("--queue")
    ls.add_argument("--since", type=parse_duration, help="enqueued within, e.g. 1h")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_jobs_list)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this module's sub-commands to the jobstream parser."""
    parent = _schema_parent()
    if "migrate" not in sub.choices:
        m = sub.add_parser("migrate", parents=[parent], help="apply the Postgres migrations")
        m.set_defaults(func=cmd_migrate)
    _register_projector(sub, parent)
    proj = _group(sub, "projections", "projection maintenance")
    proj.add_parser(
        "rebuild", parents=[parent], help="recompute jobs from job_events"
    ).set_defaults(func=cmd_rebuild)
    chk = proj.add_parser("check", parents=[parent], help="compare a rebuild with jobs")
    chk.add_argument("--json", action="store_true")
    chk.set_defaults(func=cmd_check)
    pr = proj.add_parser("prune", parents=[parent], help="delete old terminal jobs and events")
    pr.add_argument("--older-than", type=parse_duration, default=parse_duration("30d"))
    pr.set_defaults(func=cmd_prune)
    _register_jobs(sub, parent)
    st = sub.add_parser("stats", parents=[parent], help="counts and wait/run percentiles")
    st.add_argument("--window", type=parse_duration, default=3600.0, help="e.g. 1h, 1d")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)
