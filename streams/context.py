"""What a handler receives besides its payload: :class:`JobContext`.

Owns: the job's identity (``job_id``, ``attempt`` — use them to make side effects
idempotent), progress reporting, and the per-process resources handlers share
(clients opened once per worker process, never by a handler itself).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any


class JobContext:
    """The context of one attempt of one job."""

    __slots__ = ("_report", "attempt", "job_id", "kind", "max_attempts", "queue", "resources")

    def __init__(
        self,
        *,
        job_id: str,
        kind: str,
        queue: str,
        attempt: int,
        max_attempts: int,
        report: Callable[[float, str], Awaitable[None]],
        resources: Mapping[str, Any],
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self.queue = queue
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.resources = resources
        self._report = report

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1) with a short message; appends a ``job.progress`` event."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("progress fraction must be within 0..1")
        await self._report(fraction, message[:500])
