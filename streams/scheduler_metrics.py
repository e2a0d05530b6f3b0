"""Prometheus metrics and health of one scheduler process.

Owns: the scheduler's metric names (ticks fired and skipped per spec, jobs
promoted, failed steps) and its health rule: healthy while its cron step has
succeeded recently (a scheduler that cannot reach Redis, or whose loop is stuck,
fails ``/healthz``). Labels are spec names and step names only, never job ids.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge

# a cron step runs at least every MAX_LOOP_SLEEP_S (1 s); three missed seconds and
# a generous margin for a slow Redis make it unhealthy
HEALTHY_WITHIN_S = 15.0


class SchedulerMetrics:
    """The metrics of one scheduler, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.fired = Counter(
            "jobstream_scheduler_ticks_fired", "Cron ticks enqueued", ["spec"], registry=r
        )
        self.skipped = Counter(
            "jobstream_scheduler_ticks_skipped",
            "Cron ticks skipped by the overlap policy",
            ["spec"],
            registry=r,
        )
        self.promoted = Counter(
            "jobstream_scheduler_promoted", "Delayed and retry jobs promoted", registry=r
        )
        self.step_errors = Counter(
            "jobstream_scheduler_step_errors", "Failed scheduler steps", ["step"], registry=r
        )
        self.last_cron_step = Gauge(
            "jobstream_scheduler_last_cron_step_seconds",
            "Unix time of the last successful cron evaluation",
            registry=r,
        )
        self._last_ok = time.monotonic()

    def cron_step_ok(self) -> None:
        self._last_ok = time.monotonic()
        self.last_cron_step.set_to_current_time()

    def healthy(self) -> bool:
        return time.monotonic() - self._last_ok < HEALTHY_WITHIN_S


def spec_of(tick_id: str) -> str:
    """The spec name in a tick's job id ``cron:{name}:{tick}``."""
    return tick_id.split(":", 2)[1] if tick_id.count(":") >= 2 else tick_id
