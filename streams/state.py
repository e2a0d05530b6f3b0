"""The job state machine: a pure ``evolve(state, event) -> state``.

Owns: the legal transitions of a job, as the worker, the projector and the
tests all understand them. No I/O.

Statuses: ``queued`` (ready to run), ``scheduled`` (delayed, or waiting for a
retry), ``running``, and the terminal ``completed``, ``failed`` (dead: attempts
exhausted or not retryable) and ``canceled``.

Invariants (property-tested in tests/test_state.py):
- ``attempt`` never goes back: an event whose attempt is lower than the state's
  is stale and ignored.
- Terminal states absorb every event, except an operator retry (``job.queued``
  with ``reason="operator"`` and a higher attempt), which revives the job.
- A state is built from the first event seen; ``evolve(None, e)`` of a
  non-``job.queued`` event still yields a state (the projector may see a job's
  later events after its history was pruned).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from streams.events import (
    Event,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRetryScheduled,
    JobStarted,
)

Status = Literal["queued", "scheduled", "running", "completed", "failed", "canceled"]
TERMINAL: Final[frozenset[str]] = frozenset({"completed", "failed", "canceled"})
STATUSES: Final[tuple[str, ...]] = (
    "queued",
    "scheduled",
    "running",
    "completed",
    "failed",
    "canceled",
)


class JobState(msgspec.Struct, kw_only=True):
    """Current state of one job, as folded from its events."""

    job_id: str
    queue: str
    kind: str
    status: Status = "queued"
    attempt: int = 1
    max_attempts: int = 1
    priority: str = "medium"
    progress: float = 0.0
    progress_message: str = ""
    payload: msgspec.Raw = msgspec.Raw(b"{}")
    result: msgspec.Raw | None = None
    error_type: str | None = None
    error: str | None = None
    worker: str | None = None
    enqueued_at: int | None = None
    run_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _revives(state: JobState, event: Event) -> bool:
    return (
        isinstance(event, JobQueued)
        and event.reason == "operator"
        and event.attempt > state.attempt
    )


def evolve(state: JobState | None, event: Event) -> JobState:
    """Apply ``event`` to ``state`` and return the new state (``state`` is not mutated)."""
    if state is None:
        state = JobState(job_id=event.job_id, queue=event.queue, kind=event.kind, attempt=0)
    elif event.attempt < state.attempt or (state.terminal and not _revives(state, event)):
        return state
    new = msgspec.structs.replace(state, attempt=event.attempt, updated_at=event.at)
    _apply(new, event)
    return new


def _apply(s: JobState, e: Event) -> None:
    if isinstance(e, JobQueued):
        s.status = "scheduled" if e.run_at > e.at else "queued"
        s.priority, s.max_attempts, s.payload = e.priority, e.max_attempts, e.payload
        s.run_at = e.run_at
        if s.enqueued_at is None or e.reason == "operator":
            s.enqueued_at = e.at
        if e.reason == "operator":
            s.finished_at, s.result = None, None
        s.progress, s.progress_message = 0.0, ""
    elif isinstance(e, JobStarted):
        s.status, s.worker, s.started_at = "running", e.worker, e.at
    elif isinstance(e, JobProgress):
        s.progress, s.progress_message = e.fraction, e.message
    elif isinstance(e, JobCompleted):
        s.status, s.result, s.finished_at, s.progress = "completed", e.result, e.at, 1.0
    elif isinstance(e, JobFailed):
        s.error_type, s.error = e.error_type, e.message
        if e.will_retry:
            s.status = "scheduled"
        else:
            s.status, s.finished_at = "failed", e.at
    elif isinstance(e, JobRetryScheduled):
        s.status, s.run_at = "scheduled", e.run_at
    elif isinstance(e, JobCanceled):
        s.status, s.finished_at = "canceled", e.at
        s.error_type, s.error = "Canceled", e.reason or f"canceled by {e.by or 'unknown'}"
