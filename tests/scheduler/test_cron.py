"""Pure tests of the cron parser and of fire times, DST rule included (no Redis)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.schedules import SCHEDULES
from streams.cron import CronError, CronExpr, CronSpec, manual_id, next_fire, tick_id

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def spec(cron: str, tz: str = "UTC") -> CronSpec:
    return CronSpec(name="t", cron=cron, kind="demo.noop", timezone=tz)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- parser ---------------------------------------------------------------------


def test_fields_numbers_ranges_steps_lists() -> None:
    e = CronExpr.parse("0,30 8-17/3 1,15 */4 1-5")
    assert e.minutes == {0, 30}
    assert e.hours == {8, 11, 14, 17}
    assert e.days == {1, 15}
    assert e.months == {1, 5, 9}
    assert e.weekdays == {1, 2, 3, 4, 5}
    assert e.day_or


def test_names_case_insensitive_and_sunday_as_0_or_7() -> None:
    e = CronExpr.parse("0 0 * JAN-mar,Dec sun,Sat")
    assert e.months == {1, 2, 3, 12}
    assert e.weekdays == {0, 6}
    assert CronExpr.parse("0 0 * * 7").weekdays == {0}
    assert CronExpr.parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert CronExpr.parse("0 0 * * mon-fri").weekdays == {1, 2, 3, 4, 5}


def test_start_with_step_runs_to_the_end_of_the_range() -> None:
    assert CronExpr.parse("5/20 * * * *").minutes == {5, 25, 45}


def test_macros() -> None:
    assert CronExpr.parse("@hourly").minutes == {0} and CronExpr.parse("@hourly").every_hour
    assert CronExpr.parse("@weekly").weekdays == {0}
    assert CronExpr.parse("@yearly").months == {1}


@pytest.mark.parametrize(
    "bad",
    [
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "5-1 * * * *",
        "*/0 * * * *",
        "a * * * *",
        "* * * foo *",
        "0 0 30 2 *",
        "0 0 31 4,6 *",
    ],
)
def test_bad_expressions_are_refused(bad: str) -> None:
    with pytest.raises(CronError):
        CronExpr.parse(bad)


def test_spec_validation() -> None:
    with pytest.raises(CronError):
        CronSpec(name="a:b", cron="* * * * *", kind="k")
    with pytest.raises(CronError):
        CronSpec(name="a", cron="* * * * *", kind="k", timezone="Mars/Olympus")
    with pytest.raises(CronError):
        CronSpec(name="a", cron="* * * * *", kind="k", queue="{bad}")
    with pytest.raises(CronError):
        CronSpec(name="a", cron="61 * * * *", kind="k")


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    s = spec("0 12 13 * 5")  # the 13th OR any Friday
    fires = s.next_fires(utc(2024, 9, 1), 4)
    assert [f.date() for f in fires] == [
        date(2024, 9, 6),
        date(2024, 9, 13),
        date(2024, 9, 20),
        date(2024, 9, 27),
    ]
    # one field unrestricted: AND (the star matches every day)
    s = spec("0 12 */2 * 5")  # a leading * makes day-of-month unrestricted (Vixie)
    assert all(f.weekday() == 4 and f.day % 2 == 1 for f in s.next_fires(utc(2024, 9, 1), 5))


def test_next_fire_is_strictly_after() -> None:
    s = spec("0 9 * * *")
    assert s.next_fire(utc(2024, 5, 1, 9)) == utc(2024, 5, 2, 9)
    assert s.next_fire(utc(2024, 5, 1, 8, 59, 59)) == utc(2024, 5, 1, 9)
    assert s.prev_fire(utc(2024, 5, 1, 9)) == utc(2024, 5, 1, 9)


def test_leap_day_is_found_years_ahead() -> None:
    assert spec("0 0 29 2 *").next_fire(utc(2097, 3, 1)) == utc(2104, 2, 29)


def test_tick_ids_are_the_utc_instant() -> None:
    t = datetime(2024, 3, 31, 3, 0, tzinfo=BERLIN)
    assert tick_id("x", t) == "cron:x:20240331T0100Z"
    assert manual_id("x", utc(2024, 1, 2, 3, 4, 5)).startswith("cron:x:manual-20240102T030405")


def test_platform_schedules_are_declared() -> None:
    by_name = {s.name: s for s in SCHEDULES}
    assert set(by_name) == {
        "recalculate-benchmarks",
        "aggregate-analytics",
        "cleanup-orphaned-files",
        "send-drip-campaign-emails",
        "send-quarterly-reminders",
    }
    monday = utc(2024, 6, 3)  # a Monday
    assert by_name["recalculate-benchmarks"].next_fires(monday, 2) == [
        utc(2024, 6, 3, 1),
        utc(2024, 6, 3, 2),
    ]
    assert by_name["cleanup-orphaned-files"].next_fire(monday) == utc(2024, 6, 3, 2)
    assert by_name["send-drip-campaign-emails"].next_fire(monday) == utc(2024, 6, 3, 9)
    weekly = by_name["send-quarterly-reminders"].next_fires(monday, 2)
    assert weekly == [utc(2024, 6, 3, 9), utc(2024, 6, 10, 9)]


# -- DST ------------------------------------------------------------------------


def local_day_fires(s: CronSpec, zone: ZoneInfo, day: date) -> list[datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    end = (datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)).astimezone(UTC)
    return list(s.fires_between(start - timedelta(seconds=1), end - timedelta(seconds=1)))


@pytest.mark.parametrize(
    ("tz", "spring", "fall"),
    [
        ("Europe/Berlin", date(2024, 3, 31), date(2024, 10, 27)),
        ("America/New_York", date(2024, 3, 10), date(2024, 11, 3)),
    ],
)
def test_hourly_fires_once_per_real_hour_across_transitions(
    tz: str, spring: date, fall: date
) -> None:
    zone = ZoneInfo(tz)
    s = spec("0 * * * *", tz)
    for day, hours in ((spring, 23), (fall, 25)):
        fires = local_day_fires(s, zone, day)
        assert len(fires) == hours
        assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(fires))


def test_spring_forward_nonexistent_time_fires_once_after_the_gap() -> None:
    s = spec("30 2 * * *", "Europe/Berlin")
    fires = local_day_fires(s, BERLIN, date(2024, 3, 31))
    assert fires == [utc(2024, 3, 31, 1)]  # 03:00 CEST, the first instant after the gap
    assert fires[0].astimezone(BERLIN).strftime("%H:%M") == "03:00"
    s = spec("30 2 * * *", "America/New_York")
    assert local_day_fires(s, NEW_YORK, date(2024, 3, 10)) == [utc(2024, 3, 10, 7)]
    # every minute of the gap collapses onto the one instant
    s = spec("*/15 2 * * *", "Europe/Berlin")
    assert local_day_fires(s, BERLIN, date(2024, 3, 31)) == [utc(2024, 3, 31, 1)]


def test_fall_back_ambiguous_fixed_time_fires_once_on_first_occurrence() -> None:
    s = spec("30 2 * * *", "Europe/Berlin")
    assert local_day_fires(s, BERLIN, date(2024, 10, 27)) == [utc(2024, 10, 27, 0, 30)]  # CEST
    s = spec("30 1 * * *", "America/New_York")
    assert local_day_fires(s, NEW_YORK, date(2024, 11, 3)) == [utc(2024, 11, 3, 5, 30)]  # EDT


def test_every_quarter_hour_runs_on_elapsed_time_through_both_transitions() -> None:
    s = spec("*/15 * * * *", "America/New_York")
    for day, count in ((date(2024, 3, 10), 23 * 4), (date(2024, 11, 3), 25 * 4)):
        fires = local_day_fires(s, NEW_YORK, day)
        assert len(fires) == count
        assert {b - a for a, b in itertools.pairwise(fires)} == {timedelta(minutes=15)}


# -- properties -----------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "America/Santiago",
    "Asia/Tokyo",
    "America/Sao_Paulo",
]
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


def field(lo: int, hi: int) -> st.SearchStrategy[str]:
    value = st.integers(lo, hi)
    single = value.map(str)
    ranged = st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}")
    stepped = st.tuples(ranged | st.just("*"), st.integers(1, hi - lo + 1)).map(
        lambda rs: f"{rs[0]}/{rs[1]}"
    )
    part = single | ranged | stepped | st.just("*")
    return st.lists(part, min_size=1, max_size=3).map(",".join)


expressions = st.tuples(field(0, 59), field(0, 23), field(1, 28), field(1, 12), field(0, 7)).map(
    " ".join
)


def reference_next(expr: CronExpr, after: datetime) -> datetime:
    """Brute force in UTC: the first matching minute after ``after``."""
    day = after.date()
    while True:
        dom_ok, dow_ok = day.day in expr.days, day.isoweekday() % 7 in expr.weekdays
        ok = (dom_ok or dow_ok) if expr.day_or else (dom_ok and dow_ok)
        if day.month in expr.months and ok:
            for h in sorted(expr.hours):
                for m in sorted(expr.minutes):
                    t = datetime(day.year, day.month, day.day, h, m, tzinfo=UTC)
                    if t > after:
                        return t
        day += timedelta(days=1)


@settings(max_examples=200, deadline=None)
@given(expressions, instants)
def test_next_fire_matches_brute_force_in_utc(source: str, after: datetime) -> None:
    expr = CronExpr.parse(source)
    assert next_fire(expr, "UTC", after) == reference_next(expr, after)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 59), st.sampled_from(ZONES), instants)
def test_hourly_specs_fire_every_real_hour_in_any_zone(
    minute: int, tz: str, after: datetime
) -> None:
    fires = spec(f"{minute} * * * *", tz).next_fires(after, 30)
    assert fires[0] > after
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(fires))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 59), st.integers(0, 23), st.sampled_from(ZONES), instants)
def test_daily_specs_fire_once_per_local_day(
    minute: int, hour: int, tz: str, after: datetime
) -> None:
    zone = ZoneInfo(tz)
    fires = spec(f"{minute} {hour} * * *", tz).next_fires(after, 10)
    days = [f.astimezone(zone).date() for f in fires]
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(days))
    for f in fires:
        local = f.astimezone(zone)
        late = local.replace(tzinfo=None) - datetime.combine(local.date(), time(hour, minute))
        # on time (an ambiguous time: its first occurrence), or at the end of a gap
        assert timedelta(0) <= late < timedelta(hours=1)
        assert local.fold == 0
