"""The embedded servers are real: start them even when the machine's own servers run.

Also checks the choice rule of ``ensure_redis``/``ensure_postgres`` (explicit URL,
default port listening, else embedded) without depending on what this machine runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from jobstream import embedded
from jobstream.embedded import (
    EmbeddedServer,
    ensure_postgres,
    ensure_redis,
    port_open,
    start_embedded_postgres,
    start_embedded_redis,
)
from streams.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings


@pytest.fixture
def embedded_redis(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = start_embedded_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def embedded_postgres(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = start_embedded_postgres(tmp_path / "postgres")
    yield server
    server.stop()


def test_embedded_redis_is_a_real_ephemeral_redis(embedded_redis: EmbeddedServer) -> None:
    assert embedded_redis.url != DEFAULT_REDIS_URL
    client = redis.Redis.from_url(embedded_redis.url, decode_responses=True)
    try:
        assert client.ping()
        assert str(client.info("server")["redis_version"]).startswith("6.2")
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.set("k", "v")
        assert client.get("k") == "v"
    finally:
        client.close()


def test_stop_ends_the_server_and_removes_its_data(tmp_path: Path) -> None:
    server = start_embedded_redis(tmp_path)
    port = redis.Redis.from_url(server.url).connection_pool.connection_kwargs["port"]
    assert port_open("127.0.0.1", port)
    server.stop()
    server.stop()  # idempotent
    assert not port_open("127.0.0.1", port)
    assert not server.instance_dir.exists()


def test_stale_instance_of_a_dead_owner_is_swept(tmp_path: Path) -> None:
    server = start_embedded_redis(tmp_path)
    (server.instance_dir / "owner.pid").write_text(str(_dead_pid()))
    second = start_embedded_redis(tmp_path)  # sweeps the first: its owner is "dead"
    try:
        assert not server.instance_dir.exists()
        assert not port_open("127.0.0.1", _port(server.url))
    finally:
        second.stop()
        server.stop()


@pytest.mark.anyio
async def test_embedded_postgres_answers_select_1(embedded_postgres: EmbeddedServer) -> None:
    assert embedded_postgres.url.startswith("postgresql://postgres@")
    conn = await asyncpg.connect(embedded_postgres.url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        version = await conn.fetchval("SHOW server_version")
        assert int(str(version).split(".")[0]) >= 14
    finally:
        await conn.close()


def test_explicit_urls_are_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "port_open", _must_not_probe)
    s = Settings.from_env(
        {"REDIS_URL": "rediss://u:p@cache:6380/1", "DATABASE_URL": "postgresql://db/x"}
    )
    assert ensure_redis(s) is s
    assert ensure_postgres(s) is s


def test_default_urls_when_the_default_ports_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "port_open", lambda host, port, timeout_s=0.3: True)
    s = Settings.from_env({})
    assert ensure_redis(s).redis_url == DEFAULT_REDIS_URL
    assert ensure_postgres(s).database_url == DEFAULT_DATABASE_URL


def test_embeds_once_per_process_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "port_open", lambda host, port, timeout_s=0.3: False)
    s = Settings.from_env({})
    first = ensure_redis(s)
    assert first.redis_url != DEFAULT_REDIS_URL
    assert ensure_redis(s).redis_url == first.redis_url
    assert ensure_redis(first) is first  # idempotent: a non-default URL is kept
    client = redis.Redis.from_url(first.redis_url)
    try:
        assert client.ping()
    finally:
        client.close()


def _must_not_probe(host: str, port: int, timeout_s: float = 0.3) -> bool:
    raise AssertionError(f"probed {host}:{port} although the URL is explicit")


def _port(url: str) -> int:
    port: int = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
    return port


def _dead_pid() -> int:
    """A pid that is certainly not running (a child that has been reaped)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
