"""Core sub-commands: enqueue, worker, cancel, retry, events tail, dev.

Owns the CLI contract of the core (names and flags are kept stable):
``enqueue KIND [--payload JSON] [--queue Q] [--priority P] [--delay S]
[--max-attempts N] [--dedup-key K]`` prints the job id; ``worker [--queues a,b]
[--concurrency N] [--burst]``; ``cancel ID``; ``retry ID``; ``events tail [--job ID]``.
Errors are one clear line on stderr with exit code 2; no secret is printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis

import handlers
from jobstream.embedded import ensure_redis
from jobstream.tail import tail_events
from streams.client import Client
from streams.errors import EnqueueError
from streams.settings import Settings, redact_url
from streams.worker import Worker


def settings_from_env() -> Settings:
    return ensure_redis(Settings.from_env())


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("enqueue", help="enqueue one job; prints its id")
    p.add_argument("kind")
    p.add_argument("--payload", default="{}", help="payload JSON (default {})")
    p.add_argument("--queue")
    p.add_argument("--priority", choices=["high", "medium", "low"])
    p.add_argument("--delay", type=float, help="seconds to wait before it may run")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--dedup-key")
    p.set_defaults(func=cmd_enqueue)

    p = sub.add_parser("worker", help="run a worker")
    p.add_argument("--queues", help="comma-separated queues (default: every registered queue)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--burst", action="store_true", help="exit once no work is left")
    p.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz on this port")
    p.set_defaults(func=cmd_worker)

    for name, fn in (("cancel", cmd_cancel), ("retry", cmd_retry)):
        p = sub.add_parser(name, help=f"{name} a job by id")
        p.add_argument("job_id")
        p.set_defaults(func=fn)

    p = sub.add_parser("events", help="the event log")
    esub = p.add_subparsers(dest="events_command", required=True)
    t = esub.add_parser("tail", help="print events as they are appended")
    t.add_argument("--job", help="only this job's events")
    t.add_argument("--from-start", action="store_true", help="print the retained history first")
    t.add_argument("--count", type=int, help="exit after printing this many events")
    t.set_defaults(func=cmd_events_tail)


def _fail(message: str) -> int:
    print(f"jobstream: error: {message}", file=sys.stderr)
    return 2


def _run(coro_fn: Any, *args: Any) -> int:
    try:
        rc: int = anyio.run(coro_fn, *args)
    except aioredis.ConnectionError as exc:
        s = Settings.from_env()
        return _fail(f"cannot reach Redis at {redact_url(s.redis_url)}: {type(exc).__name__}")
    return rc


def cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        payload = msgspec.json.decode(args.payload.encode())
    except msgspec.DecodeError as exc:
        return _fail(f"--payload is not valid JSON: {exc}")

    async def go() -> int:
        async with Client(settings_from_env(), registry=handlers.registry()) as c:
            job_id = await c.enqueue(
                args.kind,
                payload,
                queue=args.queue,
                priority=args.priority,
                delay_s=args.delay,
                max_attempts=args.max_attempts,
                dedup_key=args.dedup_key,
            )
        print(job_id)
        return 0

    try:
        return _run(go)
    except (EnqueueError, ValueError) as exc:
        return _fail(str(exc))


def cmd_worker(args: argparse.Namespace) -> int:
    queues = [q for q in (args.queues or "").split(",") if q] or None

    async def go() -> int:
        w = Worker(
            settings_from_env(),
            handlers.registry(),
            queues=queues,
            concurrency=args.concurrency,
            burst=args.burst,
            handle_signals=True,
            metrics_port=args.metrics_port,
        )
        await w.run()
        return 0

    try:
        return _run(go)
    except ValueError as exc:
        return _fail(str(exc))


def _admin(args: argparse.Namespace, action: str) -> int:
    async def go() -> int:
        async with Client(settings_from_env()) as c:
            res = await (c.cancel(args.job_id) if action == "cancel" else c.retry(args.job_id))
        print(res)
        ok = {"cancel": ("canceled", "cancelling"), "retry": ("queued",)}[action]
        return 0 if res in ok else 1

    return _run(go)


def cmd_cancel(args: argparse.Namespace) -> int:
    return _admin(args, "cancel")


def cmd_retry(args: argparse.Namespace) -> int:
    return _admin(args, "retry")


def cmd_events_tail(args: argparse.Namespace) -> int:
    async def go() -> int:
        await tail_events(
            settings_from_env(), job_id=args.job, from_start=args.from_start, count=args.count
        )
        return 0

    return _run(go)
