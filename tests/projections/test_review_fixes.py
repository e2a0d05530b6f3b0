"""Review fixes: bad data never wedges the projector, jobs keyed by (queue, job_id),
one namespace per schema, and deleted pending entries acknowledged on Redis 6.2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from projections import db, fold, maintenance, queries, store
from projections.projector import ProjectorConfig
from projections.redis_io import StreamIO
from streams.events import JobCompleted, JobQueued, JobStarted
from streams.settings import Settings
from tests.projections.conftest import make_projector, metric_total
from tests.projections.eventgen import Producer, lifecycle
from tests.projections.servers import REDIS_62, REDIS_SYSTEM, RedisServer
from tests.projections.test_cli_e2e import _cli

pytestmark = pytest.mark.anyio


def _queued(job_id: str, **fields: Any) -> bytes:
    event = {"type": "job.queued", "job_id": job_id, "queue": "default", "kind": "k",
             "attempt": 1, "at": 1_700_000_000_000, "payload": {}} | fields  # fmt: skip
    return msgspec.json.encode(event)


async def _project(settings: Settings, config: ProjectorConfig, consumer: str = "p1") -> Any:
    async with make_projector(settings, config, consumer) as p:
        with anyio.fail_after(20):
            await p.run(until_caught_up=True)
    return p


async def _dead(pg: asyncpg.Connection) -> list[str]:
    return [r["error"] for r in await pg.fetch("SELECT error FROM dead_letters ORDER BY entry_ms")]


# -- 1. data errors -------------------------------------------------------------


async def test_out_of_range_values_are_dead_lettered_and_projection_goes_on(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    await producer.add_raw("default", {"e": _queued("far", at=10**16)})
    await producer.add_raw("default", {"e": _queued("huge", attempt=3_000_000_000)})
    await producer.add_raw("default", {"e": _queued("late", run_at=-1)})
    await producer.add_raw("default", {"e": _queued("good")})
    p = await _project(pg_settings, config)
    dead = await _dead(pg)
    assert len(dead) == 3
    assert "at=10000000000000000" in dead[0] and "attempt=3000000000" in dead[1]
    assert "run_at=-1" in dead[2]
    assert metric_total(p.metrics.registry, "jobstream_projector_dead_letters_total") == 3
    assert [r["job_id"] for r in await pg.fetch("SELECT job_id FROM jobs")] == ["good"]
    expected = await producer.jobs(7)  # keeps going, and so does another projector
    await _project(pg_settings, config, "p2")
    rows = await pg.fetch("SELECT job_id, status FROM jobs WHERE job_id <> 'good'")
    assert {r["job_id"]: r["status"] for r in rows} == expected
    assert await p.io.pending_count("default") == 0


async def test_batch_postgres_rejects_is_applied_entry_by_entry(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(store, "invalid_values", lambda event: None)  # only Postgres checks
    expected = await producer.jobs(4, prefix="a")
    await producer.add_raw("default", {"e": _queued("far", at=10**16)})  # interval out of range
    await producer.add_raw("default", {"e": _queued("huge", attempt=3_000_000_000)})  # int4
    expected |= await producer.jobs(4, prefix="b")
    p = await _project(pg_settings, config)
    dead = await _dead(pg)
    assert len(dead) == 2 and all(e.startswith("rejected by Postgres: ") for e in dead)
    assert "interval out of range" in dead[0] and "int32 range" in dead[1]
    statuses = {r["job_id"]: r["status"] for r in await pg.fetch("SELECT job_id, status FROM jobs")}
    assert statuses == expected
    assert (
        await pg.fetchval("SELECT count(*) FROM job_events") == producer.appended
    )  # the 2 raw ones are not counted
    assert metric_total(p.metrics.registry, "jobstream_projector_errors_total", source="data") >= 1
    assert (
        metric_total(p.metrics.registry, "jobstream_projector_errors_total", source="postgres") == 0
    )
    assert (await maintenance.check(pg)).ok


# -- 2. (queue, job_id) ---------------------------------------------------------


async def test_same_id_in_two_queues_is_two_jobs(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    t0 = await producer.now_ms()
    await producer.add(lifecycle("order-42", "a", "demo", "completed", t0))
    await producer.add(lifecycle("order-42", "b", "email", "running", t0 + 1000))
    await _project(pg_settings, config)
    rows = await pg.fetch("SELECT queue, kind, status FROM jobs ORDER BY queue")
    assert [tuple(r) for r in rows] == [("a", "demo", "completed"), ("b", "email", "running")]
    newest = await queries.get_job(pg, "order-42")
    assert newest is not None and newest.queue == "b" and len(newest.events) == 3
    in_a = await queries.get_job(pg, "order-42", queue="a")
    assert in_a is not None and in_a.status == "completed" and len(in_a.events) == 4
    assert await queries.get_job(pg, "order-42", queue="c") is None
    assert (await maintenance.check(pg)).ok
    assert await maintenance.rebuild(pg) == 2
    await pg.execute("UPDATE jobs SET finished_at = now() - interval '2 days'")
    pruned = await maintenance.prune(pg, older_than_s=86400)
    assert (pruned.jobs, pruned.events) == (1, 4)
    assert [r["queue"] for r in await pg.fetch("SELECT queue FROM job_events")] == ["b"] * 3


async def test_reused_id_in_same_queue_starts_a_new_incarnation(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, producer: Producer
) -> None:
    t0 = await producer.now_ms()
    await producer.add(lifecycle("r1", "default", "demo", "dead", t0))
    await producer.add(lifecycle("c1", "default", "demo", "canceled", t0))
    await _project(pg_settings, config)  # the first incarnations, in their own batches
    await producer.add(lifecycle("r1", "default", "demo", "running", t0 + 90_000_000))
    await producer.add(lifecycle("c1", "default", "demo", "completed", t0 + 90_000_000))
    await _project(pg_settings, msgspec.structs.replace(config, batch_size=2))
    row = await pg.fetchrow("SELECT * FROM jobs WHERE job_id = 'r1'")
    assert row is not None and row["status"] == "running" and row["attempt"] == 1
    assert row["error"] is None and row["finished_at"] is None and row["progress"] == 0.5
    assert await pg.fetchval("SELECT status FROM jobs WHERE job_id = 'c1'") == "completed"
    incremental = await pg.fetch("SELECT * FROM jobs ORDER BY job_id")
    assert (await maintenance.check(pg)).ok
    await maintenance.rebuild(pg)
    assert await pg.fetch("SELECT * FROM jobs ORDER BY job_id") == incremental


def test_only_a_fresh_enqueue_starts_an_incarnation() -> None:
    j: dict[str, Any] = {"job_id": "x", "queue": "q", "kind": "k"}
    payload = msgspec.Raw(b"{}")
    done = fold.project(None, "q", JobQueued(**j, attempt=1, at=1, payload=payload))
    done = fold.project(done, "q", JobStarted(**j, attempt=1, at=2))
    done = fold.project(done, "q", JobCompleted(**j, attempt=1, at=3, result=payload))
    retry = JobQueued(**j, attempt=1, at=4, payload=payload, reason="retry")
    assert fold.project(done, "q", retry) == done  # a stale re-queue is absorbed
    revive = JobQueued(**j, attempt=2, at=5, payload=payload, reason="operator")
    revived = fold.project(done, "q", revive)
    assert revived.status == "queued" and revived.attempt == 2 and revived.started_at == 2
    fresh = fold.project(done, "q", JobQueued(**j, attempt=1, at=6, payload=payload))
    assert fresh.status == "queued" and fresh.enqueued_at == 6 and fresh.started_at is None
    other = fold.project(None, "stream-q", JobQueued(**j, attempt=1, at=1, payload=payload))
    assert other.queue == "stream-q"  # the stream's queue identifies the job


_INSERT_JOB = (
    "INSERT INTO jobs (job_id, queue, kind, status, attempt, max_attempts, priority, progress, "
    "progress_message, payload, last_entry_ms, last_entry_seq) "
    "VALUES ('j', 'a', 'k', 'queued', 1, 1, 'high', 0, '', '{}', 1, 0)"
)


async def test_migration_002_upgrades_a_001_schema_and_is_idempotent(
    pg_settings: Settings, schema: str
) -> None:
    conn = await db.connect(pg_settings, schema)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        files = dict(db.migration_files())
        await conn.execute(files["001_initial"])
        await conn.execute(_INSERT_JOB)
        await db.migrate(conn, schema)  # 001 again (idempotent), then 002, 003
        await conn.execute(files["002_jobs_queue_key"])  # and 002 once more
        pkey = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'jobs'::regclass AND contype = 'p'"
        )
        assert pkey == "PRIMARY KEY (job_id, queue)"
        await conn.execute(_INSERT_JOB.replace("'a'", "'b'"))  # same id, other queue
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE job_id = 'j'") == 2
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


# -- 3. one namespace per schema ------------------------------------------------


async def test_schema_of_another_namespace_is_refused(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig, schema: str,
    env: dict[str, str],
) -> None:  # fmt: skip
    assert await pg.fetchval("SELECT value FROM projection_meta") == pg_settings.namespace
    other = msgspec.structs.replace(pg_settings, namespace=pg_settings.namespace + "x")
    with pytest.raises(db.NamespaceMismatch, match=pg_settings.namespace):
        await db.migrate_settings(other, schema)
    async with make_projector(other, config) as p:
        with pytest.raises(db.NamespaceMismatch), anyio.fail_after(20):
            await p.run(until_caught_up=True)
    cli_env = {**env, "JOBSTREAM_PG_SCHEMA": schema, "JOBSTREAM_NAMESPACE": other.namespace}
    for args in (["migrate"], ["projector", "--until-caught-up", "--metrics-port", "0"]):
        done = await anyio.to_thread.run_sync(lambda a=args: _cli(cli_env, *a))  # type: ignore[misc]
        assert done.returncode == 2, done.stderr
        assert f"namespace {pg_settings.namespace!r}" in done.stderr
    await _project(pg_settings, config)  # the owner still projects


async def test_projector_claims_an_unclaimed_schema(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig
) -> None:
    await pg.execute("DELETE FROM projection_meta")  # migrated without a namespace
    await _project(pg_settings, config)
    assert await pg.fetchval("SELECT value FROM projection_meta") == pg_settings.namespace


# -- 4. deleted pending entries -------------------------------------------------


@pytest.fixture(params=[REDIS_62, REDIS_SYSTEM], ids=["6.2", "7"])
async def any_redis(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    server = RedisServer(request.param, tmp_path)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_claimed_entries_deleted_from_the_stream_are_acknowledged(
    any_redis: str, pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig
) -> None:
    s = msgspec.structs.replace(pg_settings, redis_url=any_redis)
    client = aioredis.Redis.from_url(any_redis)
    producer = Producer(client, s.namespace)
    await producer.jobs(10)
    async with make_projector(s, config, "dead") as a:
        await a.io.ensure_group("default")
        read = await a.io.read({"default": ">"}, 50, None)  # dies before committing
        await client.xdel(a.io.stream("default"), *(e.entry_id for e in read[3:9]))
        await client.xdel(a.io.stream("default"), read[-1].entry_id)
    p = await _project(s, config, "live")
    assert await p.io.pending_count("default") == 0
    assert await pg.fetchval("SELECT count(*) FROM job_events") == len(read) - 7
    assert await _dead(pg) == []
    await client.aclose()


async def test_own_pending_entry_deleted_on_62_is_acknowledged(tmp_path: Path) -> None:
    server = RedisServer(REDIS_62, tmp_path)
    server.start()
    client = aioredis.Redis.from_url(server.url)
    try:
        io = StreamIO(client, "ns", "projector", "c1")
        await client.xadd(io.stream("q"), {"e": b"x"})
        await io.ensure_group("q")
        first = await io.read({"q": ">"}, 10, None)
        await client.xdel(io.stream("q"), first[0].entry_id)
        again = await io.read({"q": "0"}, 10, None)  # 6.2 answers the deleted one as {}
        assert [e.deleted for e in again] == [True]
    finally:
        await client.aclose()
        server.stop()
