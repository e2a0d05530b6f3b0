"""The core benchmarks: enqueue rate, drain rate, pickup latency and reclaim time.

Each ``measure_*`` takes the settings of one run (a fresh namespace) and returns
``{metric key: value}``; :mod:`bench.__main__` repeats them via
:func:`bench.common.repeat`. How each is measured (and why it is exact):

- enqueue: wall time around sequential ``await client.enqueue`` calls, and around
  ``enqueue_many`` in batches (payload encoding and validation included);
- drain: N ``demo.noop`` jobs enqueued first; worker processes started behind a
  gate, then released together. Start = the earliest ``ready`` (wall clock);
  end = the ``at`` of the last event in the stream, the last ``job.completed``
  (Redis ``TIME``, same host clock). Burst workers exit once idle, so the bench
  waits without polling or competing for the CPU;
- pickup latency: an idle worker; jobs enqueued on a fixed schedule; per job
  ``job.started.at - job.queued.at`` from the events (ms resolution: ``at`` is in ms);
- reclaim: a worker takes a ``demo.sleep`` job and is SIGKILLed; a second worker
  reclaims it once the first one's heartbeat expires. Figure = the ``at`` of the
  job's next ``job.started`` minus the wall time of the kill.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import redis.asyncio as aioredis

from bench.common import Event, Metric, decode_bench_event, events_key, percentile, read_events
from bench.procs import WorkerProc
from handlers.demo import registry
from streams.client import Client, JobRequest
from streams.settings import Settings

ENQUEUE_ONE = Metric("enqueue.one", "enqueue, one job per call", "jobs/s", ">= 4,000")
ENQUEUE_MANY = Metric("enqueue.many", "enqueue_many, batches of 1,000", "jobs/s", ">= 50,000")
DRAIN_1 = Metric("drain.1proc", "drain demo.noop, 1 worker proc x32", "jobs/s", ">= 10,000")
DRAIN_2 = Metric("drain.2proc", "drain demo.noop, 2 worker procs x32", "jobs/s")
RECLAIM = Metric("reclaim.ms", "reclaim: SIGKILL -> started elsewhere", "ms")
BATCH = 1000


def latency_metrics(rate: int) -> list[Metric]:
    """The pickup-latency metrics at ``rate`` jobs/s."""
    target = "<= 3" if rate == 200 else ""
    return [
        Metric(f"pickup{rate}.{p}", f"pickup latency {p} @ {rate}/s", "ms", target * (p == "p99"))
        for p in ("p50", "p90", "p99", "max")
    ]


async def enqueue_batches(client: Client, n: int, kind: str = "demo.noop") -> None:
    """Enqueue ``n`` jobs of ``kind`` with ``enqueue_many`` in batches of :data:`BATCH`."""
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        await client.enqueue_many([JobRequest(kind=kind, payload={}) for _ in range(size)])


async def measure_enqueue(settings: Settings, *, n_one: int, n_many: int) -> dict[str, float]:
    """Sequential ``enqueue`` of ``n_one`` jobs, then ``enqueue_many`` of ``n_many``."""
    async with Client(settings, registry=registry()) as client:
        await client.enqueue("demo.noop", {})  # connection + script load outside the timing
        t0 = time.perf_counter()
        for _ in range(n_one):
            await client.enqueue("demo.noop", {})
        one_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await enqueue_batches(client, n_many)
        many_s = time.perf_counter() - t0
    return {ENQUEUE_ONE.key: n_one / one_s, ENQUEUE_MANY.key: n_many / many_s}


async def _last_event_at(client: aioredis.Redis, stream: str) -> tuple[int, str]:
    reply: Any = await client.xrevrange(stream, count=1)
    [(_id, fields)] = reply
    event = decode_bench_event(fields[b"e"])
    return event.at, event.type


async def measure_drain(settings: Settings, *, n: int, procs: int) -> dict[str, float]:
    """Drain ``n`` pre-enqueued noop jobs with ``procs`` burst workers released together."""
    key = DRAIN_1.key if procs == 1 else DRAIN_2.key
    async with Client(settings, registry=registry()) as client:
        await enqueue_batches(client, n)
        workers = [await WorkerProc.spawn(settings, burst=True, gate=True) for _ in range(procs)]
        try:
            for w in workers:
                await w.go()
            start_ms = min([await w.wait_ready() for w in workers])
            started = sum([await w.wait_done(timeout_s=max(60, n / 500)) for w in workers])
        finally:
            for w in workers:
                await w.aclose()
        stream = events_key(settings)
        end_ms, last_type = await _last_event_at(client.redis, stream)
        n_events = await client.redis.xlen(stream)
    if started != n or last_type != "job.completed" or n_events != 3 * n:
        raise RuntimeError(f"drain incomplete: {started=} {last_type=} {n_events=} for {n=}")
    return {key: n / ((end_ms - start_ms) / 1000)}


async def steady(rate: int, duration_s: float, enqueue: Callable[[int], Awaitable[None]]) -> int:
    """Call ``enqueue(k)`` on a fixed schedule totalling ``rate`` jobs/s; returns jobs sent."""
    tick_s = max(1 / rate, 0.002)  # below ~2 ms asyncio sleeps are too coarse: send pairs
    per_tick = max(1, round(rate * tick_s))
    ticks = int(duration_s / tick_s)
    t0 = time.perf_counter()
    for i in range(ticks):
        delay = t0 + i * tick_s - time.perf_counter()
        if delay > 0:
            await anyio.sleep(delay)
        await enqueue(per_tick)
    return ticks * per_tick


def steady_enqueuer(client: Client) -> Callable[[int], Awaitable[None]]:
    """An ``enqueue(k)`` for :func:`steady`: one call per job, a batch for k > 1."""

    async def enqueue(k: int) -> None:
        if k == 1:
            await client.enqueue("demo.noop", {})
        else:
            await client.enqueue_many([JobRequest(kind="demo.noop", payload={})] * k)

    return enqueue


def _count(tag: str, n: int) -> Callable[[list[Event]], bool]:
    return lambda events: sum(1 for e in events if e.type == tag) >= n


async def measure_pickup(settings: Settings, *, rate: int, duration_s: float) -> dict[str, float]:
    """Enqueue→started latency percentiles of an idle worker fed ``rate`` jobs/s."""
    async with (
        Client(settings, registry=registry()) as client,
        await WorkerProc.spawn(settings) as worker,
    ):
        await worker.wait_ready()
        await anyio.sleep(0.2)  # let the worker settle into its blocking read
        sent = await steady(rate, duration_s, steady_enqueuer(client))
        events, _ = await read_events(
            client.redis,
            events_key(settings),
            _count("job.started", sent),
            timeout_s=30,
            alive=worker.alive,
        )
    queued = {e.job_id: e.at for e in events if e.type == "job.queued"}
    waits = [float(e.at - queued[e.job_id]) for e in events if e.type == "job.started"]
    return {
        f"pickup{rate}.p50": percentile(waits, 50),
        f"pickup{rate}.p90": percentile(waits, 90),
        f"pickup{rate}.p99": percentile(waits, 99),
        f"pickup{rate}.max": max(waits),
    }


async def measure_reclaim(settings: Settings) -> dict[str, float]:
    """SIGKILL a worker mid-job; time until the job starts on another worker."""
    stream = events_key(settings)
    async with (
        Client(settings, registry=registry()) as client,
        await WorkerProc.spawn(settings) as first,
    ):
        await first.wait_ready()
        job_id = await client.enqueue("demo.sleep", {"seconds": 60.0})
        events, last = await read_events(
            client.redis, stream, _count("job.started", 1), timeout_s=30, alive=first.alive
        )
        async with await WorkerProc.spawn(settings) as second:
            await second.wait_ready()
            await anyio.sleep(0.1)
            killed_ms = time.time() * 1000
            first.kill()
            await read_events(
                client.redis,
                stream,
                _count("job.started", 2),
                timeout_s=settings.heartbeat_ttl_s * 4 + 10,
                events=events,
                last_id=last,
                alive=second.alive,
            )
    again = [e for e in events if e.type == "job.started" and e.job_id == job_id][-1]
    return {RECLAIM.key: again.at - killed_ms}


def drain(n: int, procs: int) -> Callable[[Settings], Awaitable[dict[str, float]]]:
    return partial(measure_drain, n=n, procs=procs)


def pickup(rate: int, duration_s: float) -> Callable[[Settings], Awaitable[dict[str, float]]]:
    return partial(measure_pickup, rate=rate, duration_s=duration_s)


def enqueue(n_one: int, n_many: int) -> Callable[[Settings], Awaitable[dict[str, float]]]:
    return partial(measure_enqueue, n_one=n_one, n_many=n_many)
