"""One projector batch, applied to Postgres in one transaction.

Owns: turning events-stream entries into ``job_events`` rows, dead letters and
``jobs`` upserts, and the entry-by-entry fallback for a batch Postgres rejects
as bad data.

Invariants:
- One transaction per batch: insert the events (``ON CONFLICT DO NOTHING
  RETURNING``), fold ONLY the newly inserted ones into ``jobs`` with
  :func:`projections.fold.project`, commit. A job is keyed by (queue, job_id).
  Replaying a batch changes nothing and yields no new events (so metrics count
  each event once).
- Batches touching a queue are serialized across projectors by a transaction
  advisory lock per (schema, queue), taken in sorted order (no deadlock), so
  the read-fold-write of a job never loses an update.
- A job receiving an event older than its newest folded one (a claimed batch
  of a dead projector arriving late) is refolded from all its ``job_events``
  in stream order, so the result never depends on delivery order.
- An entry that cannot be decoded or stored (no ``e`` field, bad JSON, a NUL
  character, ``at``/``run_at`` outside 0..253402300799999 ms (year 9999),
  ``attempt``/``max_attempts`` outside int32) goes to ``dead_letters`` with its
  raw bytes and the error.
- A batch that Postgres still rejects as data (SQLSTATE class 22 or 23, see
  :data:`DATA_ERRORS`) is re-applied by :func:`apply_each`: one transaction per
  entry, the failing entries dead-lettered, so one bad entry never blocks others.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Final

import asyncpg
import msgspec

from projections.fold import JobKey, project
from projections.rows import Position, load_states, upsert_states
from streams.events import Event, JobQueued, JobRetryScheduled, decode_event
from streams.state import JobState

MAX_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last storable time
MAX_INT4: Final = 2**31 - 1
# Postgres refusing the data (class 22 data exception, 23 integrity violation; asyncpg
# also raises DataError for an argument it cannot encode, e.g. int4 out of range), as
# opposed to Postgres being unavailable.
DATA_ERRORS: Final = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class Entry(msgspec.Struct, frozen=True):
    """One events-stream entry as read from Redis (``raw`` = field ``e``, None if absent).

    ``deleted`` marks a pending entry whose content is gone from the stream: it is
    only acknowledged.
    """

    queue: str
    entry_id: str
    raw: bytes | None
    deleted: bool = False


class Decoded(msgspec.Struct, frozen=True):
    """A decodable entry: its queue, stream position, event and raw JSON."""

    queue: str
    pos: Position
    event: Event
    raw: bytes


class Applied(msgspec.Struct, frozen=True):
    """A newly projected event with the job state before (None if unknown) and after it."""

    event: Event
    before: JobState | None
    after: JobState


class BatchResult(msgspec.Struct):
    """What one batch did."""

    entries: int = 0
    inserted: int = 0
    dead_lettered: list[str] = msgspec.field(default_factory=list)  # queue of each new one
    applied: list[Applied] = msgspec.field(default_factory=list)


_INSERT_EVENTS: Final = """
INSERT INTO job_events (queue, entry_ms, entry_seq, job_id, type, kind, attempt, at, data)
SELECT u.q, u.ms, u.seq, u.j, u.t, u.k, u.a, ms_ts(u.at_ms), u.d::jsonb
FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[],
            $7::int4[], $8::int8[], $9::text[]) AS u(q, ms, seq, j, t, k, a, at_ms, d)
ORDER BY u.q, u.ms, u.seq
ON CONFLICT DO NOTHING
RETURNING queue, entry_ms, entry_seq
"""

_INSERT_DEAD: Final = """
INSERT INTO dead_letters (queue, entry_ms, entry_seq, raw, error)
SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bytea[], $5::text[])
ON CONFLICT DO NOTHING
RETURNING queue
"""

_HISTORY: Final = """
SELECT e.queue, e.job_id, e.data::text AS data, e.entry_ms, e.entry_seq FROM job_events e
JOIN unnest($1::text[], $2::text[]) AS k(q, id) ON e.queue = k.q AND e.job_id = k.id
ORDER BY e.job_id, e.queue, e.entry_ms, e.entry_seq
"""


def parse_entry_id(entry_id: str) -> Position:
    """``"<ms>-<seq>"`` -> (ms, seq)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def invalid_values(event: Event) -> str | None:
    """Why ``event`` cannot be stored (a time or count out of Postgres range), or None."""
    if not 0 <= event.at <= MAX_MS:
        return f"at={event.at} is outside the storable range 0..{MAX_MS} ms"
    if not 0 <= event.attempt <= MAX_INT4:
        return f"attempt={event.attempt} is outside the storable range 0..{MAX_INT4}"
    if isinstance(event, (JobQueued, JobRetryScheduled)) and not 0 <= event.run_at <= MAX_MS:
        return f"run_at={event.run_at} is outside the storable range 0..{MAX_MS} ms"
    if isinstance(event, JobQueued) and not 0 <= event.max_attempts <= MAX_INT4:
        return f"max_attempts={event.max_attempts} is outside the storable range 0..{MAX_INT4}"
    return None


def decode_entries(entries: list[Entry]) -> tuple[list[Decoded], list[tuple[Entry, str]]]:
    """Split entries into decoded events (in stream order) and (entry, error) dead letters."""
    good: list[Decoded] = []
    bad: list[tuple[Entry, str]] = []
    for entry in entries:
        if entry.deleted:
            continue
        if entry.raw is None:
            bad.append((entry, "entry has no 'e' field"))
            continue
        if b"\\u0000" in entry.raw:
            bad.append((entry, "event contains a NUL character, which Postgres cannot store"))
            continue
        try:
            event = decode_event(entry.raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            bad.append((entry, f"{type(exc).__name__}: {exc}"))
            continue
        invalid = invalid_values(event)
        if invalid is not None:
            bad.append((entry, f"invalid event: {invalid}"))
            continue
        good.append(Decoded(entry.queue, parse_entry_id(entry.entry_id), event, entry.raw))
    good.sort(key=lambda d: (d.queue, d.pos))
    return good, bad


async def _lock_queues(conn: asyncpg.Connection, lock_prefix: str, queues: set[str]) -> None:
    for queue in sorted(queues):
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{lock_prefix}:{queue}"
        )


async def _insert_events(
    conn: asyncpg.Connection, events: list[Decoded]
) -> set[tuple[str, int, int]]:
    if not events:
        return set()
    cols: tuple[list[object], ...] = tuple([] for _ in range(9))
    for d in events:
        e = d.event
        row = (d.queue, d.pos[0], d.pos[1], e.job_id, _tag(e), e.kind, e.attempt, e.at)
        for col, v in zip(cols, row, strict=False):
            col.append(v)
        cols[8].append(d.raw.decode())
    rows = await conn.fetch(_INSERT_EVENTS, *cols)
    return {(r["queue"], r["entry_ms"], r["entry_seq"]) for r in rows}


async def _insert_dead(conn: asyncpg.Connection, bad: list[tuple[Entry, str]]) -> list[str]:
    if not bad:
        return []
    pos = [parse_entry_id(e.entry_id) for e, _ in bad]
    rows = await conn.fetch(
        _INSERT_DEAD,
        [e.queue for e, _ in bad],
        [p[0] for p in pos],
        [p[1] for p in pos],
        [e.raw or b"" for e, _ in bad],
        [err for _, err in bad],
    )
    return [r["queue"] for r in rows]


def _tag(event: Event) -> str:
    return str(type(event).__struct_config__.tag)


async def refold(
    conn: asyncpg.Connection, keys: list[JobKey]
) -> dict[JobKey, tuple[JobState, Position]]:
    """Fold the jobs ``keys`` from scratch from their ``job_events`` history."""
    out: dict[JobKey, tuple[JobState, Position]] = {}
    rows = await conn.fetch(_HISTORY, [q for q, _ in keys], [j for _, j in keys])
    for r in rows:
        key = (r["queue"], r["job_id"])
        prev = out.get(key)
        state = project(prev[0] if prev else None, key[0], decode_event(r["data"]))
        out[key] = (state, (r["entry_ms"], r["entry_seq"]))
    return out


async def _fold(conn: asyncpg.Connection, new: list[Decoded]) -> list[Applied]:
    by_job: dict[JobKey, list[Decoded]] = defaultdict(list)
    for d in new:
        by_job[(d.queue, d.event.job_id)].append(d)
    current = await load_states(conn, sorted(by_job))
    late = sorted(k for k, evs in by_job.items() if k in current and evs[0].pos < current[k][1])
    applied: list[Applied] = []
    out: dict[JobKey, tuple[JobState, Position]] = {}
    for key, evs in by_job.items():
        if key in current and evs[0].pos < current[key][1]:
            continue
        state, last = current.get(key, (None, (0, 0)))
        for d in evs:
            after = project(state, key[0], d.event)
            applied.append(Applied(d.event, state, after))
            state, last = after, max(last, d.pos)
        assert state is not None
        out[key] = (state, last)
    if late:
        refolded = await refold(conn, late)
        out.update(refolded)
        for key in late:
            applied.extend(Applied(d.event, None, refolded[key][0]) for d in by_job[key])
    await upsert_states(conn, (out[k] for k in sorted(out)))
    return applied


async def apply_batch(
    conn: asyncpg.Connection, entries: list[Entry], lock_prefix: str
) -> BatchResult:
    """Project ``entries`` in one transaction; return what was newly applied."""
    good, bad = decode_entries(entries)
    async with conn.transaction():
        await _lock_queues(conn, lock_prefix, {e.queue for e in entries})
        dead = await _insert_dead(conn, bad)
        inserted = await _insert_events(conn, good)
        new = [d for d in good if (d.queue, *d.pos) in inserted]
        applied = await _fold(conn, new) if new else []
    return BatchResult(entries=len(entries), inserted=len(new), dead_lettered=dead, applied=applied)


async def apply_each(
    conn: asyncpg.Connection, entries: list[Entry], lock_prefix: str
) -> BatchResult:
    """Apply ``entries`` one per transaction, dead-lettering those Postgres rejects as data.

    The fallback for a batch that failed with one of :data:`DATA_ERRORS`; any
    other error (an outage) propagates, and replaying what already committed is
    a no-op.
    """
    total = BatchResult(entries=len(entries))
    for entry in entries:
        try:
            one = await apply_batch(conn, [entry], lock_prefix)
        except DATA_ERRORS as exc:
            error = f"rejected by Postgres: {type(exc).__name__}: {exc}".replace("\x00", "")
            async with conn.transaction():
                dead = await _insert_dead(conn, [(entry, error)])
            one = BatchResult(entries=1, dead_lettered=dead)
        total.inserted += one.inserted
        total.dead_lettered.extend(one.dead_lettered)
        total.applied.extend(one.applied)
    return total
