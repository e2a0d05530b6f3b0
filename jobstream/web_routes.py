"""The endpoints of ``jobstream web`` and their route table.

Owns: request parsing and the mapping of client results to HTTP statuses:

- ``POST /jobs`` (read token) -> 201 ``{"job_id"}``; 400 bad JSON/field/kind/payload,
  or a ``job_id``/``dedup_key`` that is not 1-256 printable characters (no control
  characters) or starts with the reserved ``cron:`` prefix (the scheduler's tick
  ids: a web caller must not pre-empt a tick); 413 payload over the cap (the body
  itself is cut at cap + 16 KiB before parsing).
- ``GET /jobs/{job_id}`` (read) -> the projection's job with ``events`` when Postgres
  has it, else the live Redis state; ``source`` says which; 404 if neither.
- ``GET /jobs/{job_id}/events`` (read) -> SSE of the job's events until terminal;
  ``Last-Event-ID`` resumes; 503 when the stream cap is reached. The slot is
  reserved in the handler, before the response starts, and released when the
  response ends (finished, limit reached, client gone, error). Each stream is
  bounded in time and in entries scanned (:mod:`jobstream.web_events`).
- ``POST /jobs/{job_id}/cancel`` (admin) -> 200 canceled, 202 cancelling (running),
  404 missing, 409 terminal. ``POST /jobs/{job_id}/retry`` (admin) -> 200 queued,
  404 missing, 409 not dead/canceled.
- ``GET /healthz`` (no auth) -> 200 when Redis answers PING, else 503.
- ``GET /metrics`` (no auth, like every jobstream process) -> Prometheus text.
  Deliberately unauthenticated: Prometheus scrapes it without a token, and it
  carries no job id, payload or token (labels are route templates, methods and
  statuses only; see :class:`jobstream.web_http.WebMetrics`). Restrict it at the
  network level (ingress, NetworkPolicy) if its request counts must stay private.

Invariants: no payload or token is ever logged; errors are ``{"error": "..."}``;
path job ids are 1-256 printable characters (400 otherwise).
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
from starlette.types import Receive, Scope, Send

from jobstream.web_events import JobEventFollower, before, start_position
from jobstream.web_http import ApiError, Endpoint, Level, guarded, json_response, read_body
from jobstream.web_state import StreamSlot, WebState
from streams.client import JobRequest
from streams.errors import PayloadTooLarge
from streams.events import Priority

BODY_SLACK_BYTES = 16 * 1024
_MAX_ID_LEN = 256
RESERVED_PREFIX = "cron:"  # the scheduler's job ids and dedup keys (streams.cron)


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


def check_id(what: str, value: str, *, reserved_ok: bool) -> str:
    """``value`` if it is 1-256 printable characters (and, unless ``reserved_ok``, not
    ``cron:``-prefixed); else ApiError 400. The message never echoes the value."""
    if not 0 < len(value) <= _MAX_ID_LEN:
        raise ApiError(400, f"{what} must be 1-{_MAX_ID_LEN} characters")
    if not value.isprintable():
        raise ApiError(400, f"{what} must be printable characters (no control characters)")
    if not reserved_ok and value.startswith(RESERVED_PREFIX):
        raise ApiError(
            400, f"{what} must not start with {RESERVED_PREFIX!r}: reserved for the cron scheduler"
        )
    return value


def _job_id(request: Request) -> str:
    """The path's job id; ``cron:`` ids are fine here (reading or cancelling a tick's job)."""
    return check_id("job id", str(request.path_params["job_id"]), reserved_ok=True)


async def enqueue(request: Request) -> Response:
    web = state_of(request)
    raw = await read_body(request, web.settings.payload_cap_bytes + BODY_SLACK_BYTES)
    try:
        body = msgspec.json.decode(raw, type=EnqueueBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    for what, value in (("job_id", body.job_id), ("dedup_key", body.dedup_key)):
        if value is not None:
            check_id(what, value, reserved_ok=False)
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


async def _locate(web: WebState, job_id: str, resume: bool) -> tuple[str, str | None]:
    """The job's queue and, unless ``resume``, the id of its first entry if the projection
    knows it (where a stream can start instead of ``0-0``); 404 if the job is unknown."""
    queue = await web.client.locate(job_id)
    detail = None if resume and queue is not None else await web.projection.get_job(job_id)
    if queue is None and detail is not None:
        queue = detail.queue
    if queue is None:
        raise ApiError(404, f"job {job_id!r} not found")
    first = detail.events[0].entry_id if detail is not None and detail.events else None
    return queue, first


class SlotStreamingResponse(StreamingResponse):
    """A streaming response that releases its :class:`StreamSlot` when it ends, however:
    finished, client gone before or during the body, or an error."""

    def __init__(self, content: AsyncIterator[bytes], slot: StreamSlot) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:  # an abandoned generator would otherwise wait for the GC
                with anyio.CancelScope(shield=True):
                    await aclose()


async def job_events(request: Request) -> Response:
    web, job_id = state_of(request), _job_id(request)
    resume = start_position(request.headers.get("last-event-id"))
    queue, first = await _locate(web, job_id, resume != "0-0")
    slot = web.reserve_stream()  # no await between the cap check and the count
    if slot is None:
        raise ApiError(503, "too many open event streams; retry later", {"Retry-After": "5"})
    try:
        follower = JobEventFollower(
            web.stream_redis,
            web.client.keys,
            queue,
            job_id,
            position=before(first) if resume == "0-0" and first else resume,
            block_ms=web.sse_block_ms,
            keepalive_s=web.keepalive_s,
            max_duration_s=web.max_stream_s,
            max_scan=web.max_scan_entries,
        )
        return SlotStreamingResponse(follower.frames(), slot)
    except BaseException:
        slot.release()
        raise


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
