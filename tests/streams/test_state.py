"""Property tests of the pure state machine ``evolve``."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from streams.events import (
    Event,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRetryScheduled,
    JobStarted,
)
from streams.state import TERMINAL, JobState, evolve

RAW = msgspec.Raw(b"{}")
common = {"job_id": st.just("j1"), "queue": st.just("q"), "kind": st.just("k")}
attempt = st.integers(min_value=1, max_value=6)
at = st.integers(min_value=0, max_value=10_000)

events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        JobQueued,
        **common,
        attempt=attempt,
        at=at,
        payload=st.just(RAW),
        reason=st.sampled_from(["enqueue", "retry", "reclaim", "handback", "operator"]),
        run_at=at,
    ),
    st.builds(JobStarted, **common, attempt=attempt, at=at, worker=st.just("w")),
    st.builds(
        JobProgress, **common, attempt=attempt, at=at, fraction=st.floats(min_value=0, max_value=1)
    ),
    st.builds(JobCompleted, **common, attempt=attempt, at=at, result=st.just(RAW)),
    st.builds(JobFailed, **common, attempt=attempt, at=at, will_retry=st.booleans()),
    st.builds(JobRetryScheduled, **common, attempt=attempt, at=at, run_at=at),
    st.builds(JobCanceled, **common, attempt=attempt, at=at),
)


def fold(evs: list[Event]) -> list[JobState]:
    states: list[JobState] = []
    state: JobState | None = None
    for e in evs:
        state = evolve(state, e)
        states.append(state)
    return states


@given(st.lists(events, min_size=1, max_size=30))
def test_attempts_never_go_back(evs: list[Event]) -> None:
    states = fold(evs)
    for before, after in itertools.pairwise(states):
        assert after.attempt >= before.attempt


@given(st.lists(events, min_size=1, max_size=30))
def test_terminal_states_absorb_all_but_operator_retry(evs: list[Event]) -> None:
    state: JobState | None = None
    for e in evs:
        new = evolve(state, e)
        if state is not None and state.status in TERMINAL:
            revive = (
                isinstance(e, JobQueued) and e.reason == "operator" and e.attempt > state.attempt
            )
            if not revive:
                assert new == state
            else:
                assert new.status in ("queued", "scheduled")
        state = new


@given(st.lists(events, min_size=1, max_size=30))
def test_evolve_is_pure(evs: list[Event]) -> None:
    state = fold(evs[:-1])[-1] if len(evs) > 1 else None
    snapshot = msgspec.structs.replace(state) if state else None
    evolve(state, evs[-1])
    assert state == snapshot


def test_happy_path_and_retry() -> None:
    base: dict[str, Any] = {"job_id": "j", "queue": "q", "kind": "k"}
    s = fold([
        JobQueued(**base, attempt=1, at=1, payload=RAW, run_at=1),
        JobStarted(**base, attempt=1, at=2, worker="w"),
        JobFailed(**base, attempt=1, at=3, error_type="E", message="m", will_retry=True),
        JobRetryScheduled(**base, attempt=2, at=3, run_at=100, delay_ms=97),
        JobQueued(**base, attempt=2, at=100, payload=RAW, run_at=100, reason="retry"),
        JobStarted(**base, attempt=2, at=101, worker="w"),
        JobCompleted(**base, attempt=2, at=105, result=msgspec.Raw(b"1")),
        JobStarted(**base, attempt=2, at=106, worker="zombie"),
    ])  # fmt: skip
    assert [x.status for x in s] == [
        "queued", "running", "scheduled", "scheduled", "queued", "running", "completed", "completed"
    ]  # fmt: skip
    assert s[-1].attempt == 2 and s[-1].error == "m" and s[-1].finished_at == 105
