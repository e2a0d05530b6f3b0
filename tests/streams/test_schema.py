"""The event schema: docs/events.schema.json is current; events round-trip."""

from __future__ import annotations

import msgspec
import pytest

from jobstream.schema import SCHEMA_PATH, render
from streams.events import TAGS, JobQueued, decode_event, encode_event


def test_schema_file_is_current() -> None:
    assert SCHEMA_PATH.read_text() == render(), "run `make schema`"


def test_tags_are_stable() -> None:
    assert TAGS == (
        "job.queued", "job.started", "job.progress", "job.completed",
        "job.failed", "job.retry_scheduled", "job.canceled",
    )  # fmt: skip


def test_round_trip_keeps_raw_payload() -> None:
    e = JobQueued(job_id="a", queue="q", kind="k", attempt=1, payload=msgspec.Raw(b'{"x":[1,2]}'))
    back = decode_event(encode_event(e))
    assert isinstance(back, JobQueued) and bytes(back.payload) == b'{"x":[1,2]}'


def test_decode_rejects_unknown_tag_and_bad_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type":"job.exploded","job_id":"a","queue":"q","kind":"k","attempt":1}')
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type":"job.started","job_id":"a","queue":"q","kind":"k","attempt":"x"}')
