"""``python -m bench [--quick] [--json PATH]``: run every benchmark, print a table, write JSON.

Owns: the plan (sizes, warm-ups and measured runs of each figure, full or quick),
running it in order, and the report (a text table on stdout; a JSON document
with the machine, versions, settings and every figure, by default
``bench/results/latest.json``). A benchmark that fails is reported as an
"error" row and the others still run; the projection figures are "not
available" when the projector or Postgres is missing. ``--quick`` is a smoke
check that finishes in well under a minute.

Uses the machine's Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``)
and Postgres (``DATABASE_URL``); it never stops or flushes either.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec

from bench import core, projection
from bench.common import REPO_ROOT, Figure, Metric, machine_info, repeat, unavailable
from streams.settings import Settings

DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "latest.json"
RECLAIM_TTL_S = 2.0


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes and repetitions of one bench run."""

    quick: bool
    warmup: int
    runs: int
    reclaim_warmup: int
    reclaim_runs: int
    enqueue_one_jobs: int
    enqueue_many_jobs: int
    drain_jobs: int
    pickup_seconds: float
    apply_jobs: int
    lag_seconds: float
    concurrency: int = 32
    lag_rate: int = 1000
    reclaim_heartbeat_ttl_s: float = RECLAIM_TTL_S


FULL = Plan(
    quick=False,
    warmup=1,
    runs=5,
    reclaim_warmup=1,
    reclaim_runs=3,
    enqueue_one_jobs=5000,
    enqueue_many_jobs=50_000,
    drain_jobs=30_000,
    pickup_seconds=5.0,
    apply_jobs=10_000,
    lag_seconds=5.0,
)
QUICK = Plan(
    quick=True,
    warmup=1,
    runs=2,
    reclaim_warmup=0,
    reclaim_runs=1,
    enqueue_one_jobs=1000,
    enqueue_many_jobs=10_000,
    drain_jobs=5000,
    pickup_seconds=1.0,
    apply_jobs=2000,
    lag_seconds=1.5,
)

Step = tuple[list[Metric], Callable[[Settings], Awaitable[dict[str, float]]], str]


def _steps(plan: Plan) -> list[Step]:
    """(metrics, measure, note) of every core benchmark, in the order they run."""
    drain_note = f"{plan.drain_jobs:,} demo.noop jobs, burst workers, concurrency 32"
    pickup_note = (
        f"idle worker, {plan.pickup_seconds:g} s of steady enqueue; `at` has ms resolution"
    )
    return [
        (
            [core.ENQUEUE_ONE, core.ENQUEUE_MANY],
            core.enqueue(plan.enqueue_one_jobs, plan.enqueue_many_jobs),
            f"{plan.enqueue_one_jobs:,} sequential awaits / {plan.enqueue_many_jobs:,} batched",
        ),
        ([core.DRAIN_1], core.drain(plan.drain_jobs, 1), drain_note),
        ([core.DRAIN_2], core.drain(plan.drain_jobs, 2), drain_note),
        (core.latency_metrics(200), core.pickup(200, plan.pickup_seconds), pickup_note),
        (core.latency_metrics(1000), core.pickup(1000, plan.pickup_seconds), pickup_note),
    ]


async def _guarded(
    base: Settings, metrics: list[Metric], measure: Any, plan: Plan, note: str, **kw: Any
) -> list[Figure]:
    """:func:`repeat` with any failure turned into "error" rows (the run goes on)."""
    options: dict[str, Any] = {"warmup": plan.warmup, "runs": plan.runs, **kw}
    try:
        return await repeat(base, metrics, measure, note=note, on_run=_progress, **options)
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        logging.getLogger("bench").exception("benchmark %s failed", metrics[0].key)
        return unavailable(metrics, "error", f"{type(exc).__name__}: {exc}"[:300])


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _projection(base: Settings, plan: Plan) -> list[Figure]:
    missing = await projection.check_available(base)
    if missing is not None:
        return missing
    apply = partial(projection.measure_apply, jobs=plan.apply_jobs)
    lag = partial(projection.measure_lag, rate=plan.lag_rate, duration_s=plan.lag_seconds)
    note = f"backlog of {3 * plan.apply_jobs:,} events (queued/started/completed)"
    lag_note = f"{plan.lag_rate:,} jobs/s for {plan.lag_seconds:g} s through 1 worker process"
    figures = await _guarded(base, [projection.APPLY], apply, plan, note)
    if projection.synthetic_available():
        synth = partial(projection.measure_apply_synthetic, events=3 * plan.apply_jobs)
        synth_note = f"{3 * plan.apply_jobs:,} synthetic events, 4 per job, no worker"
        figures += await _guarded(base, [projection.APPLY_SYNTH], synth, plan, synth_note)
    else:
        figures += unavailable(
            [projection.APPLY_SYNTH], "not available", "projections.bench not present"
        )
    lag_metrics = [projection.LAG_P50, projection.LAG_P99]
    return figures + await _guarded(base, lag_metrics, lag, plan, lag_note)


async def run_plan(plan: Plan, base: Settings) -> list[Figure]:
    """Every figure of ``plan``, measured in order."""
    figures: list[Figure] = []
    for metrics, measure, note in _steps(plan):
        figures += await _guarded(base, metrics, measure, plan, note)
    figures += await _projection(base, plan)
    ttl = plan.reclaim_heartbeat_ttl_s
    reclaim_note = f"JOBSTREAM_HEARTBEAT_TTL_S={ttl:g} (reaper every TTL/2, heartbeat TTL/3)"
    figures += await _guarded(
        base,
        [core.RECLAIM],
        core.measure_reclaim,
        plan,
        reclaim_note,
        warmup=plan.reclaim_warmup,
        runs=plan.reclaim_runs,
        overrides={"heartbeat_ttl_s": ttl},
    )
    return figures


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def format_table(figures: list[Figure]) -> str:
    """The figures as a fixed-width text (and Markdown-compatible) table."""
    rows = [("figure", "median", "min-max", "unit", "target", "runs / status")]
    for f in figures:
        spread = f"{_num(f.min)}-{_num(f.max)}" if f.status == "ok" else "-"
        state = str(len(f.values)) if f.status == "ok" else f"{f.status}: {f.note}"
        rows.append((f.label, _num(f.median), spread, f.unit, f.target, state))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for n, r in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(r[:5], widths)] + [r[5]]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in [*widths, len(r[5])]) + "|")
    return "\n".join(lines)


async def run(plan: Plan, json_path: Path) -> dict[str, Any]:
    """Run ``plan``; print the table; write and return the JSON document."""
    base = msgspec.structs.replace(Settings.from_env(), shutdown_grace_s=0.5)
    started = time.perf_counter()
    figures = await run_plan(plan, base)
    report = {
        "mode": "quick" if plan.quick else "full",
        "machine": await machine_info(base),
        "settings": {
            **msgspec.structs.asdict(plan),
            "heartbeat_ttl_s": base.heartbeat_ttl_s,
            "shutdown_grace_s": base.shutdown_grace_s,
            "aging_medium_ms": base.aging_medium_ms,
            "aging_low_ms": base.aging_low_ms,
        },
        "elapsed_s": round(time.perf_counter() - started, 1),
        "figures": [msgspec.structs.asdict(f) for f in figures],
    }
    print(format_table(figures))
    out = anyio.Path(json_path)
    await out.parent.mkdir(parents=True, exist_ok=True)
    await out.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    print(f"\n{report['mode']} run in {report['elapsed_s']} s; results in {json_path}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke check, under a minute")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    report = anyio.run(run, QUICK if args.quick else FULL, args.json)
    failed = [f for f in report["figures"] if f["status"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
