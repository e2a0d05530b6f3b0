"""The ``jobs`` row <-> :class:`streams.state.JobState` mapping, and its bulk SQL.

Owns: how a job state is stored (column order, ms <-> timestamptz through the
``ms_ts``/``ts_ms`` SQL functions, raw JSON <-> jsonb) and the batched
load/upsert statements (``unnest`` of column arrays: one statement per batch).

Rows are keyed by (queue, job_id) (:data:`projections.fold.JobKey`): job ids
are unique per queue only.

Invariant: ``state_from_row(row)`` folded further gives the same row as folding
the same events from scratch (times <= 0 are stored as NULL and read back as
``None``; ``updated_at`` reads back as 0), which is what makes rebuild equal
the incremental projection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

import asyncpg
import msgspec

from projections.fold import JobKey
from streams.state import JobState, Status

Position = tuple[int, int]  # a stream entry id (ms, seq)

_SELECT: Final = """
SELECT j.job_id, j.queue, kind, status, attempt, max_attempts, priority, progress,
       progress_message, payload::text AS payload, result::text AS result, error_type, error,
       worker, ts_ms(enqueued_at) AS enqueued_at, ts_ms(run_at) AS run_at,
       ts_ms(started_at) AS started_at, ts_ms(finished_at) AS finished_at,
       ts_ms(updated_at) AS updated_at, last_entry_ms, last_entry_seq
FROM jobs j JOIN unnest($1::text[], $2::text[]) AS k(q, id) ON j.queue = k.q AND j.job_id = k.id
ORDER BY j.queue, j.job_id FOR UPDATE OF j
"""

UPSERT_COLUMNS: Final = (
    "job_id, queue, kind, status, attempt, max_attempts, priority, progress, progress_message, "
    "payload, result, error_type, error, worker, enqueued_at, run_at, started_at, finished_at, "
    "updated_at, last_entry_ms, last_entry_seq"
)

_VALUES: Final = """
SELECT u.job_id, u.queue, u.kind, u.status, u.attempt, u.max_attempts, u.priority, u.progress,
       u.progress_message, u.payload::jsonb, u.result::jsonb, u.error_type, u.error, u.worker,
       ms_ts(u.enqueued_at), ms_ts(u.run_at), ms_ts(u.started_at), ms_ts(u.finished_at),
       ms_ts(u.updated_at), u.last_entry_ms, u.last_entry_seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[], $7::text[],
            $8::float8[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::text[], $15::int8[], $16::int8[], $17::int8[], $18::int8[], $19::int8[],
            $20::int8[], $21::int8[])
     AS u(job_id, queue, kind, status, attempt, max_attempts, priority, progress,
          progress_message, payload, result, error_type, error, worker, enqueued_at, run_at,
          started_at, finished_at, updated_at, last_entry_ms, last_entry_seq)
ORDER BY u.queue, u.job_id
"""

_UPDATE_SET: Final = ", ".join(
    f"{c} = EXCLUDED.{c}" for c in UPSERT_COLUMNS.split(", ") if c not in ("job_id", "queue")
)


def upsert_sql(table: str = "jobs") -> str:
    """The bulk upsert statement into ``table`` (``jobs`` or a rebuild target like it)."""
    return (
        f"INSERT INTO {table} ({UPSERT_COLUMNS}) {_VALUES} "
        f"ON CONFLICT (queue, job_id) DO UPDATE SET {_UPDATE_SET}"
    )


def _raw(text: str | None) -> msgspec.Raw | None:
    return None if text is None else msgspec.Raw(text.encode())


def state_from_row(row: Mapping[str, Any] | asyncpg.Record) -> JobState:
    """The :class:`JobState` a ``jobs`` row (as selected by :func:`load_states`) stands for."""
    return JobState(
        job_id=row["job_id"],
        queue=row["queue"],
        kind=row["kind"],
        status=cast(Status, row["status"]),
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        priority=row["priority"],
        progress=row["progress"],
        progress_message=row["progress_message"],
        payload=msgspec.Raw(row["payload"].encode()),
        result=_raw(row["result"]),
        error_type=row["error_type"],
        error=row["error"],
        worker=row["worker"],
        enqueued_at=row["enqueued_at"],
        run_at=row["run_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"] or 0,
    )


async def load_states(
    conn: asyncpg.Connection, keys: list[JobKey]
) -> dict[JobKey, tuple[JobState, Position]]:
    """Lock and load the ``jobs`` rows of ``keys`` (sorted): state and newest folded position."""
    rows = await conn.fetch(_SELECT, [q for q, _ in keys], [j for _, j in keys])
    return {
        (r["queue"], r["job_id"]): (state_from_row(r), (r["last_entry_ms"], r["last_entry_seq"]))
        for r in rows
    }


def _text(raw: msgspec.Raw | None) -> str | None:
    return None if raw is None else bytes(raw).decode()


def _columns(states: Iterable[tuple[JobState, Position]]) -> list[list[Any]]:
    cols: list[list[Any]] = [[] for _ in range(21)]
    for s, (ms, seq) in states:
        values = (
            s.job_id, s.queue, s.kind, s.status, s.attempt, s.max_attempts, s.priority,
            s.progress, s.progress_message, _text(s.payload), _text(s.result), s.error_type,
            s.error, s.worker, s.enqueued_at, s.run_at, s.started_at, s.finished_at,
            s.updated_at, ms, seq,
        )  # fmt: skip
        for col, v in zip(cols, values, strict=True):
            col.append(v)
    return cols


async def upsert_states(
    conn: asyncpg.Connection,
    states: Iterable[tuple[JobState, Position]],
    table: str = "jobs",
) -> None:
    """Write ``states`` (with their newest positions) into ``table`` in one statement."""
    cols = _columns(states)
    if cols[0]:
        await conn.execute(upsert_sql(table), *cols)
