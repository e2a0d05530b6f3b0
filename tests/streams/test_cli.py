"""The core CLI contract: enqueue / worker --burst / cancel / retry / events tail."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest
import redis.asyncio as aioredis

from streams.settings import Settings
from tests.streams.helpers import events_of, tags

pytestmark = pytest.mark.anyio


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([sys.executable, "-m", "jobstream.cli", *args], env=env,
                                   check=False)  # fmt: skip


async def test_enqueue_worker_tail_cancel_retry(
    env: dict[str, str], settings: Settings, redis: aioredis.Redis
) -> None:
    p = await cli(env, "enqueue", "demo.progress", "--payload", '{"steps": 2}',
                  "--priority", "high", "--max-attempts", "2", "--dedup-key", "d1")  # fmt: skip
    assert p.returncode == 0, p.stderr
    job_id = p.stdout.decode().strip()
    again = await cli(env, "enqueue", "demo.progress", "--dedup-key", "d1")
    assert again.stdout.decode().strip() == job_id
    delayed = (await cli(env, "enqueue", "demo.noop", "--delay", "3600")).stdout.decode().strip()
    p = await cli(env, "worker", "--burst", "--concurrency", "2")
    assert p.returncode == 0, p.stderr
    assert tags(await events_of(redis, settings, job_id=job_id))[-1] == "job.completed"
    p = await cli(env, "cancel", delayed)
    assert (p.returncode, p.stdout) == (0, b"canceled\n")
    p = await cli(env, "retry", delayed)
    assert (p.returncode, p.stdout) == (0, b"queued\n")
    p = await cli(env, "cancel", "no-such-job")
    assert (p.returncode, p.stdout) == (1, b"missing\n")
    p = await cli(env, "events", "tail", "--from-start", "--job", job_id, "--count", "5")
    lines = p.stdout.decode().splitlines()
    assert [line.split()[1] for line in lines] == [
        "job.queued", "job.started", "job.progress", "job.progress", "job.completed"
    ]  # fmt: skip
    assert "50% step 1 of 2" in lines[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "demo.sleep", "--payload", "{nope"], "--payload is not valid JSON"),
        (["enqueue", "demo.sleep", "--payload", '{"seconds": "x"}'], "$.seconds"),
        (["enqueue", "demo.unknown"], "unknown job kind 'demo.unknown'"),
        (["enqueue", "demo.noop", "--queue", "bad{queue}"], "invalid queue name"),
        (["enqueue", "demo.noop", "--payload", '{"x": "' + "y" * 2000 + '"}'], "over the cap"),
    ],
)
async def test_bad_input_is_refused_clearly(
    env: dict[str, str], args: list[str], message: str
) -> None:
    p = await cli({**env, "JOBSTREAM_PAYLOAD_CAP_BYTES": "1024"}, *args)
    assert p.returncode == 2
    assert message in p.stderr.decode()
    assert "Traceback" not in p.stderr.decode()


async def test_unreachable_redis_names_no_password(env: dict[str, str]) -> None:
    bad = {**env, "REDIS_URL": "redis://u:topsecretpw@127.0.0.1:1/0"}
    p = await cli(bad, "enqueue", "demo.noop")
    assert p.returncode == 2
    err = p.stderr.decode()
    assert "cannot reach Redis at redis://u:***@127.0.0.1:1/0" in err
    assert "topsecretpw" not in err
