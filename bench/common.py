"""Shared machinery of the benchmarks: repeated runs, statistics, namespaces, events, machine.

Owns:
- :class:`Figure`, one reported number (median and min-max over the measured runs)
  and :func:`repeat`, which runs a measurement once as a warm-up, then ``runs``
  times, each in a fresh namespace whose keys are deleted afterwards (so nothing
  is ever left in the machine's Redis, and nothing else in it is touched);
- :func:`read_events`, the exact way benchmarks observe the system: XREAD BLOCK on
  a queue's events stream (no fixed-interval polling), decoding just the fields a
  benchmark needs;
- :func:`machine_info`: CPU, Python/Redis/Postgres versions and the git commit.

Invariant: a measurement function receives its own :class:`Settings` (namespace
``bench<hex>``) and returns ``{metric key: value}``; it never touches other keys.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis

from streams.keys import Keys
from streams.settings import Settings, redact_url

REPO_ROOT = Path(__file__).resolve().parent.parent
Measure = Callable[[Settings], Awaitable[dict[str, float]]]


class Metric(msgspec.Struct, frozen=True):
    """What one metric key means: label, unit and the target from the issues (if any)."""

    key: str
    label: str
    unit: str
    target: str = ""


class Figure(msgspec.Struct, kw_only=True):
    """One reported figure: median and min-max over the measured runs."""

    key: str
    label: str
    unit: str
    target: str = ""
    status: str = "ok"  # "ok" | "not available" | "error"
    median: float | None = None
    min: float | None = None
    max: float | None = None
    values: list[float] = msgspec.field(default_factory=list)
    note: str = ""


class Event(msgspec.Struct):
    """The fields of a lifecycle event that benchmarks look at."""

    type: str
    job_id: str
    attempt: int
    at: int
    worker: str = ""


decode_bench_event = msgspec.json.Decoder(Event).decode


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (``pct`` in 0..100)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def new_settings(base: Settings, **overrides: Any) -> Settings:
    """``base`` with a fresh ``bench<hex>`` namespace (and any overrides)."""
    return msgspec.structs.replace(base, namespace=f"bench{uuid.uuid4().hex[:10]}", **overrides)


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker subprocess serving ``settings``."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=settings.redis_url,
        DATABASE_URL=settings.database_url,
        JOBSTREAM_NAMESPACE=settings.namespace,
        JOBSTREAM_HEARTBEAT_TTL_S=str(settings.heartbeat_ttl_s),
        JOBSTREAM_SHUTDOWN_GRACE_S=str(settings.shutdown_grace_s),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
    )
    return env


async def delete_namespace(settings: Settings) -> int:
    """Delete every key of ``settings.namespace``; returns how many were deleted."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.namespace}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.unlink(*keys[i : i + 1000])
        return len(keys)
    finally:
        await client.aclose()


def events_key(settings: Settings, queue: str = "default") -> str:
    return Keys(settings.namespace).queue(queue).events


async def read_events(
    client: aioredis.Redis,
    stream: str,
    done: Callable[[list[Event]], bool],
    *,
    timeout_s: float,
    events: list[Event] | None = None,
    last_id: str = "0-0",
    alive: Callable[[], bool] | None = None,
) -> tuple[list[Event], str]:
    """XREAD BLOCK ``stream`` from ``last_id`` until ``done(events)``; (events, last id).

    Raises TimeoutError after ``timeout_s``, RuntimeError as soon as ``alive()`` (the
    worker the caller waits on) turns false. ``events`` (appended to) lets a caller
    keep the history of an earlier call.
    """
    seen = [] if events is None else events
    with anyio.fail_after(timeout_s):
        while not done(seen):
            if alive is not None and not alive():
                raise RuntimeError("the worker process exited while the bench waited for it")
            reply: Any = await client.xread({stream: last_id}, count=5000, block=200)
            for _key, entries in reply or []:
                for entry_id, fields in entries:
                    seen.append(decode_bench_event(fields[b"e"]))
                    last_id = entry_id.decode()
    return seen, last_id


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


async def repeat(
    base: Settings,
    metrics: list[Metric],
    measure: Measure,
    *,
    warmup: int,
    runs: int,
    note: str = "",
    overrides: Mapping[str, Any] | None = None,
    on_run: Callable[[str], None] | None = None,
) -> list[Figure]:
    """Run ``measure`` ``warmup`` + ``runs`` times (fresh namespace each); one figure per metric."""
    collected: dict[str, list[float]] = {m.key: [] for m in metrics}
    for i in range(warmup + runs):
        settings = new_settings(base, **(overrides or {}))
        try:
            result = await measure(settings)
        finally:
            with anyio.CancelScope(shield=True):
                await delete_namespace(settings)
        if on_run is not None:
            label = "warm-up" if i < warmup else f"run {i - warmup + 1}/{runs}"
            shown = ", ".join(f"{k}={v:,.1f}" for k, v in result.items())
            on_run(f"  {metrics[0].key.split('.')[0]} {label}: {shown}")
        if i >= warmup:
            for key in collected:
                collected[key].append(float(result[key]))
    figures = []
    for m in metrics:
        med, lo, hi = _spread(collected[m.key])
        figures.append(
            Figure(
                key=m.key,
                label=m.label,
                unit=m.unit,
                target=m.target,
                median=med,
                min=lo,
                max=hi,
                values=collected[m.key],
                note=note,
            )
        )
    return figures


def unavailable(metrics: list[Metric], status: str, note: str) -> list[Figure]:
    """Figures that could not be measured (``status`` "not available" or "error")."""
    return [
        Figure(key=m.key, label=m.label, unit=m.unit, target=m.target, status=status, note=note)
        for m in metrics
    ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def _redis_version(settings: Settings) -> str:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        info = await client.info("server")
        return str(info.get("redis_version", "unknown"))
    finally:
        await client.aclose()


async def _postgres_version(settings: Settings) -> str:
    try:
        import asyncpg

        with anyio.fail_after(5):
            conn = await asyncpg.connect(settings.database_url, timeout=5)
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()
    except Exception as exc:  # any failure means "no Postgres here": report it, go on
        return f"unavailable ({type(exc).__name__})"


async def machine_info(settings: Settings) -> dict[str, Any]:
    """The machine, versions and commit a result was measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": await _redis_version(settings),
        "postgres": await _postgres_version(settings),
        "git_commit": _git_commit(),
        "redis_url": redact_url(settings.redis_url),
        "database_url": redact_url(settings.database_url),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
