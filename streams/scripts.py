"""The Lua scripts of every state transition, loaded and called by name.

Owns: loading ``streams/lua/*.lua`` (each prefixed by ``prelude.lua``) and calling
them. Every transition (enqueue, claim/start, finish (complete/fail/retry/progress/
cancel/handback), promote, cancel, retry, reclaim, heartbeat) is ONE script that
checks the state, changes the work structures and appends the event(s); each
script's header documents its KEYS, ARGV and returns.

Invariants: ``KEYS[1]`` is the queue prefix ``ns:{queue}`` and ``ARGV[1]`` is
``now_ms`` ("0" = the Redis server's ``TIME``; tests may pass a controlled clock).
Scripts are called by EVALSHA only: they are loaded once per client (and again
after a NOSCRIPT, e.g. a restarted Redis), so a call or a batch of calls costs
exactly one round trip — redis-py's Script objects would add a SCRIPT EXISTS
round trip to every pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "finish",
    "promote",
    "cancel",
    "retry",
    "reclaim",
    "heartbeat",
    "idle",
    "adopt",
    "release",
)
Call = tuple[str, str, Sequence[Any]]  # script name, queue prefix, ARGV after now_ms


@cache
def script_source(name: str) -> str:
    """The full source of script ``name`` (prelude + body)."""
    lua = resources.files("streams") / "lua"
    prelude = (lua / "prelude.lua").read_text()
    return prelude + "\n" + (lua / f"{name}.lua").read_text()


@cache
def script_sha(name: str) -> str:
    return hashlib.sha1(script_source(name).encode()).hexdigest()


class Scripts:
    """Calls the scripts on one Redis client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._loaded = False

    async def load(self) -> None:
        """SCRIPT LOAD every script (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for name in SCRIPT_NAMES:
            pipe.script_load(script_source(name))
        await pipe.execute()
        self._loaded = True

    async def call(self, name: str, prefix: str, args: Sequence[Any], now_ms: int = 0) -> Any:
        """Run script ``name`` on the queue whose key prefix is ``prefix``."""
        return (await self.batch([(name, prefix, args)], now_ms=now_ms))[0]

    async def batch(self, calls: Sequence[Call], now_ms: int = 0) -> list[Any]:
        """Run several script calls in one pipelined round trip; replies in order."""
        if not calls:
            return []
        for attempt in (1, 2):
            if not self._loaded:
                await self.load()
            if len(calls) == 1:
                name, prefix, args = calls[0]
                try:
                    return [await self._redis.evalsha(script_sha(name), 1, prefix, now_ms, *args)]
                except NoScriptError:
                    self._loaded = False
                    continue
            pipe = self._redis.pipeline(transaction=False)
            for name, prefix, args in calls:
                pipe.evalsha(script_sha(name), 1, prefix, now_ms, *args)
            try:
                return await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                self._loaded = False
        raise NoScriptError("scripts could not be loaded")
