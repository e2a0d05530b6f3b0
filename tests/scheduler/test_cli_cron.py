"""The cron CLI as a user runs it: ``cron list``, ``cron run NAME``, ``scheduler`` + SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio
import asyncpg
import pytest
import redis.asyncio as aioredis

from handlers.schedules import SCHEDULES
from streams.client import Client
from streams.cron import CronSpec
from streams.keys import Keys
from streams.scheduler import Scheduler
from streams.settings import Settings
from tests.scheduler.conftest import SimClock

pytestmark = pytest.mark.anyio
CLI = [sys.executable, "-m", "jobstream.cli"]
NO_POSTGRES = "postgresql://nobody@127.0.0.1:9/none"


async def jobstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([*CLI, *args], env=env, check=False)


async def test_cron_run_then_list_without_postgres(
    env: dict[str, str], redis: aioredis.Redis
) -> None:
    env = {**env, "DATABASE_URL": NO_POSTGRES}
    ran = await jobstream(env, "cron", "run", "recalculate-benchmarks")
    assert ran.returncode == 0, ran.stderr
    job_id = ran.stdout.decode().strip()
    assert job_id.startswith("cron:recalculate-benchmarks:manual-")

    listed = await jobstream(env, "cron", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {s.name for s in SCHEDULES}
    row = rows["recalculate-benchmarks"]
    assert row["cron"] == "0 * * * *" and row["timezone"] == "UTC"
    fires = [datetime.fromisoformat(t) for t in row["next"]]
    assert len(fires) == 3 and all(f.minute == 0 and f.second == 0 for f in fires)
    assert row["last_run"] == {"job_id": job_id, "status": "queued", "source": "redis"}
    assert rows["cleanup-orphaned-files"]["last_run"]["job_id"] is None

    table = await jobstream(env, "cron", "list")
    assert b"send-quarterly-reminders" in table.stdout and b"never" in table.stdout

    bad = await jobstream(env, "cron", "run", "no-such-spec")
    assert bad.returncode == 2 and b"no cron spec" in bad.stderr


async def test_cron_list_reads_last_run_from_the_projection(
    env: dict[str, str], settings: Settings, redis: aioredis.Redis
) -> None:
    schema = f"t_cron_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        pytest.skip("no Postgres reachable")
    try:
        await conn.execute(
            f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.jobs (job_id text PRIMARY KEY, "
            "status text, enqueued_at timestamptz, finished_at timestamptz)"
        )
        t0 = datetime(2024, 6, 3, 9, tzinfo=UTC)
        rows = [
            ("cron:send-drip-campaign-emails:20240602T0900Z", "completed", t0 - timedelta(days=1)),
            ("cron:send-drip-campaign-emails:20240603T0900Z", "failed", t0),
            ("cron:sendXdrip-campaign-emails:20240604T0900Z", "completed", t0 + timedelta(1)),
        ]
        for job_id, status, at in rows:
            await conn.execute(
                f"INSERT INTO {schema}.jobs VALUES ($1, $2, $3::timestamptz, "
                "$3::timestamptz + interval '1 minute')",
                job_id,
                status,
                at,
            )
        listed = await jobstream({**env, "JOBSTREAM_PG_SCHEMA": schema}, "cron", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        by_name = {r["name"]: r for r in json.loads(listed.stdout)}
        last = by_name["send-drip-campaign-emails"]["last_run"]
        assert (last["job_id"], last["status"], last["source"]) == (
            rows[1][0],
            "failed",
            "postgres",
        )
        assert by_name["aggregate-analytics"]["last_run"]["source"] == "redis"
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def test_scheduler_process_stops_cleanly_on_sigterm(
    env: dict[str, str], settings: Settings, redis: aioredis.Redis
) -> None:
    cursor = Keys(settings.namespace).cron_last
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [*CLI, "scheduler", "--metrics-port", str(port)]
    with anyio.fail_after(20):
        async with await anyio.open_process(cmd, env=env) as proc:
            # The process is up once it has evaluated its specs (it writes their cursors);
            # another process has no event to await, so poll Redis (bounded by fail_after).
            while await redis.zcard(cursor) < len(SCHEDULES):  # noqa: ASYNC110
                await anyio.sleep(0.05)
            health = await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}/healthz")
            metrics = await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}/metrics")
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    assert health == (200, "ok\n")
    assert metrics[0] == 200 and "jobstream_scheduler_last_cron_step_seconds" in metrics[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


async def test_run_loop_stops_on_request(settings: Settings, redis: aioredis.Redis) -> None:
    calls = 0
    evaluated = anyio.Event()
    clock = SimClock(datetime(2024, 6, 3, 10, 0, 1, tzinfo=UTC))

    def now() -> datetime:
        nonlocal calls
        calls += 1
        if calls >= 2:  # the second read comes after the first tick completed
            evaluated.set()
        return clock()

    spec = CronSpec(name="loop", cron="* * * * *", kind="demo.noop")
    async with Client(settings) as client:
        scheduler = Scheduler(client, [spec], now=now)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(scheduler.run, handle_signals=False))
                await evaluated.wait()
                scheduler.stop()
        assert (await scheduler.last_jobs()) == {"loop": "cron:loop:20240603T1000Z"}
    fired = scheduler.metrics.registry.get_sample_value(
        "jobstream_scheduler_ticks_fired_total", {"spec": "loop"}
    )
    assert fired == 1.0
    assert scheduler.metrics.healthy()
