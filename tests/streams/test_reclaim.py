"""Crashes and zombies: a killed worker's job runs once more; a paused one writes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest
import redis.asyncio as aioredis

from streams.client import Client
from streams.events import JobCompleted, JobFailed, JobQueued, JobStarted
from streams.settings import Settings
from tests.streams.helpers import events_of, run_burst, tags, wait_for

pytestmark = pytest.mark.anyio
TERMINAL = ("job.completed", "job.canceled")


@pytest.fixture
def spawn(env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.wait()


def worker_proc(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "jobstream.cli", "worker", "--queues", "default", *extra]
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)


def terminal_count(evs: Sequence[object]) -> int:
    return sum(1 for e in evs if isinstance(e, JobCompleted | JobFailed) and (
        isinstance(e, JobCompleted) or not e.will_retry))  # fmt: skip


async def _started_by_proc(redis: aioredis.Redis, settings: Settings, job_id: str) -> str:
    worker = ""

    async def started() -> bool:
        nonlocal worker
        evs = await events_of(redis, settings, job_id=job_id)
        s = [e for e in evs if isinstance(e, JobStarted)]
        worker = s[0].worker if s else ""
        return bool(s)

    await wait_for(started, timeout_s=30, what="the worker process to start the job")
    return worker


async def _job_on_worker_proc(
    settings: Settings,
    redis: aioredis.Redis,
    env: dict[str, str],
    spawn: list[subprocess.Popen[bytes]],
    seconds: float,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Enqueue a demo.sleep job, start a worker process; return it, the job id and the
    consumer name once that worker has started the job."""
    async with Client(settings) as c:
        job_id = await c.enqueue("demo.sleep", {"seconds": seconds})
    proc = worker_proc(env)
    spawn.append(proc)
    return proc, job_id, await _started_by_proc(redis, settings, job_id)


async def test_sigkilled_worker_job_completes_once_elsewhere(
    settings: Settings,
    redis: aioredis.Redis,
    env: dict[str, str],
    spawn: list[subprocess.Popen[bytes]],
) -> None:
    proc, job_id, first = await _job_on_worker_proc(settings, redis, env, spawn, 1.0)
    proc.kill()
    proc.wait()
    await run_burst(settings)  # reclaims once the dead worker's heartbeat expires
    evs = await events_of(redis, settings, job_id=job_id)
    assert tags(evs) == [
        "job.queued", "job.started", "job.failed", "job.queued", "job.started", "job.completed"
    ]  # fmt: skip
    lost = evs[2]
    assert isinstance(lost, JobFailed) and lost.error_type == "WorkerLost" and lost.will_retry
    assert isinstance(evs[3], JobQueued) and evs[3].reason == "reclaim"
    second = evs[4]
    assert isinstance(second, JobStarted) and second.worker != first and second.attempt == 2
    assert terminal_count(evs) == 1


async def test_paused_worker_past_its_lease_writes_nothing(
    settings: Settings,
    redis: aioredis.Redis,
    env: dict[str, str],
    spawn: list[subprocess.Popen[bytes]],
) -> None:
    proc, job_id, zombie = await _job_on_worker_proc(settings, redis, env, spawn, 1.0)
    os.kill(proc.pid, signal.SIGSTOP)
    await run_burst(settings)  # takes the job over and completes it
    before = await events_of(redis, settings, job_id=job_id)
    assert tags(before)[-1] == "job.completed"
    os.kill(proc.pid, signal.SIGCONT)  # the zombie wakes up, its handler finishes...
    assert proc.stderr is not None
    seen = b""
    while b"lease lost" not in seen:  # ...and it finds out it lost the lease
        line = proc.stderr.readline()
        assert line, "worker exited without reporting the lost lease"
        seen += line
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    after = await events_of(redis, settings, job_id=job_id)
    assert after == before
    assert not [e for e in after[len(before) :] if getattr(e, "worker", "") == zombie]
    assert terminal_count(after) == 1


@pytest.mark.parametrize(
    ("sleep_s", "grace_s", "last"),
    [(0.5, "20", "job.completed"), (120, "0.5", "job.queued")],
    ids=["short-job-finishes", "long-job-handed-back"],
)
async def test_sigterm_drains_then_hands_back(
    settings: Settings,
    redis: aioredis.Redis,
    env: dict[str, str],
    spawn: list[subprocess.Popen[bytes]],
    sleep_s: float,
    grace_s: str,
    last: str,
) -> None:
    env = {**env, "JOBSTREAM_SHUTDOWN_GRACE_S": grace_s}
    proc, job_id, _ = await _job_on_worker_proc(settings, redis, env, spawn, sleep_s)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    evs = await events_of(redis, settings, job_id=job_id)
    assert tags(evs) == ["job.queued", "job.started", last]
    if last == "job.queued":  # handed back: same attempt, not counted as a failure
        handed = evs[-1]
        assert isinstance(handed, JobQueued) and handed.reason == "handback"
        assert handed.attempt == 1
