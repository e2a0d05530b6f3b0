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
- One connection's work is bounded. Where it starts: after ``Last-Event-ID``
  when given, else just before the job's first entry when the projection knows
  it (:func:`before`), else ``0-0``. It scans at most ``max_scan`` entries of the
  events stream (every entry read counts, the job's or not); then it ends with
  ``event: end``, ``data: {"reason": "scan limit reached", "resumable": true}``
  and ``id:`` = the last entry scanned. It lives at most ``max_duration_s``
  seconds; then it ends with ``event: reconnect`` (reason ``max stream
  duration reached``) and ``id:`` = the last entry scanned, so a client
  (``EventSource`` does it by itself) reconnects with ``Last-Event-ID`` and
  resumes exactly there: no event of the job is lost or repeated.
- ``event: end`` means "stop following": with ``resumable`` absent the job can
  produce nothing more; with ``resumable`` true a client may still resume.
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
_MAX_SEQ = 2**64 - 1
_BATCH = 500


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


def before(entry_id: str) -> str:
    """The stream id just before ``entry_id`` (``XREAD`` is exclusive: it starts after it);
    ``0-0`` when ``entry_id`` is not a stream id."""
    if not _ENTRY_ID.fullmatch(entry_id):
        return "0-0"
    ms_text, _, seq_text = entry_id.partition("-")
    ms, seq = int(ms_text), int(seq_text)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"


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
        max_duration_s: float = 600.0,
        max_scan: int = 100_000,
    ) -> None:
        self.redis = redis
        self.stream = keys.queue(queue).events
        self.job_key = keys.queue(queue).job(job_id)
        self.job_id = job_id
        self.position = position
        self.block_ms = block_ms
        self.keepalive_s = keepalive_s
        self.max_duration_s = max_duration_s
        self.max_scan = max_scan
        self.scanned = 0
        self.done = False

    async def _read(self, block: int | None) -> list[bytes]:
        """Frames of this job in the next batch (advancing the position); sets ``done``."""
        room = self.max_scan - self.scanned
        if room <= 0:
            return []
        resp: Any = await self.redis.xread(
            {self.stream: self.position}, count=min(_BATCH, room), block=block
        )
        frames: list[bytes] = []
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                self.position = entry_id.decode()
                self.scanned += 1
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
        while not self.done and self.scanned < self.max_scan:
            before = self.position
            frames += await self._read(block=None)
            if self.position == before:
                break
        if not self.done and self.scanned < self.max_scan:
            self.done = True
            frames.append(b'event: end\ndata: {"reason":"no terminal event retained"}\n\n')
        return frames  # at the scan limit, frames() adds the limit's end frame

    def _limit_frame(self, deadline: float) -> bytes | None:
        """The closing frame once the scan limit or the deadline is reached (sets ``done``)."""
        if self.scanned >= self.max_scan:
            event, data = "end", {"reason": "scan limit reached", "resumable": True}
        elif time.monotonic() >= deadline:
            event, data = "reconnect", {"reason": "max stream duration reached"}
        else:
            return None
        self.done = True
        return frame(self.position, event, msgspec.json.encode(data))

    async def frames(self) -> AsyncIterator[bytes]:
        """The SSE frames until the job's terminal event or a limit (see the module invariants)."""
        last_sent = time.monotonic()
        deadline = last_sent + self.max_duration_s
        while not self.done:
            batch = await self._read(block=self.block_ms)
            if not batch and not self.done:
                batch = await self._finished_without_terminal() or []
            closing = None if self.done else self._limit_frame(deadline)
            if closing is not None:
                batch.append(closing)
            if not batch and time.monotonic() - last_sent >= self.keepalive_s:
                batch = [b": keep-alive\n\n"]
            for chunk in batch:
                yield chunk
            if batch:
                last_sent = time.monotonic()
