"""Prometheus metrics of the projector (served by streams.metrics_http.MetricsServer).

Owns: the metric names and labels, counting newly projected events, the
queue gauges read from Redis, and ``/metrics`` + ``/healthz``.

Invariants:
- One :class:`CollectorRegistry` per projector (never the global default), so
  several projectors (and tests) in one process do not share state.
- Counters and histograms are fed only with events a batch newly inserted
  (``BatchResult.applied``): a replayed batch adds nothing.
- No job id in any label: labels are queue, kind, priority, type, final.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as CounterMetric

from projections.store import Applied
from streams.events import (
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobQueued,
    JobRetryScheduled,
    JobStarted,
)
from streams.metrics_http import MetricsServer
from streams.state import JobState

__all__ = ["MetricsServer", "ProjectorMetrics"]

_JOB = ("queue", "kind", "priority")
_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class ProjectorMetrics:
    """Every metric of one projector, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.enqueued = CounterMetric("jobstream_jobs_enqueued", "Jobs enqueued", _JOB, registry=r)
        self.started = CounterMetric("jobstream_jobs_started", "Attempts started", _JOB, registry=r)
        self.completed = CounterMetric(
            "jobstream_jobs_completed", "Jobs completed", _JOB, registry=r
        )
        self.failed = CounterMetric(
            "jobstream_jobs_failed",
            "Attempts failed (final=true: the job is dead)",
            (*_JOB, "final"),
            registry=r,
        )
        self.retried = CounterMetric(
            "jobstream_jobs_retried", "Retries scheduled or operator retries", _JOB, registry=r
        )
        self.canceled = CounterMetric("jobstream_jobs_canceled", "Jobs canceled", _JOB, registry=r)
        self.run_s = Histogram(
            "jobstream_job_run_seconds",
            "Attempt run time",
            ("queue", "kind"),
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.wait_s = Histogram(
            "jobstream_job_wait_seconds",
            "Time from ready to started",
            ("queue", "kind"),
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.events = CounterMetric(
            "jobstream_projector_events", "Events newly projected", ("queue", "type"), registry=r
        )
        self.dead_letters = CounterMetric(
            "jobstream_projector_dead_letters", "Entries dead-lettered", ("queue",), registry=r
        )
        self.errors = CounterMetric(
            "jobstream_projector_errors", "Errors by source", ("source",), registry=r
        )
        self.batch_s = Histogram(
            "jobstream_projector_batch_seconds",
            "Batch apply time",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.trimmed = CounterMetric(
            "jobstream_projector_trimmed", "Events-stream entries trimmed", ("queue",), registry=r
        )
        self.depth = Gauge(
            "jobstream_queue_depth", "Ready jobs not yet taken", ("queue",), registry=r
        )
        self.delayed = Gauge(
            "jobstream_queue_delayed", "Delayed jobs and retries", ("queue",), registry=r
        )
        self.pending = Gauge(
            "jobstream_queue_pending",
            "Jobs taken by a worker, not yet acked",
            ("queue",),
            registry=r,
        )
        self.lag_s = Gauge(
            "jobstream_projector_lag_seconds",
            "Age of the oldest unprojected event",
            ("queue",),
            registry=r,
        )
        self.lag_entries = Gauge(
            "jobstream_projector_lag_entries", "Events not yet projected", ("queue",), registry=r
        )

    def count(self, applied: Iterable[Applied]) -> None:
        """Count newly projected events (never replays).

        Counters are summed per label set first and incremented once per batch;
        ``labels()`` lookups are the projector's main metrics cost.
        """
        counts: Counter[tuple[CounterMetric, tuple[str, ...]]] = Counter()
        observed: list[tuple[Histogram, tuple[str, str], float]] = []
        for a in applied:
            self._count_one(a, counts, observed)
        for (metric, labels), n in counts.items():
            metric.labels(*labels).inc(n)
        children: dict[tuple[int, tuple[str, str]], Any] = {}
        for hist, labels, value in observed:
            key = (id(hist), labels)
            child = children.get(key)
            if child is None:
                child = children[key] = hist.labels(*labels)
            child.observe(value)

    def _count_one(
        self,
        a: Applied,
        counts: Counter[tuple[CounterMetric, tuple[str, ...]]],
        observed: list[tuple[Histogram, tuple[str, str], float]],
    ) -> None:
        e, s = a.event, a.after
        job = (e.queue, e.kind, s.priority)
        qk = (e.queue, e.kind)
        counts[self.events, (e.queue, str(type(e).__struct_config__.tag))] += 1
        if isinstance(e, JobQueued):
            if e.reason == "enqueue":
                counts[self.enqueued, job] += 1
            elif e.reason == "operator":
                counts[self.retried, job] += 1
        elif isinstance(e, JobStarted):
            counts[self.started, job] += 1
            wait_ms = _wait_ms(a.before, e.at)
            if wait_ms is not None:
                observed.append((self.wait_s, qk, wait_ms / 1000))
        elif isinstance(e, JobCompleted):
            counts[self.completed, job] += 1
            observed.append((self.run_s, qk, e.duration_ms / 1000))
        elif isinstance(e, JobFailed):
            counts[self.failed, (*job, "false" if e.will_retry else "true")] += 1
            observed.append((self.run_s, qk, e.duration_ms / 1000))
        elif isinstance(e, JobRetryScheduled):
            counts[self.retried, job] += 1
        elif isinstance(e, JobCanceled):
            counts[self.canceled, job] += 1


def _wait_ms(before: JobState | None, started_at: int) -> int | None:
    """Time a job waited to start: from when it became ready (queued, or due) to ``started_at``."""
    if before is None or before.status not in ("queued", "scheduled"):
        return None
    ready_at = max(before.run_at or 0, before.updated_at)
    return max(0, started_at - ready_at)
