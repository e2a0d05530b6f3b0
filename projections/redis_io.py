"""The projector's Redis side: queue discovery, its consumer group, reads, claims, acks, trims.

Owns: every Redis command the projector sends. Works on Redis 6.2 and 7.0
(XINFO GROUPS lacks ``lag``/``entries-read`` on 6.2). Deleted entries still
pending differ: 6.2's XAUTOCLAIM claims them but answers nil (no id), 7.0's
drops them from the pending list; 6.2's XREADGROUP of pending answers them
with no fields, 7.0's with nil fields. So :meth:`StreamIO.claim` claims ids
only (JUSTID) and reads the contents with XRANGE: an id without content is a
deleted entry, returned ``deleted`` so that it is acknowledged, never left
pending forever (which would block trimming).

Invariants:
- The group is created at id 0 with MKSTREAM, so a group recreated after a
  Redis restart re-reads whatever the stream still holds (replays are no-ops
  in Postgres).
- :data:`TRIM_SCRIPT` trims an events stream atomically and only below the
  lowest position every group on it has acknowledged: never at or above the
  oldest pending entry of any group, never above any group's last-delivered-id.
"""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from projections.store import Entry
from streams.keys import Keys

DEFAULT_GROUP: Final = "projector"

# KEYS[1] = events stream. Returns the number of entries trimmed.
TRIM_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local floor = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, pending, bound = nil, 0, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = tonumber(g[i + 1])
    elseif g[i] == 'last-delivered-id' then bound = g[i + 1] end
  end
  if pending > 0 then
    local oldest = redis.call('XPENDING', KEYS[1], name)[2]
    if less(oldest, bound) then bound = oldest end
  end
  if floor == nil or less(bound, floor) then floor = bound end
end
if floor == nil or floor == '0-0' then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamIO:
    """The projector group's view of one namespace's events streams."""

    def __init__(self, client: aioredis.Redis, namespace: str, group: str, consumer: str) -> None:
        self.client = client
        self.keys = Keys(namespace)
        self.group = group
        self.consumer = consumer
        self._trim = client.register_script(TRIM_SCRIPT)

    def stream(self, queue: str) -> str:
        return self.keys.queue(queue).events

    async def queues(self) -> list[str]:
        """Every known queue (SMEMBERS of ``ns:queues``), sorted."""
        members: set[bytes | str] = await self.client.smembers(self.keys.queues)
        return sorted(_s(q) for q in members)

    async def ensure_group(self, queue: str) -> None:
        """Create the group at id 0 (and the stream if missing); an existing group is kept."""
        try:
            await self.client.xgroup_create(self.stream(queue), self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _entries(self, queue: str, items: list[Any]) -> list[Entry]:
        out = []
        for item in items:
            if isinstance(item, (bytes, str)):  # a bare id: the entry was deleted
                out.append(Entry(queue, _s(item), None, deleted=True))
                continue
            entry_id, fields = item[0], item[1]
            if not fields:  # deleted (XADD never writes an entry without fields)
                out.append(Entry(queue, _s(entry_id), None, deleted=True))
            else:
                out.append(Entry(queue, _s(entry_id), fields.get(b"e")))
        return out

    async def read(self, ids: dict[str, str], count: int, block_ms: int | None) -> list[Entry]:
        """XREADGROUP from ``ids`` (queue -> ``>`` or ``0`` for our own pending)."""
        streams: dict[Any, Any] = {self.stream(q): i for q, i in ids.items()}
        by_key = {self.stream(q): q for q in ids}
        reply: Any = await self.client.xreadgroup(
            self.group, self.consumer, streams, count=count, block=block_ms
        )
        out: list[Entry] = []
        for key, entries in reply or []:  # RESP2: [[key, [(id, fields), ...]], ...]
            out.extend(self._entries(by_key[_s(key)], entries))
        return out

    async def read_own_pending(self, queue: str, count: int) -> list[Entry]:
        """Entries already delivered to this consumer but not acked (e.g. before a restart)."""
        return await self.read({queue: "0"}, count, None)

    async def claim(self, queue: str, min_idle_ms: int, count: int) -> list[Entry]:
        """XAUTOCLAIM entries idle longer than ``min_idle_ms`` (dead projectors' batches).

        Ids only (JUSTID), then their contents by XRANGE, so a claimed entry
        deleted from the stream is known by its id (see the module docstring).
        """
        stream = self.stream(queue)
        ids: list[Any] = await self.client.xautoclaim(
            stream, self.group, self.consumer, min_idle_ms, "0-0", count, justid=True
        )
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(stream, entry_id, entry_id, count=1)
            found: list[Any] = await pipe.execute()
        items = [hit[0] if hit else entry_id for entry_id, hit in zip(ids, found, strict=True)]
        return self._entries(queue, items)

    async def ack(self, entries: list[Entry]) -> None:
        """XACK every entry, one pipeline round trip."""
        by_queue: dict[str, list[str]] = {}
        for e in entries:
            by_queue.setdefault(e.queue, []).append(e.entry_id)
        async with self.client.pipeline(transaction=False) as pipe:
            for queue, ids in by_queue.items():
                pipe.xack(self.stream(queue), self.group, *ids)
            await pipe.execute()

    async def trim(self, queue: str) -> int:
        """Trim the queue's events stream below what every group acknowledged."""
        return int(await self._trim(keys=[self.stream(queue)]))

    async def pending_count(self, queue: str) -> int:
        """Entries of our group delivered but not acked (by any consumer)."""
        try:
            summary = await self.client.xpending(self.stream(queue), self.group)
        except ResponseError:
            return 0
        return int(summary["pending"] if isinstance(summary, dict) else summary[0])
