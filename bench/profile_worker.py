"""Profile the worker's hot path: ``python -m bench.profile_worker [--jobs N] [--top K]``.

Enqueues N ``demo.noop`` jobs in a fresh namespace (not profiled), then drains
them with an in-process burst :class:`streams.worker.Worker` at concurrency 32
under :mod:`cProfile`, prints the drain rate and the top functions by own time
and by cumulative time, optionally writes the raw profile (``--out``, for
``snakeviz``/``pstats``), and deletes the namespace. cProfile slows Python code
down (about 2.5x here), so the rate printed is lower than ``python -m bench``'s;
the proportions are what matter.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path

import anyio
import msgspec

from bench.common import delete_namespace, new_settings
from bench.core import enqueue_batches
from handlers.demo import registry
from streams.client import Client
from streams.settings import Settings
from streams.worker import Worker


async def _prepare(settings: Settings, jobs: int) -> None:
    async with Client(settings, registry=registry()) as client:
        await enqueue_batches(client, jobs)


async def _drain(settings: Settings, concurrency: int) -> float:
    worker = Worker(settings, registry(), concurrency=concurrency, burst=True)
    t0 = time.perf_counter()
    await worker.run()
    return time.perf_counter() - t0


def profile_drain(jobs: int, concurrency: int, out: Path | None) -> tuple[float, pstats.Stats]:
    """(elapsed seconds, stats) of draining ``jobs`` noop jobs under cProfile."""
    base = msgspec.structs.replace(Settings.from_env(), shutdown_grace_s=0.5)
    settings = new_settings(base)
    profiler = cProfile.Profile()
    try:
        anyio.run(_prepare, settings, jobs)
        profiler.enable()
        elapsed = anyio.run(_drain, settings, concurrency)
        profiler.disable()
    finally:
        anyio.run(delete_namespace, settings)
    if out is not None:
        profiler.dump_stats(str(out))
    return elapsed, pstats.Stats(profiler, stream=io.StringIO())


def _top(stats: pstats.Stats, key: str, top: int) -> str:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats(key).print_stats(top)
    lines = buf.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(lines[start:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_worker", description=__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="write the raw cProfile here")
    args = parser.parse_args(argv)
    elapsed, stats = profile_drain(args.jobs, args.concurrency, args.out)
    print(f"drained {args.jobs:,} demo.noop jobs in {elapsed:.2f} s under cProfile ", end="")
    print(f"({args.jobs / elapsed:,.0f} jobs/s; {elapsed / args.jobs * 1e6:.1f} us/job)")
    print(f"\n== top {args.top} by own time (tottime) ==")
    print(_top(stats, "tottime", args.top))
    print(f"\n== top {args.top} by cumulative time ==")
    print(_top(stats, "cumulative", args.top))


if __name__ == "__main__":
    main()
