"""Running one claimed job: decode, call the handler under its timeout, decide the op.

Owns: the outcome rules of an attempt.
- unknown kind, oversized or undecodable payload, oversized result: dead at once (no retry) with
  a clear error — bad input is never retried and never crashes the worker;
- success: ``complete`` with the encoded result;
- an exception or the timeout: ``fail``, retried after the handler's backoff while
  attempts remain (the finish script decides, atomically);
- cancelled by an operator: ``canceled``; cancelled by shutdown: ``handback``.
Error messages are redacted before they are written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec

from streams.context import JobContext
from streams.ops import ClaimedJob, Op, OpBuffer
from streams.redact import redact
from streams.registry import Handler, Registry

log = logging.getLogger("jobstream.worker")
MAX_RESULT_BYTES = 64 * 1024
_encode = msgspec.json.Encoder().encode


class Running:
    """A job being executed: its cancel scope and why it was cancelled."""

    __slots__ = ("cancel_reason", "job", "scope")

    def __init__(self, job: ClaimedJob) -> None:
        self.job = job
        self.scope = anyio.CancelScope()
        self.cancel_reason: str | None = None  # "operator" | "shutdown"

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.scope.cancel()


def _dead(job: ClaimedJob, error_type: str, message: str) -> Op:
    log.error("job %s (%s) dead-lettered: %s: %s", job.job_id, job.kind, error_type, message)
    return Op("fail", job, error_type, redact(message), "0", "-1")


def _fail(job: ClaimedJob, handler: Handler[Any], exc: BaseException, elapsed_ms: float) -> Op:
    etype = "Timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
    msg = f"exceeded its timeout of {job.timeout_s}s" if etype == "Timeout" else str(exc)
    delay = handler.backoff.delay_ms(job.attempt)
    log.warning("job %s (%s) attempt %d failed: %s", job.job_id, job.kind, job.attempt, etype)
    return Op("fail", job, etype, redact(msg), f"{elapsed_ms:.3f}", str(delay))


async def run_job(
    job: ClaimedJob,
    running: Running,
    registry: Registry,
    buffer: OpBuffer,
    resources: Mapping[str, Any],
    payload_cap_bytes: int,
) -> Op:
    """Run ``job`` to an outcome and return the op recording it."""
    handler = registry.get(job.kind)
    if handler is None:
        return _dead(job, "UnknownKind", f"no handler for job kind {job.kind!r} in this worker")
    if len(job.payload) > payload_cap_bytes:  # a foreign producer bypassed the door
        size = len(job.payload)
        return _dead(job, "PayloadTooLarge", f"payload is {size} bytes, over {payload_cap_bytes}")
    try:
        payload = msgspec.json.decode(job.payload, type=handler.payload_type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _dead(job, "PayloadDecodeError", f"payload of {job.kind!r} is invalid: {exc}")

    async def report(fraction: float, message: str) -> None:
        buffer.add(Op("progress", job, repr(float(fraction)), message))

    ctx = JobContext(
        job_id=job.job_id,
        kind=job.kind,
        queue=job.queue,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        report=report,
        resources=resources,
    )
    t0 = time.perf_counter()
    result: Any = None
    error: BaseException | None = None
    # one cancel scope per job: its deadline is the timeout, cancel() is an operator or shutdown
    running.scope.deadline = anyio.current_time() + job.timeout_s
    with running.scope:
        try:
            result = await handler.fn(ctx, payload)
        except Exception as exc:
            error = exc
    elapsed_ms = (time.perf_counter() - t0) * 1000
    # interrupted: the scope caught its cancellation, or the handler turned it into an
    # exception of its own (a cleanup that raised while being cancelled)
    scope = running.scope
    if scope.cancelled_caught or (error is not None and scope.cancel_called):
        if running.cancel_reason == "operator":
            return Op("canceled", job, "operator", "canceled while running")
        if running.cancel_reason == "shutdown":
            return Op("handback", job)
        error = TimeoutError()
    if error is not None:
        return _fail(job, handler, error, elapsed_ms)
    try:
        encoded = _encode(result)
    except (TypeError, msgspec.EncodeError) as exc:
        return _dead(job, "ResultEncodeError", f"result of {job.kind!r} is not JSON: {exc}")
    if len(encoded) > MAX_RESULT_BYTES:
        return _dead(
            job, "ResultTooLarge", f"result is {len(encoded)} bytes, over {MAX_RESULT_BYTES}"
        )
    return Op("complete", job, encoded.decode(), f"{elapsed_ms:.3f}")
