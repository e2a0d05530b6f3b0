"""Typed settings read from the environment, in one object.

Owns: the mapping from environment variables to configuration. No I/O beyond
reading ``os.environ`` (passed in explicitly so tests can build their own), no
globals. Invariant: the Redis URL's password never leaves this module in a
printable form; ``Settings.__repr__`` and :func:`redact_url` hide it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_NAMESPACE = "jobstream"
DEFAULT_PAYLOAD_CAP_BYTES = 256 * 1024

_URL_SECRET = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    return _URL_SECRET.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a jobstream process is configured with."""

    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    namespace: str = DEFAULT_NAMESPACE
    payload_cap_bytes: int = DEFAULT_PAYLOAD_CAP_BYTES
    # Seconds a worker's heartbeat stays valid; a worker silent this long is dead
    # and its pending jobs are reclaimed.
    heartbeat_ttl_s: float = 15.0
    # How long a job under a dedup key keeps the key (seconds).
    dedup_ttl_s: int = 24 * 3600
    # How long a dead or canceled job's spec is kept so it can be retried (seconds).
    dead_ttl_s: int = 30 * 24 * 3600
    # Aging: a medium/low entry that has waited this long is served before
    # higher priorities (milliseconds).
    aging_medium_ms: int = 10_000
    aging_low_ms: int = 30_000
    # Seconds a SIGTERM'd worker waits for in-flight jobs before cancelling them.
    shutdown_grace_s: float = 25.0
    redis_explicit: bool = False
    database_explicit: bool = False

    def __repr__(self) -> str:
        return (
            f"Settings(redis_url={redact_url(self.redis_url)!r}, "
            f"database_url={redact_url(self.database_url)!r}, namespace={self.namespace!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``)."""
        e = os.environ if env is None else env
        redis_url = e.get("REDIS_URL", "")
        database_url = e.get("DATABASE_URL", "")
        ns = e.get("JOBSTREAM_NAMESPACE", DEFAULT_NAMESPACE)
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", ns):
            raise ValueError("JOBSTREAM_NAMESPACE must be 1-64 of [A-Za-z0-9_.:-]")
        return cls(
            redis_url=redis_url or DEFAULT_REDIS_URL,
            database_url=database_url or DEFAULT_DATABASE_URL,
            namespace=ns,
            payload_cap_bytes=int(e.get("JOBSTREAM_PAYLOAD_CAP_BYTES", DEFAULT_PAYLOAD_CAP_BYTES)),
            heartbeat_ttl_s=float(e.get("JOBSTREAM_HEARTBEAT_TTL_S", 15.0)),
            shutdown_grace_s=float(e.get("JOBSTREAM_SHUTDOWN_GRACE_S", 25.0)),
            redis_explicit=bool(redis_url),
            database_explicit=bool(database_url),
        )
