"""``jobstream dev`` (``make run``): the whole system in one process runs a demo burst."""

from __future__ import annotations

import json
import sys

import anyio
import asyncpg
import pytest

pytestmark = pytest.mark.anyio


async def test_dev_once_runs_the_demo_burst_through_the_projection(
    env: dict[str, str], schema: str, pg: asyncpg.Connection
) -> None:
    cmd = [sys.executable, "-m", "jobstream.cli", "dev", "--once", "--demo-jobs", "50",
           "--metrics-port", "0", "--json"]  # fmt: skip
    proc = await anyio.run_process(cmd, env={**env, "JOBSTREAM_PG_SCHEMA": schema}, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    stats = json.loads(proc.stdout)
    by_kind = {k["kind"]: k for k in stats["kinds"]}
    assert by_kind["demo.noop"]["completed"] == 50
    assert by_kind["demo.flaky"]["completed"] == 5
    rows = await pg.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"completed": 63}
