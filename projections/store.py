"""One projector batch, applied to Postgres in one transaction.

Owns: turning events-stream entries into ``job_events`` rows, dead letters and
``jobs`` upserts.

Invariants:
- One transaction per batch: insert the events (``ON CONFLICT DO NOTHING
  RETURNING``), fold ONLY the newly inserted ones into ``jobs`` with
  :func:`streams.state.evolve`, commit. Replaying a batch changes nothing and
  yields no new events (so metrics count each event once).
- Batches touching a queue are serialized across projectors by a transaction
  advisory lock per (schema, queue), taken in sorted order (no deadlock), so
  the read-fold-write of a job never loses an update.
- A job receiving an event older than its newest folded one (a claimed batch
  of a dead projector arriving late) is refolded from all its ``job_events``
  in stream order, so the result never depends on delivery order.
- An entry that cannot be decoded or stored (no ``e`` field, bad JSON, a NUL
  character) goes to ``dead_letters`` with its raw bytes and the error.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Final

import asyncpg
import msgspec

from projections.rows import Position, load_states, upsert_states
from streams.events import Event, decode_event
from streams.state import JobState, evolve


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
SELECT job_id, data::text AS data, entry_ms, entry_seq FROM job_events
WHERE job_id = ANY($1::text[]) ORDER BY job_id, queue, entry_ms, entry_seq
"""


def parse_entry_id(entry_id: str) -> Position:
    """``"<ms>-<seq>"`` -> (ms, seq)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


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
    conn: asyncpg.Connection, job_ids: list[str]
) -> dict[str, tuple[JobState, Position]]:
    """Fold ``job_ids`` from scratch from their ``job_events`` history."""
    out: dict[str, tuple[JobState, Position]] = {}
    for r in await conn.fetch(_HISTORY, job_ids):
        prev = out.get(r["job_id"])
        state = evolve(prev[0] if prev else None, decode_event(r["data"]))
        out[r["job_id"]] = (state, (r["entry_ms"], r["entry_seq"]))
    return out


async def _fold(conn: asyncpg.Connection, new: list[Decoded]) -> list[Applied]:
    by_job: dict[str, list[Decoded]] = defaultdict(list)
    for d in new:
        by_job[d.event.job_id].append(d)
    current = await load_states(conn, sorted(by_job))
    late = sorted(j for j, evs in by_job.items() if j in current and evs[0].pos < current[j][1])
    applied: list[Applied] = []
    out: dict[str, tuple[JobState, Position]] = {}
    for job_id, evs in by_job.items():
        if job_id in current and evs[0].pos < current[job_id][1]:
            continue
        state, last = current.get(job_id, (None, (0, 0)))
        for d in evs:
            after = evolve(state, d.event)
            applied.append(Applied(d.event, state, after))
            state, last = after, max(last, d.pos)
        assert state is not None
        out[job_id] = (state, last)
    if late:
        refolded = await refold(conn, late)
        out.update(refolded)
        for job_id in late:
            applied.extend(Applied(d.event, None, refolded[job_id][0]) for d in by_job[job_id])
    await upsert_states(conn, (out[j] for j in sorted(out)))
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
