"""The CLI commands (as subprocesses) and an end-to-end run with the real worker."""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import asyncpg
import pytest

from handlers import demo
from projections import maintenance
from projections.projector import ProjectorConfig
from streams.client import Client, JobRequest
from streams.registry import Backoff
from streams.settings import Settings
from streams.worker import Worker
from tests.projections.conftest import make_projector, metric_total
from tests.projections.eventgen import Producer

pytestmark = pytest.mark.anyio


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobstream.cli", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_cli_commands(
    pg: asyncpg.Connection, env: dict[str, str], schema: str, producer: Producer
) -> None:
    env = {**env, "JOBSTREAM_PG_SCHEMA": schema}
    await producer.jobs(14)
    run = anyio.to_thread.run_sync
    assert (await run(lambda: _cli(env, "migrate"))).returncode == 0
    done = await run(lambda: _cli(env, "projector", "--until-caught-up", "--metrics-port", "0"))
    assert done.returncode == 0, done.stderr
    show = await run(lambda: _cli(env, "jobs", "show", "j1", "--json"))
    job = json.loads(show.stdout)
    assert job["status"] == "completed" and job["attempt"] == 2 and job["error"] == "boom"
    assert job["events"][0]["type"] == "job.queued" and job["events"][0]["at"]
    listed = json.loads((await run(lambda: _cli(env, "jobs", "list", "--json"))).stdout)
    assert len(listed) == 14 and "events" not in listed[0]
    failed = await run(lambda: _cli(env, "jobs", "list", "--status", "failed", "--since", "1h"))
    assert "j2" in failed.stdout and "job_id" in failed.stdout.splitlines()[0]
    stats = json.loads((await run(lambda: _cli(env, "stats", "--json"))).stdout)
    assert stats["by_status"]["completed"] == 4
    assert (await run(lambda: _cli(env, "projections", "check"))).returncode == 0
    assert (await run(lambda: _cli(env, "projections", "rebuild"))).returncode == 0
    assert (await run(lambda: _cli(env, "projections", "check"))).returncode == 0
    pruned = await run(lambda: _cli(env, "projections", "prune", "--older-than", "30d"))
    assert pruned.returncode == 0 and "pruned 0 jobs" in pruned.stdout
    assert (await run(lambda: _cli(env, "jobs", "show", "nope"))).returncode == 1


async def test_end_to_end_with_burst_worker(
    pg: asyncpg.Connection, pg_settings: Settings, config: ProjectorConfig
) -> None:
    registry = demo.registry(Backoff(base_s=0.01, max_s=0.05))
    requests = [JobRequest(kind="demo.noop", payload={}) for _ in range(30)]
    requests += [JobRequest(kind="demo.progress", payload={"steps": 3}) for _ in range(5)]
    requests += [JobRequest(kind="demo.flaky", payload={"failures": 1}) for _ in range(5)]
    async with Client(pg_settings, registry=registry) as client:
        ids = await client.enqueue_many(requests)
    with anyio.fail_after(60):
        await Worker(pg_settings, registry, burst=True, concurrency=8).run()
    async with make_projector(pg_settings, config) as p:
        with anyio.fail_after(60):
            await p.run(until_caught_up=True)
    rows = {r["job_id"]: r for r in await pg.fetch("SELECT * FROM jobs")}
    assert set(rows) == set(ids)
    assert {r["status"] for r in rows.values()} == {"completed"}
    assert sorted(r["attempt"] for r in rows.values())[-5:] == [2] * 5
    assert all(r["progress"] == 1.0 for r in rows.values())
    events = await pg.fetchval("SELECT count(*) FROM job_events")
    assert metric_total(p.metrics.registry, "jobstream_projector_events_total") == events
    assert metric_total(p.metrics.registry, "jobstream_jobs_completed_total") == 40
    assert (await maintenance.check(pg)).ok
