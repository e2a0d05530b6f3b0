"""The demo job kinds: smoke tests for deployments, tests and benchmarks.

- ``demo.noop`` (payload ``{}``): does nothing.
- ``demo.sleep`` (``{"seconds": 1.5}``): sleeps.
- ``demo.flaky`` (``{"failures": 2}``): fails its first N attempts, then succeeds
  (it uses the attempt number, so it is deterministic across workers).
- ``demo.progress`` (``{"steps": 5}``): reports N progress steps.
All run on the ``default`` queue. No I/O at import.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from streams.context import JobContext
from streams.registry import Backoff, Handler, Registry


class NoopPayload(msgspec.Struct, forbid_unknown_fields=True):
    pass


class SleepPayload(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float = 1.5


class FlakyPayload(msgspec.Struct, forbid_unknown_fields=True):
    failures: int = 2


class ProgressPayload(msgspec.Struct, forbid_unknown_fields=True):
    steps: int = 5


class FlakyError(RuntimeError):
    """The failure demo.flaky raises on purpose."""


async def noop(ctx: JobContext, payload: NoopPayload) -> None:
    return None


async def sleep(ctx: JobContext, payload: SleepPayload) -> dict[str, float]:
    await anyio.sleep(payload.seconds)
    return {"slept_s": payload.seconds}


async def flaky(ctx: JobContext, payload: FlakyPayload) -> dict[str, int]:
    if ctx.attempt <= payload.failures:
        raise FlakyError(f"planned failure {ctx.attempt} of {payload.failures}")
    return {"succeeded_on_attempt": ctx.attempt}


async def progress(ctx: JobContext, payload: ProgressPayload) -> dict[str, int]:
    for step in range(1, payload.steps + 1):
        await ctx.progress(step / payload.steps, f"step {step} of {payload.steps}")
        await anyio.lowlevel.checkpoint()
    return {"steps": payload.steps}


def demo_handlers(backoff: Backoff | None = None) -> list[Handler[Any]]:
    """The four demo handlers (``backoff`` overrides demo.flaky's, e.g. zero in tests)."""
    fb = backoff or Backoff(base_s=0.5, max_s=5.0)
    return [
        Handler("demo.noop", NoopPayload, noop, timeout_s=30),
        Handler("demo.sleep", SleepPayload, sleep, timeout_s=600),
        Handler("demo.flaky", FlakyPayload, flaky, max_attempts=5, timeout_s=30, backoff=fb),
        Handler("demo.progress", ProgressPayload, progress, timeout_s=60),
    ]


def registry(backoff: Backoff | None = None) -> Registry:
    """A registry of the demo kinds."""
    return Registry(demo_handlers(backoff))
