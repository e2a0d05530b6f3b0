"""The endpoints of ``jobstream web`` and their route table.

Owns: request parsing and the mapping of client results to HTTP statuses:

- ``POST /jobs`` (read token) -> 201 ``{"job_id"}``; 400 bad JSON/field/kind/payload,
  413 payload over the cap (the body itself is cut at cap + 16 KiB before parsing).
- ``GET /jobs/{job_id}`` (read) -> the projection's job with ``events`` when Postgres
  has it, else the live Redis state; ``source`` says which; 404 if neither.
- ``GET /jobs/{job_id}/events`` (read) -> SSE of the job's events until terminal;
  ``Last-Event-ID`` resumes; 503 when the stream cap is reached.
- ``POST /jobs/{job_id}/cancel`` (admin) -> 200 canceled, 202 cancelling (running),
  404 missing, 409 terminal. ``POST /jobs/{job_id}/retry`` (admin) -> 200 queued,
  404 missing, 409 not dead/canceled.
- ``GET /healthz`` (no auth) -> 200 when Redis answers PING, else 503.
- ``GET /metrics`` (no auth, like every jobstream process) -> Prometheus text.

Invariants: no payload or token is ever logged; errors are ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import msgspec
import redis.exceptions
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from jobstream.web_events import JobEventFollower, start_position
from jobstream.web_http import ApiError, Endpoint, Level, guarded, json_response, read_body
from jobstream.web_state import WebState
from streams.client import JobRequest
from streams.errors import PayloadTooLarge
from streams.events import Priority

BODY_SLACK_BYTES = 16 * 1024
_MAX_ID_LEN = 256


class EnqueueBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The JSON body of ``POST /jobs``; ``payload`` is kept as raw JSON."""

    kind: str
    payload: msgspec.Raw = msgspec.Raw()
    queue: str | None = None
    priority: Priority | None = None
    delay_s: float | None = None
    max_attempts: int | None = None
    dedup_key: str | None = None
    job_id: str | None = None


class CancelBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str = ""


def state_of(request: Request) -> WebState:
    return cast(WebState, request.app.state.web)


def _job_id(request: Request) -> str:
    job_id = str(request.path_params["job_id"])
    if not 0 < len(job_id) <= _MAX_ID_LEN:
        raise ApiError(400, f"job id must be 1-{_MAX_ID_LEN} characters")
    return job_id


async def enqueue(request: Request) -> Response:
    web = state_of(request)
    raw = await read_body(request, web.settings.payload_cap_bytes + BODY_SLACK_BYTES)
    try:
        body = msgspec.json.decode(raw, type=EnqueueBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    payload = bytes(body.payload)
    req = JobRequest(
        kind=body.kind,
        payload=None if payload in (b"", b"null") else payload,
        queue=body.queue,
        priority=body.priority,
        delay_s=body.delay_s,
        max_attempts=body.max_attempts,
        dedup_key=body.dedup_key,
        job_id=body.job_id,
    )
    try:
        (job_id,) = await web.client.enqueue_many([req])
    except PayloadTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except ValueError as exc:  # EnqueueError, and invalid queue names
        raise ApiError(400, str(exc)) from None
    return json_response({"job_id": job_id}, 201)


async def get_job(request: Request) -> Response:
    web, job_id = state_of(request), _job_id(request)
    detail = await web.projection.get_job(job_id)
    if detail is not None:
        return json_response({"source": "projection", **msgspec.structs.asdict(detail)})
    info = await web.client.get_job(job_id)
    if info is not None:
        return json_response({"source": "redis", **msgspec.structs.asdict(info)})
    raise ApiError(404, f"job {job_id!r} not found")


async def _queue_of(web: WebState, job_id: str) -> str:
    queue = await web.client.locate(job_id)
    if queue is None:
        detail = await web.projection.get_job(job_id)
        queue = detail.queue if detail is not None else None
    if queue is None:
        raise ApiError(404, f"job {job_id!r} not found")
    return queue


async def job_events(request: Request) -> Response:
    web, job_id = state_of(request), _job_id(request)
    queue = await _queue_of(web, job_id)
    if web.open_streams >= web.max_streams:
        raise ApiError(503, "too many open event streams; retry later", {"Retry-After": "5"})
    follower = JobEventFollower(
        web.stream_redis,
        web.client.keys,
        queue,
        job_id,
        position=start_position(request.headers.get("last-event-id")),
        block_ms=web.sse_block_ms,
        keepalive_s=web.keepalive_s,
    )

    async def body() -> AsyncIterator[bytes]:
        web.open_streams += 1
        web.metrics.streams.inc()
        try:
            async for chunk in follower.frames():
                yield chunk
        finally:
            web.open_streams -= 1
            web.metrics.streams.dec()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def cancel(request: Request) -> Response:
    web, job_id = state_of(request), _job_id(request)
    raw = await read_body(request, BODY_SLACK_BYTES)
    try:
        body = msgspec.json.decode(raw, type=CancelBody) if raw.strip() else CancelBody()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    result = await web.client.cancel(job_id, by="web", reason=body.reason)
    status = {"canceled": 200, "cancelling": 202, "missing": 404, "terminal": 409}[result]
    return json_response({"job_id": job_id, "result": result}, status)


async def retry(request: Request) -> Response:
    web, job_id = state_of(request), _job_id(request)
    result = await web.client.retry(job_id)
    status = 200 if result == "queued" else 404 if result == "missing" else 409
    return json_response({"job_id": job_id, "result": result}, status)


async def healthz(request: Request) -> Response:
    web = state_of(request)
    try:
        with anyio.fail_after(2):
            ok = bool(await web.client.redis.ping())
    except (TimeoutError, OSError, redis.exceptions.RedisError):
        ok = False
    return PlainTextResponse("ok\n" if ok else "unhealthy\n", 200 if ok else 503)


async def metrics(request: Request) -> Response:
    data = generate_latest(state_of(request).metrics.registry)
    return Response(data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def redis_unavailable(request: Request, exc: Exception) -> Response:
    """Redis down mid-request: 503 with a message that names no URL or secret."""
    return json_response({"error": "redis unavailable"}, 503, {"Retry-After": "5"})


def routes() -> list[Route]:
    """The route table; the access level of each route is fixed here."""

    def tokens(request: Request) -> Any:
        return state_of(request).tokens

    def auth(level: Level, endpoint: Endpoint) -> Endpoint:
        return guarded(level, endpoint, tokens)

    return [
        Route("/jobs", auth("read", enqueue), methods=["POST"]),
        Route("/jobs/{job_id}", auth("read", get_job), methods=["GET"]),
        Route("/jobs/{job_id}/events", auth("read", job_events), methods=["GET"]),
        Route("/jobs/{job_id}/cancel", auth("admin", cancel), methods=["POST"]),
        Route("/jobs/{job_id}/retry", auth("admin", retry), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
