"""Every Redis key name jobstream uses, built in one place.

Layout (``ns`` = namespace, ``q`` = queue name; ``{q}`` is a Redis Cluster hash
tag, so every key of one queue lives in one slot and every per-queue script is
cluster-safe)::

    ns:queues                     SET    known queue names (outside any hash tag)
    ns:control                    PUBSUB channel: "cancel <queue> <job_id>" to running workers
    ns:cron:last                  ZSET   cron spec name -> last tick evaluated (ms; only moves up)
    ns:cron:lastjob               HASH   cron spec name -> id of the job it fired last
    ns:{q}:ready:high|medium|low  STREAM ready entries, fields id=<job_id> (internal) or
                                  job=<job.queued JSON> (a foreign producer); group "workers"
    ns:{q}:delayed                ZSET   job_id -> due time (ms) for delayed jobs and retries
    ns:{q}:job:<job_id>           HASH   the job's spec and run state while it is not
                                  finished (dead/canceled specs stay for dead_ttl_s)
    ns:{q}:events                 STREAM the event log of the queue; field e=<event JSON>
    ns:{q}:dedup:<key>            STRING job_id, with TTL
    ns:{q}:cancel                 SET    running jobs asked to cancel
    ns:{q}:workers                ZSET   consumer name -> heartbeat expiry (ms)
    ns:{q}:dead                   ZSET   dead (failed, canceled) job ids -> time (ms)
    ns:{q}:deadletter             STREAM entries that could not be read as jobs, with the error
    ns:{q}:paused                 STRING present while the queue is paused

Invariant: queue names are validated (no braces, no colon), so a queue can never
escape its hash tag.
"""

from __future__ import annotations

import re

import msgspec

PRIORITIES: tuple[str, ...] = ("high", "medium", "low")
READY_GROUP = "workers"
_QUEUE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def validate_queue(queue: str) -> str:
    """Return ``queue`` or raise ValueError if it is not a legal queue name."""
    if not _QUEUE_RE.fullmatch(queue):
        raise ValueError(f"invalid queue name {queue!r}: use 1-64 of [A-Za-z0-9_.-]")
    return queue


class QueueKeys(msgspec.Struct, frozen=True):
    """The keys of one queue."""

    ns: str
    queue: str

    @property
    def prefix(self) -> str:
        return f"{self.ns}:{{{self.queue}}}"

    def ready(self, priority: str) -> str:
        return f"{self.prefix}:ready:{priority}"

    @property
    def ready_all(self) -> list[str]:
        return [self.ready(p) for p in PRIORITIES]

    @property
    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def dedup_prefix(self) -> str:
        return f"{self.prefix}:dedup:"

    @property
    def cancel(self) -> str:
        return f"{self.prefix}:cancel"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}:deadletter"

    @property
    def paused(self) -> str:
        return f"{self.prefix}:paused"


class Keys(msgspec.Struct, frozen=True):
    """Key builder for one namespace."""

    ns: str

    @property
    def queues(self) -> str:
        return f"{self.ns}:queues"

    @property
    def control(self) -> str:
        return f"{self.ns}:control"

    @property
    def cron_last(self) -> str:
        return f"{self.ns}:cron:last"

    @property
    def cron_lastjob(self) -> str:
        return f"{self.ns}:cron:lastjob"

    def queue(self, queue: str) -> QueueKeys:
        return QueueKeys(self.ns, validate_queue(queue))
