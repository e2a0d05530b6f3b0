"""Live events of one job as Server-Sent Events.

Owns: following a queue's events stream (``XREAD BLOCK``, read-only: no group,
no ack, so the projector is never disturbed), picking the events of one job and
framing them as SSE (``id:`` = the stream entry id, ``event:`` = the event type,
``data:`` = the event JSON exactly as it is in the stream).

Invariants:
- The stream ends right after the job's terminal event (``job.completed``,
  ``job.canceled``, or ``job.failed`` with ``will_retry`` false).
- It also ends, with an ``event: end`` frame, when the job can no longer produce
  events and none is left to read: its hash is gone or dead/canceled, and a read
  to the end of the stream *after* that check found no terminal event (it was
  trimmed). The check comes first, and a terminal event is appended in the same
  script that changes the hash, so a terminal event is never missed this way.
- A comment frame is sent every ``keepalive_s`` while idle, so proxies keep the
  connection and a gone client is noticed.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.asyncio as aioredis

from streams.events import Event, JobCanceled, JobCompleted, JobFailed, decode_event
from streams.keys import Keys

_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")
_FINISHED_STATES = (b"dead", b"canceled")


def is_terminal(event: Event) -> bool:
    """True for the one event that ends a job's life."""
    if isinstance(event, JobFailed):
        return not event.will_retry
    return isinstance(event, JobCompleted | JobCanceled)


def start_position(last_event_id: str | None) -> str:
    """Where to start reading: after ``Last-Event-ID`` when it is a stream id, else the start."""
    if last_event_id and _ENTRY_ID.fullmatch(last_event_id.strip()):
        return last_event_id.strip()
    return "0-0"


def frame(entry_id: str, event_type: str, data: bytes) -> bytes:
    """One SSE frame (event JSON is a single line: msgspec never emits newlines)."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (entry_id.encode(), event_type.encode(), data)


class JobEventFollower:
    """Yields the SSE frames of ``job_id``'s events in ``queue`` from ``position`` on."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        queue: str,
        job_id: str,
        *,
        position: str = "0-0",
        block_ms: int = 1000,
        keepalive_s: float = 15.0,
    ) -> None:
        self.redis = redis
        self.stream = keys.queue(queue).events
        self.job_key = keys.queue(queue).job(job_id)
        self.job_id = job_id
        self.position = position
        self.block_ms = block_ms
        self.keepalive_s = keepalive_s
        self.done = False

    async def _read(self, block: int | None) -> list[bytes]:
        """Frames of this job in the next batch (advancing the position); sets ``done``."""
        resp: Any = await self.redis.xread({self.stream: self.position}, count=500, block=block)
        frames: list[bytes] = []
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                self.position = entry_id.decode()
                try:
                    event = decode_event(fields[b"e"])
                except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                    continue  # not ours to judge; `events tail` reports undecodable entries
                if event.job_id != self.job_id:
                    continue
                tag = str(type(event).__struct_config__.tag)
                frames.append(frame(self.position, tag, fields[b"e"]))
                if is_terminal(event):
                    self.done = True
                    return frames
        return frames

    async def _finished_without_terminal(self) -> list[bytes] | None:
        """When the job can emit nothing more: the rest of its frames (end frame if needed)."""
        live: Any = await self.redis.exists(self.job_key)
        state: Any = await self.redis.hget(self.job_key, "state")  # absent while queued
        if live and state not in _FINISHED_STATES:
            return None
        frames: list[bytes] = []
        while not self.done:
            before = self.position
            frames += await self._read(block=None)
            if self.position == before:
                break
        if not self.done:
            self.done = True
            frames.append(b'event: end\ndata: {"reason":"no terminal event retained"}\n\n')
        return frames

    async def frames(self) -> AsyncIterator[bytes]:
        """The SSE frames until the job's terminal event (see the module invariants)."""
        last_sent = time.monotonic()
        while not self.done:
            batch = await self._read(block=self.block_ms)
            if not batch and not self.done:
                batch = await self._finished_without_terminal() or []
            if not batch and time.monotonic() - last_sent >= self.keepalive_s:
                batch = [b": keep-alive\n\n"]
            for chunk in batch:
                yield chunk
            if batch:
                last_sent = time.monotonic()
