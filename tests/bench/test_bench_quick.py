"""``python -m bench --quick`` runs end to end and writes a well-formed result file.

Speeds are not asserted (they belong to the machine, not to the code): only that
every expected figure is present, measured (or honestly "not available" when
the projector or Postgres is missing), consistent, and that the run leaves no
keys behind in Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import redis

from streams.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE_KEYS = {
    "enqueue.one",
    "enqueue.many",
    "drain.1proc",
    "drain.2proc",
    "reclaim.ms",
    *(f"pickup{rate}.{p}" for rate in (200, 1000) for p in ("p50", "p90", "p99", "max")),
}
PROJECTION_KEYS = {
    "projection.apply",
    "projection.apply_synthetic",
    "projection.lag_p50",
    "projection.lag_p99",
}


def _check_figure(f: dict[str, Any]) -> None:
    assert f["label"] and f["unit"], f
    if f["key"] in PROJECTION_KEYS and f["status"] == "not available":
        assert f["note"], "an unavailable figure says why"
        return
    assert f["status"] == "ok", f
    values = f["values"]
    assert values and all(isinstance(v, float) for v in values), f
    assert f["min"] == min(values) and f["max"] == max(values), f
    assert f["min"] <= f["median"] <= f["max"], f
    if f["unit"] in ("jobs/s", "events/s"):
        assert f["min"] > 0, f
    else:
        assert f["min"] >= 0, f


def test_quick_mode_writes_well_formed_results(base_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    env = dict(os.environ, REDIS_URL=base_settings.redis_url)
    before = set(redis.Redis.from_url(base_settings.redis_url).scan_iter(match="bench*"))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "enqueue, one job per call" in proc.stdout  # the table was printed

    report = msgspec.json.decode(out.read_bytes())
    assert report["mode"] == "quick"
    machine = report["machine"]
    for field in ("cpu_count", "cpu_model", "python", "redis_server", "postgres", "git_commit"):
        assert machine[field], field
    assert report["settings"]["concurrency"] == 32
    keys = [f["key"] for f in report["figures"]]
    assert len(keys) == len(set(keys))
    assert set(keys) == CORE_KEYS | PROJECTION_KEYS
    for figure in report["figures"]:
        _check_figure(figure)

    after = set(redis.Redis.from_url(base_settings.redis_url).scan_iter(match="bench*"))
    assert after <= before, "the bench left keys behind"
