"""The seven lifecycle events: the schema of the event log.

Owns: the event types, their stable wire tags and their JSON encoding.
Invariants:
- Tags are explicit strings (``job.queued`` ...), never derived from class names.
- Schema evolution adds fields with defaults only; a changed meaning is a new tag.
- ``at`` is milliseconds since the Unix epoch taken from the Redis server
  (``TIME`` inside the script that appended the event), never a client clock.
- ``payload`` and ``result`` travel as raw JSON (:class:`msgspec.Raw`): this
  module never knows a handler's payload type.
- Every event carries ``attempt`` (1-based number of the attempt it concerns).

On the wire, an events-stream entry has one field ``e`` holding the event JSON.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

Priority = Literal["high", "medium", "low"]
QueuedReason = Literal["enqueue", "retry", "reclaim", "handback", "operator"]


class _Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    job_id: str
    queue: str
    kind: str
    attempt: int
    at: int = 0


class JobQueued(_Event, tag="job.queued", frozen=True):
    """Enqueued, or re-queued (after a retry delay, a reclaim, a hand-back, an operator retry).

    ``run_at`` is the due time in ms; it is later than ``at`` for a delayed job,
    which then waits in the delayed set until promoted.
    """

    payload: msgspec.Raw
    priority: Priority = "medium"
    run_at: int = 0
    max_attempts: int = 3
    timeout_s: float = 300.0
    dedup_key: str | None = None
    reason: QueuedReason = "enqueue"


class JobStarted(_Event, tag="job.started", frozen=True):
    """A worker took the job."""

    worker: str = ""


class JobProgress(_Event, tag="job.progress", frozen=True):
    """The handler reported progress."""

    fraction: float = 0.0
    message: str = ""


class JobCompleted(_Event, tag="job.completed", frozen=True):
    """The attempt succeeded (terminal)."""

    result: msgspec.Raw
    duration_ms: float = 0.0


class JobFailed(_Event, tag="job.failed", frozen=True):
    """An attempt failed; terminal when ``will_retry`` is false (the job is dead)."""

    error_type: str = ""
    message: str = ""
    will_retry: bool = False
    duration_ms: float = 0.0


class JobRetryScheduled(_Event, tag="job.retry_scheduled", frozen=True):
    """A retry is due later; ``attempt`` is the number of the coming attempt."""

    run_at: int = 0
    delay_ms: int = 0


class JobCanceled(_Event, tag="job.canceled", frozen=True):
    """Canceled while queued, delayed, waiting for a retry or running (terminal)."""

    by: str = ""
    reason: str = ""


Event = (
    JobQueued
    | JobStarted
    | JobProgress
    | JobCompleted
    | JobFailed
    | JobRetryScheduled
    | JobCanceled
)
EVENT_TYPES: Final = (
    JobQueued,
    JobStarted,
    JobProgress,
    JobCompleted,
    JobFailed,
    JobRetryScheduled,
    JobCanceled,
)
TAGS: Final[tuple[str, ...]] = tuple(str(t.__struct_config__.tag) for t in EVENT_TYPES)

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """Encode one event to its wire JSON."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    """Decode wire JSON into an event; raises :class:`msgspec.ValidationError`/DecodeError."""
    return _decoder.decode(data)


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of the event union (what ``docs/events.schema.json`` holds)."""
    schema: dict[str, Any] = msgspec.json.schema(Event)
    schema["title"] = "jobstream lifecycle event"
    schema["description"] = (
        "One entry of a jobstream events stream (field 'e'). A foreign producer "
        "enqueues by XADDing a job.queued object (without 'at') as field 'job' to "
        "<ns>:{<queue>}:ready:<priority>."
    )
    return schema
