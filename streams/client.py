"""The producer client: enqueue, cancel, retry, look up — usable from a web request.

Owns: validating a job at the door (payload cap, payload type when the kind is
registered, queue/priority/options), and the calls of the enqueue / cancel / retry
/ promote scripts. One connection pool per :class:`Client`; no global state.

Invariants: ``enqueue`` and ``enqueue_many`` are one script call per queue per
batch (pipelined across queues); a dedup key or explicit job id makes enqueue
idempotent; nothing secret (the Redis URL's password) is ever put in an error.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis

from streams.errors import EnqueueError, PayloadTooLarge
from streams.events import Priority
from streams.keys import PRIORITIES, Keys, validate_queue
from streams.registry import Registry
from streams.scripts import Scripts
from streams.settings import Settings

CancelResult = Literal["canceled", "cancelling", "terminal", "missing"]
MAX_DELAY_S = 10 * 365 * 24 * 3600
MAX_RUN_AT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, what timestamptz holds
_encode = msgspec.json.Encoder().encode


class JobRequest(msgspec.Struct, kw_only=True):
    """One job to enqueue. ``None`` options take the kind's registered defaults."""

    kind: str
    payload: Any = None
    queue: str | None = None
    priority: Priority | None = None
    delay_s: float | None = None
    run_at_ms: int | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    dedup_key: str | None = None
    job_id: str | None = None


class JobInfo(msgspec.Struct, kw_only=True):
    """A live (not completed) job as Redis holds it."""

    job_id: str
    queue: str
    kind: str
    state: str
    attempt: int
    max_attempts: int
    priority: str


def _encode_jobs(jobs: list[list[Any]]) -> bytes:
    """The enqueue script's batch: one JSON array of string arrays (one ARGV, so redis-py
    packs one argument per batch instead of nine per job; the payload travels as a JSON
    string and is appended to the event verbatim)."""
    return _encode([[a.decode() if isinstance(a, bytes) else str(a) for a in job] for job in jobs])


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def new_job_id() -> str:
    return uuid.uuid4().hex


class Client:
    """Producer and admin client for one namespace.

    Use ``async with Client(settings) as c:`` or call :meth:`aclose`. Pass
    ``registry`` to validate payloads and take a kind's queue/priority defaults.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry | None = None,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.keys = Keys(settings.namespace)
        self._own = redis is None
        self.redis = redis or aioredis.Redis.from_url(settings.redis_url, max_connections=64)
        self.scripts = Scripts(self.redis)
        self._known_queues: set[str] = set()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self.redis.aclose()

    # -- enqueue ---------------------------------------------------------------

    async def enqueue(self, kind: str, payload: Any = None, **options: Any) -> str:
        """Enqueue one job; returns its id (the existing one on a dedup hit)."""
        return (await self.enqueue_many([JobRequest(kind=kind, payload=payload, **options)]))[0]

    async def enqueue_many(self, requests: Iterable[JobRequest]) -> list[str]:
        """Enqueue a batch in one round trip; returns the job ids in order."""
        by_queue: dict[str, list[tuple[int, list[Any]]]] = {}
        count = 0
        for i, req in enumerate(requests):
            queue, args = self._prepare(req)
            by_queue.setdefault(queue, []).append((i, args))
            count = i + 1
        ids: list[str] = [""] * count
        new_queues = [q for q in by_queue if q not in self._known_queues]
        if new_queues:  # once per queue per client: the set of known queues
            await self.redis.sadd(self.keys.queues, *new_queues)
            self._known_queues.update(new_queues)
        calls = [
            (
                "enqueue",
                self.keys.queue(queue).prefix,
                [self.settings.dedup_ttl_s, _encode_jobs([args for _, args in items])],
            )
            for queue, items in by_queue.items()
        ]
        results = await self.scripts.batch(calls)
        for items, res in zip(by_queue.values(), results):
            for (i, _), job_id in zip(items, res[0::2]):
                ids[i] = _s(job_id)
        return ids

    def _prepare(self, req: JobRequest) -> tuple[str, list[Any]]:
        handler = self.registry.get(req.kind) if self.registry else None
        if self.registry is not None and handler is None:
            raise EnqueueError(f"unknown job kind {req.kind!r}")
        queue = validate_queue(req.queue or (handler.queue if handler else "default"))
        priority = req.priority or (handler.priority if handler else "medium")
        if priority not in PRIORITIES:
            raise EnqueueError(f"priority must be one of {', '.join(PRIORITIES)}")
        payload = self._encode_payload(req, handler.payload_type if handler else None)
        max_attempts = req.max_attempts or (handler.max_attempts if handler else 3)
        timeout_s = req.timeout_s or (handler.timeout_s if handler else 300.0)
        if not 1 <= max_attempts <= 1000 or not (0 < timeout_s < 1e7):
            raise EnqueueError("max_attempts must be 1-1000 and timeout_s a positive number")
        run_at = 0
        if req.run_at_ms is not None:
            run_at = int(req.run_at_ms)
            if not 0 <= run_at <= MAX_RUN_AT_MS:
                raise EnqueueError("run_at must be a time in ms between 1970 and 9999")
        elif req.delay_s:
            if not 0 <= req.delay_s <= MAX_DELAY_S:  # also refuses NaN and infinity
                raise EnqueueError(f"delay must be 0-{MAX_DELAY_S} seconds (10 years)")
            run_at = -max(1, int(req.delay_s * 1000))
        dedup = req.dedup_key or ""
        if len(dedup) > 256 or (req.job_id is not None and not 0 < len(req.job_id) <= 256):
            raise EnqueueError("dedup_key and job_id must be at most 256 characters")
        job_id = req.job_id or new_job_id()
        xid = "1" if req.job_id else "0"
        args = [job_id, req.kind, priority, run_at, max_attempts, repr(float(timeout_s)),
                dedup, payload, xid]  # fmt: skip
        return queue, args

    def _encode_payload(self, req: JobRequest, payload_type: type[Any] | None) -> bytes:
        p = req.payload
        data = p if isinstance(p, bytes) else _encode({} if p is None else p)
        if len(data) > self.settings.payload_cap_bytes:
            raise PayloadTooLarge(
                f"payload of {req.kind!r} is {len(data)} bytes, over the cap of "
                f"{self.settings.payload_cap_bytes}"
            )
        try:
            decoded = msgspec.json.decode(data, type=payload_type or Any)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise EnqueueError(f"payload of {req.kind!r} is invalid: {exc}") from None
        return data if payload_type is None or isinstance(p, bytes) else _encode(decoded)

    # -- admin -----------------------------------------------------------------

    async def queues(self) -> list[str]:
        """Every queue this namespace has seen, sorted."""
        names = await self.redis.smembers(self.keys.queues)
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    async def locate(self, job_id: str) -> str | None:
        """The queue holding live job ``job_id``, or None."""
        queues = await self.queues()
        pipe = self.redis.pipeline(transaction=False)
        for q in queues:
            pipe.exists(self.keys.queue(q).job(job_id))
        found = await pipe.execute()
        return next((q for q, hit in zip(queues, found) if hit), None)

    async def get_job(self, job_id: str) -> JobInfo | None:
        """The live state of ``job_id`` from Redis (None once completed or unknown)."""
        queue = await self.locate(job_id)
        if queue is None:
            return None
        raw = await self.redis.hgetall(self.keys.queue(queue).job(job_id))
        h = {_s(k): _s(v) for k, v in raw.items()}
        if not h:
            return None
        return JobInfo(
            job_id=job_id,
            queue=queue,
            kind=h["kind"],
            state=h.get("state", "queued"),
            attempt=int(h["attempt"]),
            max_attempts=int(h["maxa"]),
            priority=h["prio"],
        )

    async def cancel(self, job_id: str, *, by: str = "api", reason: str = "") -> CancelResult:
        """Cancel a queued, delayed or running job."""
        queue = await self.locate(job_id)
        if queue is None:
            return "missing"
        res = await self.scripts.call(
            "cancel",
            self.keys.queue(queue).prefix,
            [job_id, by, reason[:500], self.settings.dead_ttl_s, self.keys.control],
        )
        out: CancelResult = _s(res)  # type: ignore[assignment]
        return out

    async def retry(self, job_id: str) -> str:
        """Re-queue a dead or canceled job; returns 'queued', 'missing' or its state."""
        queue = await self.locate(job_id)
        if queue is None:
            return "missing"
        res = await self.scripts.call("retry", self.keys.queue(queue).prefix, [job_id])
        return res.decode() if isinstance(res, bytes) else str(res)

    async def promote_due(
        self, queue: str, *, now_ms: int = 0, limit: int = 1000
    ) -> tuple[int, int]:
        """Promote due delayed jobs of ``queue``; returns (promoted, next due ms or -1)."""
        res = await self.scripts.call(
            "promote", self.keys.queue(queue).prefix, [limit], now_ms=now_ms
        )
        return int(res[0]), int(res[1])

    async def ensure_groups(self, queues: Sequence[str]) -> None:
        """Create the worker group on every ready stream of ``queues`` (idempotent)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(self.keys.queues, *queues)
        for q in queues:
            for stream in self.keys.queue(q).ready_all:
                pipe.xgroup_create(stream, "workers", id="0", mkstream=True)
        for res in await pipe.execute(raise_on_error=False):
            if isinstance(res, Exception) and "BUSYGROUP" not in str(res):
                raise res
