"""Limits of the live event streams (SSE): the cap under a burst, slots released however a
stream ends, the maximum duration (resumed with Last-Event-ID) and the scan bound."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.types import Message

from jobstream.web_events import before
from jobstream.web_state import WebState
from projections import queries
from streams.keys import Keys
from streams.settings import Settings
from tests.web.conftest import ADMIN, READ, WEB_TOKEN, make_app
from tests.web.test_events import parse_sse

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def limited_app(
    settings: Settings, schema: str, **limits: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient, CollectorRegistry]]:
    """An app with its own stream limits, its lifespan open, and an httpx client on it."""
    registry = CollectorRegistry()
    app = make_app(settings, schema, registry, **limits)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            yield app, client, registry


def web_of(app: Starlette) -> WebState:
    state: WebState = app.state.web
    return state


async def delayed_job(http: httpx.AsyncClient) -> str:
    body = {"kind": "demo.noop", "delay_s": 3600}
    job_id: str = (await http.post("/jobs", headers=READ, json=body)).json()["job_id"]
    return job_id


async def test_a_burst_gets_503_beyond_the_cap_and_streams_end_at_max_duration(
    settings: Settings, schema: str
) -> None:
    async with limited_app(settings, schema, max_streams=2, max_stream_s=1.0) as (app, http, reg):
        job_id = await delayed_job(http)
        responses: list[httpx.Response] = []

        async def follow() -> None:
            responses.append(await http.get(f"/jobs/{job_id}/events", headers=READ))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(follow)
        assert sorted(r.status_code for r in responses) == [200, 200, 503, 503, 503, 503]
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "5" and "too many" in r.json()["error"]
                continue
            frames = parse_sse(r.text)  # a job delayed by an hour: the stream still ends
            assert [f["event"] for f in frames] == ["job.queued", "reconnect"]
            assert json.loads(frames[-1]["data"]) == {"reason": "max stream duration reached"}
            assert frames[-1]["id"] >= frames[0]["id"]
        assert web_of(app).open_streams == 0
        assert reg.get_sample_value("jobstream_web_event_streams") == 0.0
        # The client reconnects with the last id: it gets only what came after.
        resume_at = parse_sse(next(r for r in responses if r.status_code == 200).text)[-1]["id"]
        assert (await http.post(f"/jobs/{job_id}/cancel", headers=ADMIN)).status_code == 200
        r = await http.get(f"/jobs/{job_id}/events", headers={**READ, "Last-Event-ID": resume_at})
        assert [f["event"] for f in parse_sse(r.text)] == ["job.canceled"]


def events_scope(job_id: str, spec_version: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/jobs/{job_id}/events",
        "raw_path": f"/jobs/{job_id}/events".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"web"), (b"authorization", f"Bearer {WEB_TOKEN}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("web", 80),
    }


@pytest.mark.parametrize("disconnect_after_s", [0.0, 0.4])
async def test_slot_is_released_when_the_client_goes_away(
    settings: Settings, schema: str, disconnect_after_s: float
) -> None:
    """Gone before the body starts (the generator never runs) or while it blocks in XREAD."""
    async with limited_app(settings, schema, max_streams=1, max_stream_s=0.5) as (app, http, reg):
        job_id = await delayed_job(http)
        sent: list[Message] = []

        async def receive() -> Message:
            await anyio.sleep(disconnect_after_s)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        with anyio.fail_after(10):
            await app(events_scope(job_id, "2.3"), receive, send)
        assert web_of(app).open_streams == 0
        assert reg.get_sample_value("jobstream_web_event_streams") == 0.0
        # The slot is free again: the next stream is accepted (the cap is 1).
        with anyio.fail_after(10):
            r = await http.get(f"/jobs/{job_id}/events", headers=READ)
        assert r.status_code == 200
        assert [f["event"] for f in parse_sse(r.text)] == ["job.queued", "reconnect"]


async def test_slot_is_released_when_sending_fails(settings: Settings, schema: str) -> None:
    """ASGI spec 2.4 servers report a gone client by failing ``send`` (OSError)."""
    async with limited_app(settings, schema, max_streams=1) as (app, http, reg):
        job_id = await delayed_job(http)

        async def receive() -> Message:
            await anyio.sleep_forever()
            raise AssertionError

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body":
                raise OSError("connection reset")

        with anyio.fail_after(10), suppress(Exception):
            await app(events_scope(job_id, "2.4"), receive, send)
        assert web_of(app).open_streams == 0
        assert reg.get_sample_value("jobstream_web_event_streams") == 0.0


async def test_scan_limit_ends_the_stream_and_projection_start_avoids_it(
    settings: Settings, schema: str, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with limited_app(settings, schema, max_scan_entries=5) as (app, http, _reg):
        for _ in range(8):
            assert (await http.post("/jobs", headers=READ, json={"kind": "demo.noop"})).is_success
        job_id = await delayed_job(http)
        assert (await http.post(f"/jobs/{job_id}/cancel", headers=ADMIN)).status_code == 200
        stream = Keys(settings.namespace).queue("default").events
        entries: Any = await redis.xrange(stream)
        with anyio.fail_after(10):
            r = await http.get(f"/jobs/{job_id}/events", headers=READ)
        frames = parse_sse(r.text)
        assert [f["event"] for f in frames] == ["end"]
        assert json.loads(frames[0]["data"]) == {"reason": "scan limit reached", "resumable": True}
        assert frames[0]["id"] == entries[4][0].decode()  # the 5th entry: resume from there
        # When the projection knows the job's first entry, the stream starts there.
        first = next(e for e, f in entries if job_id.encode() in f[b"e"]).decode()
        detail = projected(job_id, first)

        async def get_job(wanted: str) -> queries.JobDetail | None:
            return detail if wanted == job_id else None

        monkeypatch.setattr(web_of(app).projection, "get_job", get_job)
        with anyio.fail_after(10):
            r = await http.get(f"/jobs/{job_id}/events", headers=READ)
        assert [f["event"] for f in parse_sse(r.text)] == ["job.queued", "job.canceled"]


def projected(job_id: str, first_entry_id: str) -> queries.JobDetail:
    """A projection row for ``job_id`` whose timeline starts at ``first_entry_id``."""
    now = datetime.now(UTC)
    event = queries.EventRow(type="job.queued", at=now, attempt=0, entry_id=first_entry_id, data={})
    return queries.JobDetail(
        job_id=job_id,
        queue="default",
        kind="demo.noop",
        status="canceled",
        priority="normal",
        attempt=0,
        max_attempts=1,
        progress=0.0,
        progress_message="",
        error_type=None,
        error=None,
        worker=None,
        enqueued_at=now,
        run_at=now,
        started_at=None,
        finished_at=now,
        updated_at=now,
        payload=None,
        result=None,
        events=[event],
    )


def test_before_is_the_previous_stream_id() -> None:
    assert before("5-3") == "5-2"
    assert before("5-0") == f"4-{2**64 - 1}"
    assert before("0-0") == "0-0"
    assert before("not-an-id") == "0-0"
    assert before("1-2\nevent: x") == "0-0"
