"""``jobstream web`` as a real process: it refuses to start without a token, and serves."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.web.conftest import ADMIN_TOKEN, WEB_TOKEN

CLI = [sys.executable, "-m", "jobstream.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_refuses_to_start_without_a_web_token(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k not in ("JOBSTREAM_WEB_TOKEN",)}
    env["JOBSTREAM_ADMIN_TOKEN"] = ADMIN_TOKEN
    proc = subprocess.run(
        [*CLI, "web", "--port", str(free_port())], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode == 2
    assert b"JOBSTREAM_WEB_TOKEN is not set" in proc.stderr
    assert ADMIN_TOKEN.encode() not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("admin", "fragment"),
    [
        (WEB_TOKEN, b"JOBSTREAM_ADMIN_TOKEN equals JOBSTREAM_WEB_TOKEN"),
        ("short-admin", b"JOBSTREAM_ADMIN_TOKEN is too short"),
    ],
)
def test_refuses_to_start_with_a_weak_admin_token(
    env: dict[str, str], admin: str, fragment: bytes
) -> None:
    env = {**env, "JOBSTREAM_WEB_TOKEN": WEB_TOKEN, "JOBSTREAM_ADMIN_TOKEN": admin}
    proc = subprocess.run(
        [*CLI, "web", "--port", str(free_port())], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert WEB_TOKEN.encode() not in proc.stderr + proc.stdout
    assert b"short-admin" not in proc.stderr + proc.stdout


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = {**env, "JOBSTREAM_WEB_TOKEN": WEB_TOKEN, "JOBSTREAM_ADMIN_TOKEN": ADMIN_TOKEN}
    proc = subprocess.Popen(
        [*CLI, "web", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "jobstream web exited early"
            assert time.monotonic() < deadline, "jobstream web did not come up"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        assert WEB_TOKEN.encode() not in out and ADMIN_TOKEN.encode() not in out


def test_serves_enqueue_and_streams_events_live(server: str) -> None:
    read = {"Authorization": f"Bearer {WEB_TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"kind": "demo.noop", "delay_s": 60, "payload": {}}
    r = httpx.post(f"{server}/jobs", headers=read, json=body)
    assert r.status_code == 201
    job_id = r.json()["job_id"]
    assert httpx.get(f"{server}/jobs/{job_id}").status_code == 401
    with httpx.stream("GET", f"{server}/jobs/{job_id}/events", headers=read, timeout=30) as s:
        lines = s.iter_lines()
        seen = list(_until(lines, "event: job.queued"))
        assert seen[-1] == "event: job.queued"  # delivered while the stream stays open
        r = httpx.post(f"{server}/jobs/{job_id}/cancel", headers=admin)
        assert r.status_code == 200
        rest = list(lines)  # the server ends the stream after the terminal event
    assert "event: job.canceled" in rest


def _until(lines: Iterator[str], wanted: str) -> Iterator[str]:
    for line in lines:
        yield line
        if line == wanted:
            return
