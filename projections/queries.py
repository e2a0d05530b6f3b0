"""Read-side queries of the projection, with typed results.

Owns: job by id with its timeline, filtered job lists, failure summaries and
wait/run-time percentiles. Read-only; every query is bounded (LIMIT or a time
window) and served by an index of ``migrations/``.

A job is identified by (queue, job_id); :func:`get_job` given only an id answers
the most recently enqueued job of that id (ids are unique per queue only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec

_JOB_COLUMNS: Final = (
    "job_id, queue, kind, status, priority, attempt, max_attempts, progress, progress_message, "
    "error_type, error, worker, enqueued_at, run_at, started_at, finished_at, updated_at"
)


class JobRow(msgspec.Struct, kw_only=True):
    """One job's current state (a ``jobs`` row without payload and result)."""

    job_id: str
    queue: str
    kind: str
    status: str
    priority: str
    attempt: int
    max_attempts: int
    progress: float
    progress_message: str
    error_type: str | None
    error: str | None
    worker: str | None
    enqueued_at: datetime | None
    run_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None


class EventRow(msgspec.Struct, kw_only=True):
    """One event of a job's timeline."""

    type: str
    at: datetime | None
    attempt: int
    entry_id: str
    data: dict[str, Any]


class JobDetail(JobRow, kw_only=True):
    """A job with its payload, result and timeline (oldest event first)."""

    payload: Any
    result: Any
    events: list[EventRow]


class FailureGroup(msgspec.Struct, kw_only=True):
    """Failed attempts of one (queue, kind, error type) in a window."""

    queue: str
    kind: str
    error_type: str
    count: int
    last_at: datetime | None
    last_message: str


class KindStats(msgspec.Struct, kw_only=True):
    """Per-kind outcome counts and wait/run percentiles (seconds) in a window."""

    kind: str
    completed: int = 0
    failed: int = 0
    wait_p50_s: float | None = None
    wait_p95_s: float | None = None
    wait_p99_s: float | None = None
    run_p50_s: float | None = None
    run_p95_s: float | None = None
    run_p99_s: float | None = None


class Stats(msgspec.Struct, kw_only=True):
    """Counts by status (all jobs) and per-kind figures over ``window_s``."""

    window_s: float
    by_status: dict[str, int]
    kinds: list[KindStats]


def _job(r: asyncpg.Record) -> dict[str, Any]:
    return {k: r[k] for k in _JOB_COLUMNS.split(", ")}


async def get_job(
    conn: asyncpg.Connection, job_id: str, queue: str | None = None
) -> JobDetail | None:
    """The job ``job_id`` (of ``queue``, else the most recently enqueued) with its timeline.

    The timeline holds every event of (queue, job_id), earlier incarnations of a
    reused id included (see :mod:`projections.fold`). None if there is no such job.
    """
    row = await conn.fetchrow(
        f"SELECT {_JOB_COLUMNS}, payload::text AS payload, result::text AS result "
        "FROM jobs WHERE job_id = $1 AND ($2::text IS NULL OR queue = $2) "
        "ORDER BY enqueued_at DESC NULLS LAST, updated_at DESC NULLS LAST, queue LIMIT 1",
        job_id,
        queue,
    )
    if row is None:
        return None
    events = await conn.fetch(
        "SELECT type, at, attempt, entry_ms || '-' || entry_seq AS entry_id, data::text AS data "
        "FROM job_events WHERE job_id = $1 AND queue = $2 ORDER BY entry_ms, entry_seq",
        job_id,
        row["queue"],
    )
    return JobDetail(
        **_job(row),
        payload=msgspec.json.decode(row["payload"]),
        result=None if row["result"] is None else msgspec.json.decode(row["result"]),
        events=[
            EventRow(
                type=e["type"],
                at=e["at"],
                attempt=e["attempt"],
                entry_id=e["entry_id"],
                data=msgspec.json.decode(e["data"]),
            )
            for e in events
        ],
    )


async def list_jobs(
    conn: asyncpg.Connection,
    *,
    status: str | None = None,
    kind: str | None = None,
    queue: str | None = None,
    since_s: float | None = None,
    limit: int = 50,
) -> list[JobRow]:
    """Jobs matching every given filter, newest first (``since_s``: enqueued that recently)."""
    rows = await conn.fetch(
        f"SELECT {_JOB_COLUMNS} FROM jobs "
        "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2) "
        "AND ($3::text IS NULL OR queue = $3) "
        "AND ($4::float8 IS NULL OR coalesce(enqueued_at, updated_at) "
        "     >= now() - $4 * interval '1 second') "
        "ORDER BY coalesce(enqueued_at, updated_at) DESC NULLS LAST, job_id LIMIT $5",
        status,
        kind,
        queue,
        since_s,
        limit,
    )
    return [JobRow(**_job(r)) for r in rows]


async def failures(
    conn: asyncpg.Connection, *, since_s: float = 86400.0, limit: int = 50
) -> list[FailureGroup]:
    """Failed attempts in the window, grouped by queue, kind and error type, most first."""
    rows = await conn.fetch(
        "SELECT queue, kind, coalesce(data->>'error_type', '') AS error_type, count(*) AS count, "
        "max(at) AS last_at, "
        "coalesce((array_agg(data->>'message' ORDER BY at DESC))[1], '') AS last_message "
        "FROM job_events WHERE type = 'job.failed' AND at >= now() - $1 * interval '1 second' "
        "GROUP BY 1, 2, 3 ORDER BY count DESC, last_at DESC LIMIT $2",
        since_s,
        limit,
    )
    return [FailureGroup(**dict(r)) for r in rows]


_RUN_PCT: Final = """
SELECT kind,
       count(*) FILTER (WHERE type = 'job.completed') AS completed,
       count(*) FILTER (WHERE type = 'job.failed' AND NOT (data->>'will_retry')::bool) AS failed,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
           (ORDER BY (data->>'duration_ms')::float8 / 1000) AS pct
FROM job_events
WHERE type IN ('job.completed', 'job.failed') AND at >= now() - $1 * interval '1 second'
GROUP BY kind
"""

_WAIT_PCT: Final = """
SELECT kind, percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM
           started_at - greatest(enqueued_at, coalesce(run_at, enqueued_at)))) AS pct
FROM jobs WHERE started_at >= now() - $1 * interval '1 second' GROUP BY kind
"""


async def stats(conn: asyncpg.Connection, *, window_s: float = 3600.0) -> Stats:
    """Counts by status and per-kind wait/run percentiles over the last ``window_s``."""
    by_status = {
        r["status"]: r["n"]
        for r in await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    }
    kinds: dict[str, KindStats] = {}
    for r in await conn.fetch(_RUN_PCT, window_s):
        p = [float(x) for x in r["pct"]]
        kinds[r["kind"]] = KindStats(
            kind=r["kind"],
            completed=r["completed"],
            failed=r["failed"],
            run_p50_s=p[0],
            run_p95_s=p[1],
            run_p99_s=p[2],
        )
    for r in await conn.fetch(_WAIT_PCT, window_s):
        k = kinds.setdefault(r["kind"], KindStats(kind=r["kind"]))
        k.wait_p50_s, k.wait_p95_s, k.wait_p99_s = (float(x) for x in r["pct"])
    return Stats(
        window_s=window_s, by_status=by_status, kinds=sorted(kinds.values(), key=lambda k: k.kind)
    )
