"""Prometheus metrics of one worker process: its own in-flight figures.

Owns: the worker's metric names. Counted only for ops Redis applied (a fenced op,
written by a worker that lost its lease, counts as ``jobstream_worker_fenced_total``
instead). No job id in any label: labels are queue, kind and outcome. The
system-wide totals come from the projector; these are per process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = {
    "complete": "completed",
    "fail": "failed",
    "canceled": "canceled",
    "handback": "handback",
}


class WorkerMetrics:
    """The metrics of one worker, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.in_flight = Gauge(
            "jobstream_worker_in_flight", "Jobs this worker is running now", registry=r
        )
        self.concurrency = Gauge(
            "jobstream_worker_concurrency", "Jobs this worker may run at once", registry=r
        )
        self.jobs = Counter(
            "jobstream_worker_jobs_total",
            "Attempts this worker finished, by outcome",
            ["queue", "kind", "outcome"],
            registry=r,
        )
        self.fenced = Counter(
            "jobstream_worker_fenced_total",
            "Writes refused because this worker had lost the job's lease",
            registry=r,
        )
        self.flush_batch = Histogram(
            "jobstream_worker_flush_batch_ops",
            "Ops written per flush (one round trip)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )

    def applied(self, queue: str, kind: str, op: str) -> None:
        outcome = OUTCOMES.get(op)
        if outcome is not None:
            self.jobs.labels(queue, kind, outcome).inc()
