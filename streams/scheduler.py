"""The scheduler: fires cron specs and promotes due delayed/retry jobs.

Owns: the evaluation of :class:`~streams.cron.CronSpec` s against a clock (one
step is :meth:`Scheduler.tick`, public so tests drive a simulated clock; in
production the clock is the Redis server's TIME, so replicas on hosts whose
clocks disagree still agree on which ticks are due), the
missed-run and overlap policies, the per-spec cursor in Redis, operator runs
(:meth:`Scheduler.fire_now`) and the ``jobstream scheduler`` process loop.

Redis keys (outside any queue hash tag: they are not per queue)::

    ns:cron:last      ZSET  spec name -> last instant evaluated (ms, Redis TIME)
    ns:cron:lastjob   HASH  spec name -> id of the spec's most recently fired job

Invariants:
- A tick's job id is ``cron:{name}:{UTC instant}`` and its dedup key is the same
  string, so any number of replicas (or a replayed evaluation) fire a tick once.
- Jobs are enqueued BEFORE the cursor advances, so a crash in between re-evaluates
  the same ticks, which the dedup key absorbs (a tick is never lost that way).
- The cursor only moves forward (``ZADD GT``): a replica with a slow clock cannot
  rewind it.
- Missed-run policy: a tick at most ``grace_s`` old when evaluated is on time and
  always fires. Older ticks (downtime) follow ``spec.missed``: ``skip`` fires
  none; ``latest`` fires the most recent due tick only (none extra when an on-time
  tick fires, which already covers the catch-up); ``all`` fires each missed tick
  inside ``catchup_window_s``, at most the newest ``catchup_limit``. A spec never
  evaluated before starts from ``now - grace_s``: nothing earlier counts as missed.
- Overlap ``skip``: while the spec's last fired job is queued, scheduled, running
  or being cancelled, a tick fires nothing (it is skipped, not deferred); one
  evaluation fires at most one (the newest) tick of such a spec.
- Promotion is idempotent (the promote script's ZREM decides), so the scheduler
  and every worker may promote the same queue concurrently.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
from anyio import CancelScope
from redis.exceptions import RedisError

from streams.client import Client, JobRequest
from streams.cron import CronError, CronSpec, manual_id, tick_id
from streams.keys import Keys
from streams.registry import Registry
from streams.scheduler_metrics import SchedulerMetrics, spec_of

log = logging.getLogger("jobstream.scheduler")

# Job states (Client.get_job) during which an overlap="skip" spec waits.
LIVE_STATES = frozenset({"queued", "scheduled", "running", "cancel"})
PROMOTE_LIMIT = 1000
MAX_LOOP_SLEEP_S = 1.0


class TickReport(msgspec.Struct, kw_only=True):
    """What one evaluation did.

    ``fired``: job ids enqueued, or found already enqueued (another replica fired
    the same tick first); ``skipped``: tick ids dropped by the overlap policy.
    """

    fired: list[str] = msgspec.field(default_factory=list)
    skipped: list[str] = msgspec.field(default_factory=list)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(t: datetime) -> int:
    return math.floor(t.timestamp() * 1000)


def _from_ms(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def plan_ticks(spec: CronSpec, last: datetime, now: datetime, grace: timedelta) -> list[datetime]:
    """The tick instants to fire for ``spec`` when evaluating ``(last, now]`` (ascending)."""
    if now <= last:
        return []
    on_time_from = max(last, now - grace)
    on_time = list(spec.fires_between(on_time_from, now))
    missed: list[datetime] = []
    if on_time_from > last and spec.missed == "latest" and not on_time:
        newest = spec.prev_fire(on_time_from)
        missed = [newest] if newest is not None and newest > last else []
    elif on_time_from > last and spec.missed == "all":
        window_from = max(last, now - timedelta(seconds=spec.catchup_window_s))
        if window_from < on_time_from:
            missed = list(spec.fires_between(window_from, on_time_from))[-spec.catchup_limit :]
    return missed + on_time


def _check_against_registry(spec: CronSpec, registry: Registry | None) -> None:
    """Raise CronError now (start-up) if ``spec``'s kind or payload would be refused later."""
    if registry is None:
        return
    handler = registry.get(spec.kind)
    if handler is None:
        raise CronError(f"cron spec {spec.name!r}: unknown job kind {spec.kind!r}")
    try:
        msgspec.convert(spec.payload, handler.payload_type)
    except msgspec.ValidationError as exc:
        raise CronError(f"cron spec {spec.name!r}: invalid payload: {exc}") from None


class Scheduler:
    """Evaluates cron specs against a clock and enqueues their ticks through ``client``.

    ``now`` returns an aware datetime (tests pass a simulated clock); ``grace_s``
    is how late a tick may be evaluated and still count as on time.
    """

    def __init__(
        self,
        client: Client,
        specs: Sequence[CronSpec],
        *,
        now: Callable[[], datetime] | None = None,
        grace_s: float = 60.0,
        promote: bool = True,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise CronError("cron spec names must be unique")
        for spec in specs:
            _check_against_registry(spec, client.registry)
        self.client = client
        self.specs: dict[str, CronSpec] = {s.name: s for s in specs}
        self.keys = Keys(client.settings.namespace)
        self.grace = timedelta(seconds=grace_s)
        self.promote_enabled = promote
        self._now = now
        self._stop = anyio.Event()
        self.metrics = metrics or SchedulerMetrics()

    async def clock(self) -> datetime:
        """Now: the injected clock (tests), else the Redis server's TIME (DESIGN §2), so
        replicas on hosts with skewed clocks agree on which ticks are due."""
        if self._now is not None:
            return self._now()
        secs, micros = await self.client.redis.time()
        return datetime.fromtimestamp(int(secs) + int(micros) / 1e6, UTC)

    # -- one evaluation ---------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> TickReport:
        """Evaluate every spec once at ``now`` (default: the clock); enqueue due ticks."""
        now = now or await self.clock()
        if now.tzinfo is None:
            raise ValueError("the scheduler clock must return an aware datetime")
        report = TickReport()
        if not self.specs:
            return report
        names = list(self.specs)
        pipe = self.client.redis.pipeline(transaction=False)
        pipe.zmscore(self.keys.cron_last, names)
        pipe.hmget(self.keys.cron_lastjob, names)
        scores, lastjobs = await pipe.execute()
        requests: list[JobRequest] = []
        for name, score, lastjob in zip(names, scores, lastjobs, strict=True):
            spec = self.specs[name]
            last = now - self.grace if score is None else _from_ms(score)
            ticks = plan_ticks(spec, last, now, self.grace)
            if ticks and spec.overlap == "skip":
                ticks = await self._overlap_filter(spec, ticks, lastjob, report)
            requests.extend(self._request(spec, tick_id(name, t)) for t in ticks)
        if requests:
            report.fired = await self.client.enqueue_many(requests)
        await self._advance(names, now, requests)
        for job_id in report.fired:
            log.info("cron fired %s", job_id)
        return report

    async def _overlap_filter(
        self, spec: CronSpec, ticks: list[datetime], lastjob: bytes | None, report: TickReport
    ) -> list[datetime]:
        newest = ticks[-1]
        prev = _text(lastjob) if lastjob else None
        if prev is None or prev == tick_id(spec.name, newest):
            return [newest]  # nothing before it, or another replica already fired it
        info = await self.client.get_job(prev)
        if info is not None and info.state in LIVE_STATES:
            report.skipped.extend(tick_id(spec.name, t) for t in ticks)
            log.info("cron %s: tick skipped, previous run %s is %s", spec.name, prev, info.state)
            return []
        return [newest]

    def _request(self, spec: CronSpec, job_id: str) -> JobRequest:
        return JobRequest(
            kind=spec.kind,
            payload=spec.payload,
            queue=spec.queue,
            priority=spec.priority,
            max_attempts=spec.max_attempts,
            timeout_s=spec.timeout_s,
            job_id=job_id,
            dedup_key=job_id,
        )

    async def _advance(self, names: list[str], now: datetime, fired: list[JobRequest]) -> None:
        pipe = self.client.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.cron_last, dict.fromkeys(names, _ms(now)), gt=True)
        # Requests are in tick order, so the last one per spec is its newest job.
        newest = {req.job_id.split(":")[1]: req.job_id for req in fired if req.job_id}
        for name, job_id in newest.items():
            pipe.hset(self.keys.cron_lastjob, name, job_id)
        await pipe.execute()

    async def fire_now(self, name: str) -> str:
        """Enqueue one run of spec ``name`` now, under a manual id; returns the job id."""
        spec = self.specs.get(name)
        if spec is None:
            raise CronError(f"no cron spec named {name!r}")
        job_id = manual_id(name, await self.clock())
        [fired] = await self.client.enqueue_many([self._request(spec, job_id)])
        await self.client.redis.hset(self.keys.cron_lastjob, name, fired)
        return fired

    async def last_evaluated(self) -> dict[str, datetime | None]:
        """Each spec's cursor: the last instant a scheduler evaluated it."""
        names = list(self.specs)
        if not names:
            return {}
        scores = await self.client.redis.zmscore(self.keys.cron_last, names)
        return {n: None if s is None else _from_ms(s) for n, s in zip(names, scores, strict=True)}

    async def last_jobs(self) -> dict[str, str | None]:
        """Each spec's most recently fired job id (from Redis)."""
        names = list(self.specs)
        if not names:
            return {}
        ids = await self.client.redis.hmget(self.keys.cron_lastjob, names)
        return {n: _text(i) if i else None for n, i in zip(names, ids, strict=True)}

    async def promote(self, now_ms: int = 0) -> int:
        """Promote due delayed/retry jobs of every known queue (``now_ms`` 0 = Redis time)."""
        total = 0
        for queue in await self.client.queues():
            while True:
                promoted, _ = await self.client.promote_due(
                    queue, now_ms=now_ms, limit=PROMOTE_LIMIT
                )
                total += promoted
                if promoted < PROMOTE_LIMIT:
                    break
        return total

    # -- the process --------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when ``handle_signals``)."""
        log.info(
            "scheduler started: %d cron specs, promote=%s", len(self.specs), self.promote_enabled
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._wait_stop, tg.cancel_scope, name="scheduler.stop")
            if handle_signals:
                tg.start_soon(self._watch_signals, name="scheduler.signals")
            tg.start_soon(self._loop, "cron", self._cron_step, name="scheduler.cron")
            if self.promote_enabled:
                tg.start_soon(self._loop, "promote", self._promote_step, name="scheduler.promote")
        log.info("scheduler stopped")

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe to call more than once)."""
        self._stop.set()

    async def _wait_stop(self, scope: CancelScope) -> None:
        await self._stop.wait()
        scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("scheduler: %s received, stopping", signal.Signals(signum).name)
                self.stop()
                return

    async def _loop(self, what: str, step: Callable[[], Awaitable[float]]) -> None:
        """Run ``step`` forever; it returns seconds to sleep. Redis errors back off."""
        failures = 0
        while True:
            try:
                delay_s = await step()
                failures = 0
            except (RedisError, OSError) as exc:
                self.metrics.step_errors.labels(what).inc()
                failures += 1
                delay_s = min(30.0, 0.5 * 2**failures)
                log.warning(
                    "scheduler %s step failed (%s); retrying in %.1fs",
                    what,
                    type(exc).__name__,
                    delay_s,
                )
            except Exception:
                # A bug must not stop every other spec and the promotion for good:
                # log it with its traceback and keep going, slowly.
                self.metrics.step_errors.labels(what).inc()
                failures += 1
                delay_s = min(30.0, 0.5 * 2**failures)
                log.exception("scheduler %s step crashed; retrying in %.1fs", what, delay_s)
            await anyio.sleep(delay_s)

    async def _cron_step(self) -> float:
        now = await self.clock()
        report = await self.tick(now)
        for job_id in report.fired:
            self.metrics.fired.labels(spec_of(job_id)).inc()
        for skipped_id in report.skipped:
            self.metrics.skipped.labels(spec_of(skipped_id)).inc()
        self.metrics.cron_step_ok()
        if not self.specs:
            return MAX_LOOP_SLEEP_S
        soonest = min(spec.next_fire(now) for spec in self.specs.values())
        # Wake at the next fire time if it is sooner than the regular interval.
        wait_s = (soonest - await self.clock()).total_seconds()
        return max(0.01, min(MAX_LOOP_SLEEP_S, wait_s))

    async def _promote_step(self) -> float:
        promoted = await self.promote()
        self.metrics.promoted.inc(promoted)
        if promoted:
            log.debug("scheduler promoted %d due jobs", promoted)
        return MAX_LOOP_SLEEP_S
