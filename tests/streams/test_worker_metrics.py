"""A worker serves its own /metrics (counted only for applied writes) and /healthz."""

from __future__ import annotations

import urllib.request

import anyio
import pytest
import redis.asyncio as aioredis

from streams.client import Client, JobRequest
from streams.settings import Settings
from streams.worker import Worker
from tests.streams.helpers import events_of, fast_registry, tags, wait_for

pytestmark = pytest.mark.anyio


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


async def test_worker_metrics_and_health(settings: Settings, redis: aioredis.Redis) -> None:
    worker = Worker(settings, fast_registry(), concurrency=4, metrics_port=0)
    async with Client(settings) as c, anyio.create_task_group() as tg:
        reqs = [JobRequest(kind="demo.noop") for _ in range(20)]
        reqs += [JobRequest(kind="demo.flaky", payload={"failures": 1}) for _ in range(3)]
        await c.enqueue_many(reqs)
        tg.start_soon(worker.run, name="worker")

        async def all_done() -> bool:
            return tags(await events_of(redis, settings)).count("job.completed") == 23

        await wait_for(all_done, what="23 completions")
        await worker.buffer.wait_empty()
        port = worker.metrics_server_port
        status, body = await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert (
            'jobstream_worker_jobs_total{kind="demo.noop",outcome="completed",queue="default"} 20.0'
            in body
        )
        assert (
            'jobstream_worker_jobs_total{kind="demo.flaky",outcome="failed",queue="default"} 3.0'
            in body
        )
        assert "jobstream_worker_concurrency 4.0" in body
        assert "job_id" not in body
        status, body = await anyio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}/healthz")
        assert (status, body) == (200, "ok\n")
        worker.stop()
