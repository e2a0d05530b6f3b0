"""Live events over SSE (a burst worker runs the job), and status from the projection."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

import handlers
from jobstream.web_events import start_position
from projections import db
from projections.projector import Projector, ProjectorConfig
from streams.keys import Keys
from streams.settings import Settings
from streams.worker import Worker
from tests.web.conftest import ADMIN, READ

pytestmark = pytest.mark.anyio


def parse_sse(text: str) -> list[dict[str, str]]:
    """The frames of an SSE body (comments dropped), each as its field -> value."""
    frames = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            frames.append(fields)
    return frames


async def run_burst_worker(settings: Settings) -> None:
    with anyio.fail_after(30):
        await Worker(settings, handlers.registry(), burst=True).run()


async def test_sse_streams_a_job_until_completed(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    body = {"kind": "demo.progress", "payload": {"steps": 3}}
    job_id = (await http.post("/jobs", headers=READ, json=body)).json()["job_id"]
    other = (await http.post("/jobs", headers=READ, json={"kind": "demo.noop"})).json()["job_id"]
    result: dict[str, Any] = {}

    async def follow() -> None:
        with anyio.fail_after(30):
            result["r"] = await http.get(f"/jobs/{job_id}/events", headers=READ)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await anyio.sleep(0.3)  # the stream is open and idle before the worker starts
        tg.start_soon(run_burst_worker, settings)
    r: httpx.Response = result["r"]
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(r.text)
    types = [f["event"] for f in frames]
    assert types[0] == "job.queued" and types[1] == "job.started"
    assert types.count("job.progress") == 3
    assert types[-1] == "job.completed"  # ends right after the terminal event
    events = [json.loads(f["data"]) for f in frames]
    assert {e["job_id"] for e in events} == {job_id}  # the other job is filtered out
    assert other not in r.text
    assert json.loads(frames[-1]["data"])["result"] == {"steps": 3}
    # Completed, gone from Redis, and no projection: the web cannot tell its queue.
    assert (await http.get(f"/jobs/{job_id}/events", headers=READ)).status_code == 404


async def test_sse_ends_after_cancel_and_404_for_unknown(http: httpx.AsyncClient) -> None:
    body = {"kind": "demo.noop", "delay_s": 60}
    job_id = (await http.post("/jobs", headers=READ, json=body)).json()["job_id"]
    assert (await http.post(f"/jobs/{job_id}/cancel", headers=ADMIN)).status_code == 200
    with anyio.fail_after(10):
        r = await http.get(f"/jobs/{job_id}/events", headers=READ)
    frames = parse_sse(r.text)
    assert [f["event"] for f in frames] == ["job.queued", "job.canceled"]
    # Resuming after the first frame (Last-Event-ID) replays only what came later.
    resumed = await http.get(
        f"/jobs/{job_id}/events", headers={**READ, "Last-Event-ID": frames[0]["id"]}
    )
    assert [f["event"] for f in parse_sse(resumed.text)] == ["job.canceled"]
    assert (await http.get("/jobs/unknown/events", headers=READ)).status_code == 404


async def test_sse_ends_when_the_terminal_event_was_trimmed(
    http: httpx.AsyncClient, redis: aioredis.Redis, settings: Settings
) -> None:
    body = {"kind": "demo.noop", "delay_s": 60}
    job_id = (await http.post("/jobs", headers=READ, json=body)).json()["job_id"]
    assert (await http.post(f"/jobs/{job_id}/cancel", headers=ADMIN)).status_code == 200
    await redis.xtrim(Keys(settings.namespace).queue("default").events, maxlen=0)
    with anyio.fail_after(10):
        r = await http.get(f"/jobs/{job_id}/events", headers=READ)
    assert [f["event"] for f in parse_sse(r.text)] == ["end"]


async def test_status_from_the_projection_with_events(
    http: httpx.AsyncClient, settings: Settings, schema: str
) -> None:
    job_id = (await http.post("/jobs", headers=READ, json={"kind": "demo.noop"})).json()["job_id"]
    await run_burst_worker(settings)
    await db.migrate_settings(settings, schema)
    try:
        config = ProjectorConfig(schema=schema, consumer="web-test", block_ms=50)
        async with Projector(settings, config) as projector:
            with anyio.fail_after(30):
                await projector.run(until_caught_up=True)
        r = await http.get(f"/jobs/{job_id}", headers=READ)
        assert r.status_code == 200
        job = r.json()
        assert (job["source"], job["status"]) == ("projection", "completed")
        assert [e["type"] for e in job["events"]] == ["job.queued", "job.started", "job.completed"]
        # A completed job has left Redis; its event stream is served from the stream still.
        r = await http.get(f"/jobs/{job_id}/events", headers=READ)
        assert parse_sse(r.text)[-1]["event"] == "job.completed"
    finally:
        conn = await db.connect(settings, schema)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


def test_frames_are_single_line_json() -> None:
    assert b"\n" not in msgspec.json.encode({"a": "line\nbreak"})
    assert start_position("1-2") == "1-2"
    assert start_position("1-2\nevent: x") == "0-0"
    assert start_position(None) == "0-0"
