"""Cron expressions and cron specs: parsing, and DST-correct fire times.

Owns: :class:`CronExpr` (a parsed 5-field expression), :class:`CronSpec` (one
periodic job declared as data: name, expression, IANA timezone, job kind and
payload, queue, priority, missed-run and overlap policies) and the computation of
fire instants. Pure code over :mod:`zoneinfo`; no I/O.

Syntax (Vixie cron): ``minute hour day-of-month month day-of-week``; each field a
list (``,``) of ``*``, ``N``, ``A-B``, each optionally ``/STEP`` (``N/STEP`` means
``N-max/STEP``); month names ``jan``..``dec`` and day names ``sun``..``sat``
(case-insensitive); Sunday is ``0`` or ``7``; macros ``@hourly``, ``@daily``
(``@midnight``), ``@weekly``, ``@monthly``, ``@yearly`` (``@annually``). When
both day-of-month and day-of-week are restricted (neither field starts with
``*``) a day matches if EITHER matches; otherwise both must (the unrestricted one
matches every day).

DST rule (the wall clock of the spec's timezone decides; instants are UTC):

- A spec whose hour field covers all 24 hours (``*``, ``*/1``, ``0-23``) runs on
  *elapsed* time: it fires once per real hour. A wall time in a spring-forward gap
  does not exist and fires nothing (the real hour is not missed: the wall clock
  jumped over it); an ambiguous wall time in a fall-back fires on BOTH occurrences
  (both are real hours). ``0 * * * *`` fires exactly once per real hour across
  either transition.
- Any other spec (fixed hours) runs on *wall* time: a wall time in a gap fires
  once, at the first valid instant after the gap (the transition instant; a 02:30
  daily job fires at 03:00 on a spring-forward day); an ambiguous wall time fires
  once, on its first occurrence (``fold=0``).
- Several wall times mapping to one instant fire once. Each fire is identified by
  its UTC instant (:func:`tick_id`), the identity the scheduler deduplicates on.

Invariants: a :class:`CronSpec` that constructs is valid (expression parses and
can match some date, timezone exists, name and queue are key-safe); fire times
are strictly increasing in UTC and every computation is bounded.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from streams.events import Priority
from streams.keys import PRIORITIES, validate_queue

MissedPolicy = Literal["skip", "latest", "all"]
OverlapPolicy = Literal["allow", "skip"]

_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS: Final = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
_DAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_DAYS: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # leap-year maxima
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Days scanned for a matching date before giving up: 29 February can be 8 years away.
_MAX_SCAN_DAYS: Final = 366 * 9


class CronError(ValueError):
    """A cron expression or spec is not valid."""


def _atom(text: str, names: tuple[str, ...] | None, name_base: int) -> int:
    if names is not None and text.lower() in names:
        return names.index(text.lower()) + name_base
    if not text.isdigit():
        raise CronError(f"{text!r} is not a number{' or name' if names else ''}")
    return int(text)


def _parse_field(
    text: str, lo: int, hi: int, names: tuple[str, ...] | None = None, name_base: int = 0
) -> frozenset[int]:
    """The values of one field; ``hi`` is the largest accepted (7 for day-of-week)."""
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"bad step in {part!r}")
            step = int(step_text)
        if rng == "*":
            start, end = lo, hi
        elif "-" in rng:
            a, _, b = rng.partition("-")
            start, end = _atom(a, names, name_base), _atom(b, names, name_base)
        else:
            start = _atom(rng, names, name_base)
            end = hi if step_text else start
        if not lo <= start <= end <= hi:
            raise CronError(f"{part!r} is out of range {lo}-{hi} (or reversed)")
        out.update(range(start, end + 1, step))
    return frozenset(out)


class CronExpr(msgspec.Struct, frozen=True):
    """A parsed 5-field cron expression (build it with :meth:`parse`)."""

    source: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    day_or: bool  # both day fields restricted: a day matches if either does

    @classmethod
    def parse(cls, source: str) -> CronExpr:
        text = _MACROS.get(source.strip().lower(), source.strip())
        fields = text.split()
        if len(fields) != 5:
            raise CronError(f"cron expression {source!r} must have 5 fields")
        m, h, dom, mon, dow = fields
        weekdays = frozenset(d % 7 for d in _parse_field(dow, 0, 7, _DAYS))
        expr = cls(
            source=source,
            minutes=_parse_field(m, 0, 59),
            hours=_parse_field(h, 0, 23),
            days=_parse_field(dom, 1, 31),
            months=_parse_field(mon, 1, 12, _MONTHS, 1),
            weekdays=weekdays,
            day_or=not dom.startswith("*") and not dow.startswith("*"),
        )
        if not expr.day_or and not any(min(expr.days) <= _MONTH_DAYS[mo - 1] for mo in expr.months):
            raise CronError(f"cron expression {source!r} never matches a date")
        return expr

    @property
    def every_hour(self) -> bool:
        """True when the hour field covers all 24 hours (elapsed-time DST rule)."""
        return len(self.hours) == 24

    def matches_date(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom_ok = d.day in self.days
        dow_ok = (d.weekday() + 1) % 7 in self.weekdays
        return (dom_ok or dow_ok) if self.day_or else (dom_ok and dow_ok)


def _transition_after(zone: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The first instant in (lo, hi] whose UTC offset differs from lo's (a gap's end)."""
    before = lo.astimezone(zone).utcoffset()
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo_s = mid
        else:
            hi_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


def _wall_instants(zone: ZoneInfo, wall: datetime, every_hour: bool) -> list[datetime]:
    """The UTC instants at which wall time ``wall`` (naive) fires, per the DST rule."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first < second:  # ambiguous (fall back): fold=0 is the first occurrence
        return [first, second] if every_hour else [first]
    # nonexistent (spring forward): fold=0 maps after the gap, fold=1 before it
    return [] if every_hour else [_transition_after(zone, second, first)]


@lru_cache(maxsize=8192)
def _day_fires(expr: CronExpr, zone_key: str, day: date) -> tuple[datetime, ...]:
    """Sorted, distinct UTC fire instants of the wall-clock date ``day``."""
    if not expr.matches_date(day):
        return ()
    zone = _zone(zone_key)
    out: set[datetime] = set()
    for hour in expr.hours:
        for minute in expr.minutes:
            out.update(
                _wall_instants(zone, datetime.combine(day, time(hour, minute)), expr.every_hour)
            )
    return tuple(sorted(out))


@cache
def _zone(key: str) -> ZoneInfo:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown timezone {key!r}") from None


def next_fire(expr: CronExpr, zone_key: str, after: datetime) -> datetime:
    """The first fire instant strictly after ``after`` (an aware datetime), in UTC."""
    # Start a day early: a wall date's fires can begin before its UTC date does.
    day = after.astimezone(_zone(zone_key)).date() - timedelta(days=1)
    for _ in range(_MAX_SCAN_DAYS):
        fires = _day_fires(expr, zone_key, day)
        i = bisect.bisect_right(fires, after)
        if i < len(fires):
            return fires[i]
        day += timedelta(days=1)
    raise CronError(f"cron expression {expr.source!r} has no fire time after {after}")


def prev_fire(expr: CronExpr, zone_key: str, at_or_before: datetime) -> datetime | None:
    """The last fire instant at or before ``at_or_before``, or None within the scan bound."""
    day = at_or_before.astimezone(_zone(zone_key)).date() + timedelta(days=1)
    for _ in range(_MAX_SCAN_DAYS):
        fires = _day_fires(expr, zone_key, day)
        i = bisect.bisect_right(fires, at_or_before)
        if i > 0:
            return fires[i - 1]
        day -= timedelta(days=1)
    return None


def fires_between(
    expr: CronExpr, zone_key: str, after: datetime, until: datetime
) -> Iterator[datetime]:
    """Every fire instant in ``(after, until]``, ascending."""
    t = after
    while True:
        t = next_fire(expr, zone_key, t)
        if t > until:
            return
        yield t


def tick_id(name: str, instant: datetime) -> str:
    """The job id (and dedup key) of spec ``name``'s fire at ``instant``."""
    return f"cron:{name}:{instant.astimezone(UTC):%Y%m%dT%H%MZ}"


def manual_id(name: str, instant: datetime) -> str:
    """The job id of an operator-triggered run of spec ``name`` at ``instant``."""
    return f"cron:{name}:manual-{instant.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}"


class CronSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One periodic job, declared as data next to the handlers.

    ``missed`` decides what a scheduler does with ticks it did not evaluate in time
    (downtime): ``skip`` fires none, ``latest`` fires only the most recent one,
    ``all`` fires each within ``catchup_window_s`` (the newest ``catchup_limit``).
    ``overlap="skip"`` drops a tick while the spec's previous job is still live.
    ``queue``/``priority``/``max_attempts``/``timeout_s`` of None take the kind's
    registered defaults (or the client's).
    """

    name: str
    cron: str
    kind: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    timezone: str = "UTC"
    queue: str | None = None
    priority: Priority | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    missed: MissedPolicy = "latest"
    overlap: OverlapPolicy = "allow"
    catchup_window_s: int = 24 * 3600
    catchup_limit: int = 100

    def __post_init__(self) -> None:
        where = f"cron spec {self.name!r}"
        if not _NAME_RE.fullmatch(self.name):
            raise CronError(f"{where}: name must be 1-64 of [A-Za-z0-9_.-]")
        if not self.kind:
            raise CronError(f"{where}: kind is required")
        if self.queue is not None:
            try:
                validate_queue(self.queue)
            except ValueError as exc:
                raise CronError(f"{where}: {exc}") from None
        if self.priority is not None and self.priority not in PRIORITIES:
            raise CronError(f"{where}: priority must be one of {PRIORITIES}")
        if self.missed not in ("skip", "latest", "all"):
            raise CronError(f"{where}: missed must be skip, latest or all")
        if self.overlap not in ("allow", "skip"):
            raise CronError(f"{where}: overlap must be allow or skip")
        if self.catchup_window_s < 0 or self.catchup_limit < 1:
            raise CronError(f"{where}: catchup_window_s >= 0 and catchup_limit >= 1 required")
        _zone(self.timezone)
        _parse_cached(self.cron)  # parse now: an invalid spec fails at start-up

    @property
    def expr(self) -> CronExpr:
        return _parse_cached(self.cron)

    def next_fire(self, after: datetime) -> datetime:
        return next_fire(self.expr, self.timezone, after)

    def next_fires(self, after: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        for _ in range(count):
            after = self.next_fire(after)
            out.append(after)
        return out

    def prev_fire(self, at_or_before: datetime) -> datetime | None:
        return prev_fire(self.expr, self.timezone, at_or_before)

    def fires_between(self, after: datetime, until: datetime) -> Iterator[datetime]:
        return fires_between(self.expr, self.timezone, after, until)


@lru_cache(maxsize=1024)
def _parse_cached(source: str) -> CronExpr:
    return CronExpr.parse(source)
