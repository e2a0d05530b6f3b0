"""Rebuild, check and prune of the projection.

Owns: recomputing ``jobs`` from ``job_events`` (the same fold as the projector:
:func:`projections.fold.project`, per (queue, job_id)), comparing that with the
incremental result, and retention.

Invariants:
- Rebuild locks ``jobs`` (EXCLUSIVE) before reading history, so a concurrent
  projector batch either committed before (and is read) or waits and folds
  on top of the rebuilt rows.
- Check works on one REPEATABLE READ snapshot, so a running projector cannot
  make it report a false difference.
- Prune deletes only terminal jobs (completed, failed, canceled) finished
  before the cutoff, together with their events; nothing active is touched.
"""

from __future__ import annotations

from typing import Final

import asyncpg
import msgspec

from projections.fold import JobKey, project
from projections.rows import Position, upsert_states
from streams.events import decode_event
from streams.state import JobState

_HISTORY: Final = (
    "SELECT queue, job_id, data::text AS data, entry_ms, entry_seq FROM job_events "
    "ORDER BY job_id, queue, entry_ms, entry_seq"
)
_PAIRS: Final = "(queue, job_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
_FLUSH_JOBS: Final = 5000


class CheckResult(msgspec.Struct, kw_only=True):
    """Rebuild vs incremental: row counts and (up to 20) jobs that differ, as ``queue/job_id``."""

    jobs: int
    rebuilt: int
    differing: list[str]

    @property
    def ok(self) -> bool:
        return self.jobs == self.rebuilt and not self.differing


async def _fold_all(conn: asyncpg.Connection, table: str) -> int:
    """Fold every job's history into ``table``; return the number of jobs written."""
    batch: list[tuple[JobState, Position]] = []
    key: JobKey | None = None
    state: JobState | None = None
    pos: Position = (0, 0)
    total = 0
    async for r in conn.cursor(_HISTORY, prefetch=5000):
        if (r["queue"], r["job_id"]) != key:
            if state is not None:
                batch.append((state, pos))
            key, state = (r["queue"], r["job_id"]), None
            if len(batch) >= _FLUSH_JOBS:
                await upsert_states(conn, batch, table)
                total, batch = total + len(batch), []
        state = project(state, r["queue"], decode_event(r["data"]))
        pos = (r["entry_ms"], r["entry_seq"])
    if state is not None:
        batch.append((state, pos))
    await upsert_states(conn, batch, table)
    return total + len(batch)


async def rebuild(conn: asyncpg.Connection) -> int:
    """Recompute ``jobs`` from ``job_events`` in one transaction; return the number of jobs."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")
        await conn.execute("DELETE FROM jobs")
        return await _fold_all(conn, "jobs")


async def check(conn: asyncpg.Connection) -> CheckResult:
    """Rebuild into a temporary table and compare it with ``jobs`` row by row."""
    async with conn.transaction(isolation="repeatable_read"):
        await conn.execute(
            "CREATE TEMP TABLE jobs_rebuilt (LIKE jobs INCLUDING ALL) ON COMMIT DROP"
        )
        rebuilt = await _fold_all(conn, "jobs_rebuilt")
        jobs = await conn.fetchval("SELECT count(*) FROM jobs")
        rows = await conn.fetch(
            "SELECT DISTINCT queue, job_id FROM ((TABLE jobs EXCEPT TABLE jobs_rebuilt) "
            "UNION ALL (TABLE jobs_rebuilt EXCEPT TABLE jobs)) d ORDER BY job_id, queue LIMIT 20"
        )
    differing = [f"{r['queue']}/{r['job_id']}" for r in rows]
    return CheckResult(jobs=jobs, rebuilt=rebuilt, differing=differing)


class PruneResult(msgspec.Struct, kw_only=True):
    jobs: int = 0
    events: int = 0
    dead_letters: int = 0


async def prune(conn: asyncpg.Connection, older_than_s: float, batch: int = 5000) -> PruneResult:
    """Delete terminal jobs finished more than ``older_than_s`` ago, with their events."""
    out = PruneResult()
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT queue, job_id FROM jobs "
                "WHERE status IN ('completed', 'failed', 'canceled') "
                "AND finished_at < now() - $1 * interval '1 second' "
                "ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                older_than_s,
                batch,
            )
            if rows:
                keys = ([r["queue"] for r in rows], [r["job_id"] for r in rows])
                ev = await conn.execute(f"DELETE FROM job_events WHERE {_PAIRS}", *keys)
                await conn.execute(f"DELETE FROM jobs WHERE {_PAIRS}", *keys)
                out.jobs, out.events = out.jobs + len(rows), out.events + int(ev.split()[-1])
        if len(rows) < batch:
            break
    dl = await conn.execute(
        "DELETE FROM dead_letters WHERE received_at < now() - $1 * interval '1 second'",
        older_than_s,
    )
    out.dead_letters = int(dl.split()[-1])
    return out
