"""The HTTP API against real Redis: auth, enqueue and its validation, status, admin, ops."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from jobstream.web_http import ConfigError, Tokens
from streams.settings import Settings
from tests.web.conftest import ADMIN, ADMIN_TOKEN, READ, WEB_TOKEN

pytestmark = pytest.mark.anyio


async def test_no_token_or_wrong_token_is_401(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        for method, url in (("POST", "/jobs"), ("GET", "/jobs/x"), ("GET", "/jobs/x/events")):
            r = await http.request(method, url, headers=headers, json={"kind": "demo.noop"})
            assert r.status_code == 401, (method, url, headers)
            assert r.json() == {"error": "missing or invalid bearer token"}
            assert r.headers["www-authenticate"].startswith("Bearer")


async def test_admin_routes_reject_the_plain_token(http: httpx.AsyncClient) -> None:
    job_id = (await http.post("/jobs", headers=READ, json={"kind": "demo.noop"})).json()["job_id"]
    for action in ("cancel", "retry"):
        r = await http.post(f"/jobs/{job_id}/{action}", headers=READ)
        assert r.status_code == 403
        assert "admin" in r.json()["error"]
        assert (await http.post(f"/jobs/{job_id}/{action}")).status_code == 401


async def test_admin_token_is_accepted_everywhere(http: httpx.AsyncClient) -> None:
    r = await http.post("/jobs", headers=ADMIN, json={"kind": "demo.noop"})
    assert r.status_code == 201
    assert (await http.get(f"/jobs/{r.json()['job_id']}", headers=ADMIN)).status_code == 200


def test_no_anonymous_mode() -> None:
    with pytest.raises(ConfigError, match="JOBSTREAM_WEB_TOKEN"):
        Tokens.from_env({})
    with pytest.raises(ConfigError):
        Tokens.from_env({"JOBSTREAM_WEB_TOKEN": "  ", "JOBSTREAM_ADMIN_TOKEN": ADMIN_TOKEN})
    tokens = Tokens.from_env({"JOBSTREAM_WEB_TOKEN": WEB_TOKEN})
    assert tokens.admin is None
    assert tokens.level_of(f"Bearer {WEB_TOKEN}") == "read"
    assert WEB_TOKEN not in repr(tokens)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"JOBSTREAM_WEB_TOKEN": "w" * 15}, "JOBSTREAM_WEB_TOKEN is too short"),
        (
            {"JOBSTREAM_WEB_TOKEN": WEB_TOKEN, "JOBSTREAM_ADMIN_TOKEN": "a" * 15},
            "JOBSTREAM_ADMIN_TOKEN is too short",
        ),
        (
            {"JOBSTREAM_WEB_TOKEN": WEB_TOKEN, "JOBSTREAM_ADMIN_TOKEN": f" {WEB_TOKEN} "},
            "JOBSTREAM_ADMIN_TOKEN equals JOBSTREAM_WEB_TOKEN",
        ),
    ],
)
def test_weak_token_configurations_are_refused(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        Tokens.from_env(env)
    assert WEB_TOKEN not in str(info.value) and "a" * 15 not in str(info.value)
    assert Tokens.from_env({"JOBSTREAM_WEB_TOKEN": "w" * 16}).web == b"w" * 16


async def test_enqueue_then_status_from_redis(http: httpx.AsyncClient) -> None:
    body = {"kind": "demo.sleep", "payload": {"seconds": 2}, "priority": "high", "delay_s": 60}
    r = await http.post("/jobs", headers=READ, json=body)
    assert r.status_code == 201
    job_id = r.json()["job_id"]
    r = await http.get(f"/jobs/{job_id}", headers=READ)
    assert r.status_code == 200
    job = r.json()
    assert job["source"] == "redis"
    assert (job["job_id"], job["kind"], job["queue"], job["priority"]) == (
        job_id,
        "demo.sleep",
        "default",
        "high",
    )
    assert (await http.get("/jobs/nope", headers=READ)).status_code == 404


async def test_enqueue_is_idempotent_with_a_dedup_key_or_job_id(http: httpx.AsyncClient) -> None:
    body = {"kind": "demo.noop", "dedup_key": "report:42"}
    a = (await http.post("/jobs", headers=READ, json=body)).json()["job_id"]
    b = (await http.post("/jobs", headers=READ, json=body)).json()["job_id"]
    assert a == b
    r = await http.post("/jobs", headers=READ, json={"kind": "demo.noop", "job_id": "mine-1"})
    assert r.status_code == 201 and r.json() == {"job_id": "mine-1"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"kind": "no.such.kind"}, "unknown job kind"),
        ({"kind": "demo.sleep", "payload": {"seconds": "long"}}, "payload of 'demo.sleep'"),
        ({"kind": "demo.noop", "payload": {"extra": 1}}, "payload of 'demo.noop'"),
        ({"kind": "demo.noop", "priority": "urgent"}, "invalid request body"),
        ({"kind": "demo.noop", "queue": "a{b}"}, "invalid queue name"),
        ({"kind": "demo.noop", "delay_s": -1}, "delay"),
        ({"kind": "demo.noop", "surprise": True}, "invalid request body"),
        ({"payload": {}}, "invalid request body"),
    ],
)
async def test_enqueue_validation_errors_are_400(
    http: httpx.AsyncClient, body: dict[str, object], fragment: str
) -> None:
    r = await http.post("/jobs", headers=READ, json=body)
    assert r.status_code == 400
    assert fragment in r.json()["error"]


async def test_invalid_json_is_400(http: httpx.AsyncClient) -> None:
    r = await http.post("/jobs", headers=READ, content=b"{not json")
    assert r.status_code == 400
    assert "invalid request body" in r.json()["error"]


async def test_oversize_payload_and_body_are_413(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    cap = settings.payload_cap_bytes
    just_over = {"kind": "demo.noop", "payload": {"pad": "x" * cap}}
    r = await http.post("/jobs", headers=READ, json=just_over)
    assert r.status_code == 413
    assert "over the cap" in r.json()["error"]
    huge = b'{"kind": "demo.noop", "payload": "' + b"x" * (cap + 20_000) + b'"}'
    r = await http.post("/jobs", headers=READ, content=huge)
    assert r.status_code == 413
    assert "request body over" in r.json()["error"]


async def test_cancel_and_retry(http: httpx.AsyncClient) -> None:
    body = {"kind": "demo.noop", "delay_s": 60}
    job_id = (await http.post("/jobs", headers=READ, json=body)).json()["job_id"]
    r = await http.post(f"/jobs/{job_id}/retry", headers=ADMIN)
    assert r.status_code == 409  # not dead or canceled
    r = await http.post(f"/jobs/{job_id}/cancel", headers=ADMIN, json={"reason": "test"})
    assert (r.status_code, r.json()) == (200, {"job_id": job_id, "result": "canceled"})
    r = await http.post(f"/jobs/{job_id}/cancel", headers=ADMIN)
    assert (r.status_code, r.json()["result"]) == (409, "terminal")
    assert (await http.get(f"/jobs/{job_id}", headers=READ)).json()["state"] == "canceled"
    r = await http.post(f"/jobs/{job_id}/retry", headers=ADMIN)
    assert (r.status_code, r.json()["result"]) == (200, "queued")
    assert (await http.post("/jobs/nope/cancel", headers=ADMIN)).status_code == 404
    assert (await http.post("/jobs/nope/retry", headers=ADMIN)).status_code == 404


async def test_healthz_needs_no_token(http: httpx.AsyncClient) -> None:
    r = await http.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")


async def test_metrics_count_routes_without_job_ids(
    http: httpx.AsyncClient, metrics_registry: CollectorRegistry
) -> None:
    job_id = (await http.post("/jobs", headers=READ, json={"kind": "demo.noop"})).json()["job_id"]
    await http.get(f"/jobs/{job_id}", headers=READ)
    await http.get(f"/jobs/{job_id}")
    await http.get("/no/such/route")
    r = await http.get("/metrics")
    assert r.status_code == 200
    text = r.text
    assert job_id not in text
    for line in (
        'jobstream_web_requests_total{method="POST",route="/jobs",status="201"} 1.0',
        'jobstream_web_requests_total{method="GET",route="/jobs/{job_id}",status="200"} 1.0',
        'jobstream_web_requests_total{method="GET",route="/jobs/{job_id}",status="401"} 1.0',
        'jobstream_web_requests_total{method="GET",route="unmatched",status="404"} 1.0',
    ):
        assert line in text, line


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("job_id", "cron:nightly:20300101T0000Z", "must not start with 'cron:'"),
        ("dedup_key", "cron:nightly:20300101T0000Z", "must not start with 'cron:'"),
        ("job_id", "a\u0000b", "printable"),
        ("dedup_key", "tab\there", "printable"),
        ("job_id", "line\nbreak", "printable"),
        ("job_id", "", "1-256 characters"),
        ("dedup_key", "", "1-256 characters"),
        ("job_id", "x" * 257, "1-256 characters"),
    ],
)
async def test_enqueue_rejects_reserved_or_malformed_ids(
    http: httpx.AsyncClient,
    redis: aioredis.Redis,
    settings: Settings,
    field: str,
    value: str,
    fragment: str,
) -> None:
    r = await http.post("/jobs", headers=READ, json={"kind": "demo.noop", field: value})
    assert r.status_code == 400
    error = r.json()["error"]
    assert field in error and fragment in error
    assert not [
        k async for k in redis.scan_iter(match=f"{settings.namespace}:*")
    ]  # nothing written


async def test_ids_near_the_rules_are_accepted(http: httpx.AsyncClient) -> None:
    for body in (
        {"kind": "demo.noop", "job_id": "x" * 256},
        {"kind": "demo.noop", "job_id": "my-cron:thing", "dedup_key": "CRONish: ok ünïcode"},
    ):
        r = await http.post("/jobs", headers=READ, json=body)
        assert r.status_code == 201, r.json()
    # A tick's job can still be read and acted on: the prefix is reserved for creation only.
    assert (await http.get("/jobs/cron:nightly:20300101T0000Z", headers=READ)).status_code == 404
    assert (await http.get("/jobs/a%00b", headers=READ)).status_code == 400
