"""The projection's fold step: one job's ``jobs`` row from its ``job_events``, event by event.

Owns: :func:`project`, the ONLY function that folds an event into a projected
job state; the incremental projector (:mod:`projections.store`) and the
rebuild/check (:mod:`projections.maintenance`) both fold with it, so a rebuild
equals the incremental result.

A job is identified by (queue, job_id): Redis makes job ids unique per queue
only, so ``order-42`` in queue ``a`` and ``order-42`` in queue ``b`` are two
jobs (two ``jobs`` rows). The row's ``queue`` is always the queue of the
events stream the events came from.

Rule (incarnations): an explicit job id may be reused in the SAME queue once the
core forgot the finished job (its done marker expires after 24 h); Redis then
runs a brand-new job under that id. So a ``job.queued`` event with reason
``enqueue`` and attempt 1 arriving for a terminal job starts a new incarnation:
it is folded from None (a fresh state), not into the old row, which
:func:`streams.state.evolve` would leave unchanged (terminal states absorb).
The row then shows the newest incarnation; ``job_events`` keeps the history of
every incarnation. Any other event (an operator retry, a stale duplicate) goes
through :func:`streams.state.evolve` unchanged.
"""

from __future__ import annotations

import msgspec

from streams.events import Event, JobQueued
from streams.state import JobState, evolve

JobKey = tuple[str, str]  # (queue, job_id): what identifies a job in the projection


def starts_incarnation(state: JobState | None, event: Event) -> bool:
    """True when ``event`` begins a new job reusing the id of the terminal job ``state``."""
    return (
        state is not None
        and state.terminal
        and isinstance(event, JobQueued)
        and event.reason == "enqueue"
        and event.attempt == 1
    )


def project(state: JobState | None, queue: str, event: Event) -> JobState:
    """Fold ``event`` (read from ``queue``'s events stream) into the projected ``state``."""
    if starts_incarnation(state, event):
        state = None
    after = evolve(state, event)
    if after.queue != queue:  # a foreign event naming another queue: the stream decides
        after = msgspec.structs.replace(after, queue=queue)
    return after
