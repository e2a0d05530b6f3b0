"""A worker process for the benchmarks: ``python -m bench.worker_proc [--burst] [--gate]``.

Builds a :class:`streams.worker.Worker` with the demo registry directly (so the
benchmarks do not depend on the CLI), configured from the environment
(``REDIS_URL``, ``JOBSTREAM_NAMESPACE``, ``JOBSTREAM_HEARTBEAT_TTL_S``, ...).

Protocol on stdout, one line each, flushed at once:
- ``loaded`` once imports and the worker object are built;
- with ``--gate``: it then waits for one line on stdin before it starts, so a
  benchmark can start several workers at the same moment;
- ``ready <ms>`` when ``worker.ready`` is set (wall clock in ms since the epoch,
  the same clock as Redis ``TIME`` on this host);
- ``done <started_jobs>`` when the worker returns (burst mode, or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import anyio

from handlers.demo import registry
from streams.settings import Settings
from streams.worker import Worker


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _announce_ready(worker: Worker) -> None:
    await worker.ready.wait()
    _say(f"ready {time.time() * 1000:.3f}")


async def main(queues: list[str], concurrency: int, burst: bool, gate: bool) -> None:
    worker = Worker(
        Settings.from_env(),
        registry(),
        queues=queues,
        concurrency=concurrency,
        burst=burst,
        handle_signals=True,
    )
    _say("loaded")
    if gate:
        await anyio.to_thread.run_sync(sys.stdin.readline)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_announce_ready, worker, name="announce-ready")
        await worker.run()
        tg.cancel_scope.cancel()
    _say(f"done {worker.started_jobs}")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_proc")
    parser.add_argument("--queues", default="default")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--gate", action="store_true", help="wait for a stdin line to start")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    anyio.run(main, args.queues.split(","), args.concurrency, args.burst, args.gate)


if __name__ == "__main__":
    cli()
