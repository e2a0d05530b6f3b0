"""The Lua scripts of every state transition, loaded and called by name.

Owns: loading ``streams/lua/*.lua`` (each prefixed by ``prelude.lua``) and the
typed call of each script. Every transition (enqueue, claim/start, finish
(complete/fail/retry/progress/cancel/handback), promote, cancel, retry, reclaim,
heartbeat) is ONE script that checks the state, changes the work structures and
appends the event(s); each script's header documents its KEYS, ARGV and returns.

Invariant: ``KEYS[1]`` is the queue prefix ``ns:{queue}`` and ``ARGV[1]`` is
``now_ms`` ("0" = the Redis server's ``TIME``; tests may pass a controlled clock).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

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
)


@cache
def script_source(name: str) -> str:
    """The full source of script ``name`` (prelude + body)."""
    lua = resources.files("streams") / "lua"
    prelude = (lua / "prelude.lua").read_text()
    return prelude + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """The registered scripts of one Redis client (EVALSHA, loading on NOSCRIPT)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    async def call(
        self, name: str, prefix: str, args: list[Any], now_ms: int = 0, client: Any = None
    ) -> Any:
        """Run script ``name`` on the queue whose key prefix is ``prefix``."""
        script = self._scripts[name]
        return await script(keys=[prefix], args=[now_ms, *args], client=client)
