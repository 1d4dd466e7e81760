"""Schedule arithmetic (``engine.schedules``): cron, interval and once fire times,
due ticks with and without catchup, bounds, checks, and cron across DST changes.

No clock: every time is a number handed in. Cron across DST is checked against an
independent oracle that walks real minutes and reads them on the local wall clock.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from stageflow.engine.schedules import (
    DEFAULT_CATCHUP_LIMIT,
    ScheduleSpec,
    Tick,
    due,
    next_after,
    problems,
    upcoming,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
SYDNEY = "Australia/Sydney"
SANTIAGO = "America/Santiago"  # clocks change at midnight
LORD_HOWE = "Australia/Lord_Howe"  # a 30-minute change
DST_ZONES = [BERLIN, NEW_YORK, SYDNEY]

# The 2026 changes: the local date, and the wall hour that is missing or repeated.
SPRING_FORWARD = {BERLIN: date(2026, 3, 29), NEW_YORK: date(2026, 3, 8), SYDNEY: date(2026, 10, 4)}
FALL_BACK = {BERLIN: date(2026, 10, 25), NEW_YORK: date(2026, 11, 1), SYDNEY: date(2026, 4, 5)}
MISSING_HOUR = {BERLIN: 2, NEW_YORK: 2, SYDNEY: 2}
REPEATED_HOUR = {BERLIN: 2, NEW_YORK: 1, SYDNEY: 2}

DAY = 86400.0
HOUR = 3600.0


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()


def wall(zone: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> float:
    """The instant the wall clock in ``zone`` reads the given time (``fold=1``: the
    second time, in a repeated hour)."""
    return datetime(y, mo, d, h, mi, fold=fold, tzinfo=ZoneInfo(zone)).timestamp()


def local(zone: str, t: float) -> datetime:
    return datetime.fromtimestamp(t, ZoneInfo(zone))


def cron(
    expr: str,
    zone: str = "UTC",
    *,
    start: float | None = None,
    end: float | None = None,
    catchup: bool = False,
) -> ScheduleSpec:
    return ScheduleSpec("cron", cron=expr, timezone=zone, start=start, end=end, catchup=catchup)


def fires_between(spec: ScheduleSpec, lo: float, hi: float) -> list[float]:
    """Fire times in ``(lo, hi]``, walked with ``next_after``."""
    out: list[float] = []
    t = next_after(spec, lo)
    while t is not None and t <= hi:
        out.append(t)
        t = next_after(spec, t)
    return out


def day_fires(spec: ScheduleSpec, zone: str, day: date) -> list[float]:
    """Fire times whose local date is ``day``."""
    lo = wall(zone, day.year, day.month, day.day) - 1
    nxt = day + timedelta(days=1)
    hi = wall(zone, nxt.year, nxt.month, nxt.day) - 1
    return fires_between(spec, lo, hi)


def assert_chained(ticks: list[Tick]) -> None:
    for before, after in itertools.pairwise(ticks):
        assert after.at > before.at
        assert after.interval_start == before.at
    for tick in ticks:
        assert tick.interval_end == tick.at
        assert tick.interval_start <= tick.at


# --- interval ---------------------------------------------------------------------


def test_interval_without_start_is_aligned_to_the_epoch() -> None:
    spec = ScheduleSpec("interval", every_seconds=HOUR)
    assert next_after(spec, utc(2026, 5, 1, 9, 0, 1)) == utc(2026, 5, 1, 10)
    assert next_after(spec, utc(2026, 5, 1, 9)) == utc(2026, 5, 1, 10)  # strictly after
    assert next_after(spec, utc(2026, 5, 1, 9) - 0.001) == utc(2026, 5, 1, 9)
    assert upcoming(spec, utc(2026, 5, 1, 23, 30), 3) == [
        utc(2026, 5, 2),
        utc(2026, 5, 2, 1),
        utc(2026, 5, 2, 2),
    ]
    assert next_after(spec, -5.0) == 0.0  # counted from the epoch, k >= 0


def test_interval_with_start_is_anchored_there() -> None:
    spec = ScheduleSpec("interval", every_seconds=60, start=1000.5)
    assert next_after(spec, 0) == 1000.5  # nothing before start
    assert next_after(spec, 1000.4) == 1000.5
    assert next_after(spec, 1000.5) == 1060.5
    assert next_after(spec, 1061) == 1120.5
    assert upcoming(spec, 999, 3) == [1000.5, 1060.5, 1120.5]


def test_interval_times_are_exact_multiples_not_accumulated() -> None:
    spec = ScheduleSpec("interval", every_seconds=0.1, start=0.0)
    times = upcoming(spec, 0.0, 500)
    assert times == [k * 0.1 for k in range(1, 501)]
    for before, after in itertools.pairwise(times):
        assert next_after(spec, before) == after
        assert next_after(spec, math.nextafter(after, -math.inf)) == after


def test_interval_end_bounds_it_inclusively() -> None:
    spec = ScheduleSpec("interval", every_seconds=10, start=0.0, end=30.0)
    assert upcoming(spec, -1, 10) == [0.0, 10.0, 20.0, 30.0]
    assert next_after(spec, 29.9) == 30.0
    assert next_after(spec, 30.0) is None
    assert upcoming(spec, 100, 5) == []


def test_interval_due_chains_data_intervals_from_the_previous_period() -> None:
    spec = ScheduleSpec("interval", every_seconds=HOUR, catchup=True)
    ticks = due(spec, last=utc(2026, 5, 1, 9), now=utc(2026, 5, 1, 12, 30))
    assert [t.at for t in ticks] == [utc(2026, 5, 1, h) for h in (10, 11, 12)]
    assert ticks[0].interval_start == utc(2026, 5, 1, 9)
    assert_chained(ticks)
    anchored = ScheduleSpec("interval", every_seconds=HOUR, start=utc(2026, 5, 1, 10))
    (first,) = due(anchored, last=None, now=utc(2026, 5, 1, 10))
    assert first == Tick(utc(2026, 5, 1, 10), utc(2026, 5, 1, 9), utc(2026, 5, 1, 10))


# --- once -------------------------------------------------------------------------

AT = utc(2026, 6, 1, 12)


def test_once_fires_at_its_time_and_never_again() -> None:
    spec = ScheduleSpec("once", at=AT)
    assert next_after(spec, AT - 3600) == AT
    assert next_after(spec, AT - 0.001) == AT
    assert next_after(spec, AT) is None
    assert next_after(spec, AT + 1) is None
    assert upcoming(spec, 0, 5) == [AT]


@pytest.mark.parametrize("catchup", [False, True])
def test_once_is_due_once(catchup: bool) -> None:
    spec = ScheduleSpec("once", at=AT, catchup=catchup)
    registered = AT - DAY
    assert due(spec, last=registered, now=AT - 1) == []
    assert due(spec, last=registered, now=AT) == [Tick(AT, AT, AT)]
    assert due(spec, last=registered, now=AT + 3 * DAY) == [Tick(AT, AT, AT)]  # late: still once
    assert due(spec, last=AT, now=AT + 1) == []  # fired: never twice
    assert due(spec, last=AT, now=AT + 365 * DAY) == []
    # Never fired and no start: only ``now`` on the dot; the past is not fired.
    assert due(spec, last=None, now=AT) == [Tick(AT, AT, AT)]
    assert due(spec, last=None, now=AT + 1) == []
    with_start = ScheduleSpec("once", at=AT, start=AT - HOUR, catchup=catchup)
    assert due(with_start, last=None, now=AT + 1) == [Tick(AT, AT, AT)]


# --- cron in UTC ------------------------------------------------------------------


def test_cron_daily_in_utc() -> None:
    spec = cron("0 2 * * *")
    assert next_after(spec, utc(2026, 5, 1)) == utc(2026, 5, 1, 2)
    assert next_after(spec, utc(2026, 5, 1, 2)) == utc(2026, 5, 2, 2)  # strictly after
    assert next_after(spec, utc(2026, 5, 1, 2) - 0.5) == utc(2026, 5, 1, 2)
    assert next_after(spec, utc(2026, 5, 1, 2) + 0.5) == utc(2026, 5, 2, 2)
    assert upcoming(spec, utc(2026, 12, 31, 3), 2) == [utc(2027, 1, 1, 2), utc(2027, 1, 2, 2)]
    assert upcoming(spec, 0, 0) == []


def test_cron_shorthands_names_and_weekdays() -> None:
    assert upcoming(cron("@daily"), utc(2026, 5, 1, 1), 2) == [utc(2026, 5, 2), utc(2026, 5, 3)]
    assert next_after(cron("@hourly"), utc(2026, 5, 1, 1, 1)) == utc(2026, 5, 1, 2)
    # 2026-05-01 is a Friday: the next weekday run after it is Monday the 4th.
    weekdays = cron("0 9 * * mon-fri")
    assert upcoming(weekdays, utc(2026, 5, 1, 10), 2) == [utc(2026, 5, 4, 9), utc(2026, 5, 5, 9)]
    assert next_after(cron("0 0 1 jan *"), utc(2026, 5, 1)) == utc(2027, 1, 1)
    assert next_after(cron("0 12 29 2 *"), utc(2026, 3, 1)) == utc(2028, 2, 29, 12)


def test_cron_in_a_zone_without_dst() -> None:
    spec = cron("30 9 * * *", "Asia/Kolkata")  # UTC+05:30
    assert next_after(spec, utc(2026, 5, 1)) == utc(2026, 5, 1, 4)


# --- due --------------------------------------------------------------------------

DAILY = "0 2 * * *"
LAST = utc(2026, 5, 1, 2)  # the last fire, three days before NOW
NOW = utc(2026, 5, 4, 2, 30)


def test_catchup_after_downtime_fires_every_missed_day_oldest_first() -> None:
    ticks = due(cron(DAILY, catchup=True), last=LAST, now=NOW)
    assert ticks == [
        Tick(utc(2026, 5, 2, 2), LAST, utc(2026, 5, 2, 2)),
        Tick(utc(2026, 5, 3, 2), utc(2026, 5, 2, 2), utc(2026, 5, 3, 2)),
        Tick(utc(2026, 5, 4, 2), utc(2026, 5, 3, 2), utc(2026, 5, 4, 2)),
    ]
    assert_chained(ticks)


def test_without_catchup_only_the_latest_missed_fire_is_due() -> None:
    ticks = due(cron(DAILY), last=LAST, now=NOW)
    assert ticks == [Tick(utc(2026, 5, 4, 2), utc(2026, 5, 3, 2), utc(2026, 5, 4, 2))]


@pytest.mark.parametrize("catchup", [False, True])
def test_due_window_is_open_at_last_and_closed_at_now(catchup: bool) -> None:
    spec = cron(DAILY, catchup=catchup)
    fire = utc(2026, 5, 2, 2)
    assert [t.at for t in due(spec, last=LAST, now=fire)] == [fire]
    assert due(spec, last=LAST, now=fire - 0.001) == []
    assert due(spec, last=fire, now=fire) == []
    assert due(spec, last=fire, now=fire + HOUR) == []
    assert due(spec, last=NOW + DAY, now=NOW) == []  # last ahead of now: nothing


def test_limit_caps_catchup_and_the_caller_comes_back_for_the_rest() -> None:
    spec = cron("* * * * *", catchup=True)
    last: float = utc(2026, 5, 1)
    now = utc(2026, 5, 2)
    every: list[Tick] = []
    calls = 0
    while batch := due(spec, last=last, now=now, limit=100):
        assert len(batch) <= 100
        every.extend(batch)
        last = batch[-1].at
        calls += 1
    assert calls == 15
    assert [t.at for t in every] == [utc(2026, 5, 1) + 60 * k for k in range(1, 1441)]
    assert every[0].interval_start == utc(2026, 5, 1)
    assert_chained(every)
    default = due(spec, last=utc(2026, 1, 1), now=now)
    assert len(default) == DEFAULT_CATCHUP_LIMIT == 1000
    assert default[0].at == utc(2026, 1, 1, 0, 1)


def test_bad_limit_and_count_are_refused() -> None:
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        due(cron(DAILY), last=None, now=NOW, limit=0)
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        upcoming(cron(DAILY), 0, -1)


@pytest.mark.parametrize("catchup", [False, True])
def test_a_new_schedule_without_start_does_not_fire_for_the_past(catchup: bool) -> None:
    spec = cron(DAILY, catchup=catchup)
    assert due(spec, last=None, now=NOW) == []
    assert due(spec, last=None, now=utc(2026, 5, 4, 2)) == [
        Tick(utc(2026, 5, 4, 2), utc(2026, 5, 3, 2), utc(2026, 5, 4, 2))
    ]


def test_a_new_schedule_with_start_fires_from_start() -> None:
    start = utc(2026, 5, 2, 2)  # on a fire time: included
    ticks = due(cron(DAILY, start=start, catchup=True), last=None, now=NOW)
    assert [t.at for t in ticks] == [utc(2026, 5, 2, 2), utc(2026, 5, 3, 2), utc(2026, 5, 4, 2)]
    # The first data interval is the schedule's own period, not cut at start.
    assert ticks[0].interval_start == utc(2026, 5, 1, 2)
    assert_chained(ticks)
    assert due(cron(DAILY, start=start), last=None, now=NOW) == [ticks[-1]]
    assert due(cron(DAILY, start=NOW + DAY, catchup=True), last=None, now=NOW) == []


def test_start_and_end_bound_cron() -> None:
    start, end = utc(2026, 5, 2, 1, 59, 59), utc(2026, 5, 4, 2)
    spec = cron(DAILY, start=start, end=end, catchup=True)
    assert next_after(spec, 0) == utc(2026, 5, 2, 2)
    assert upcoming(spec, 0, 10) == [utc(2026, 5, d, 2) for d in (2, 3, 4)]  # end included
    assert next_after(spec, end) is None
    assert [t.at for t in due(spec, last=LAST - DAY, now=NOW + 9 * DAY)] == [
        utc(2026, 5, d, 2) for d in (2, 3, 4)
    ]
    latest = due(cron(DAILY, start=start, end=end), last=LAST, now=NOW + 9 * DAY)
    assert [t.at for t in latest] == [end]
    assert due(cron(DAILY, start=start, end=end), last=end, now=NOW + 9 * DAY) == []
    # A last fire before start: the ticks still begin at start.
    ticks = due(spec, last=utc(2020, 1, 1), now=NOW)
    assert ticks[0].at == utc(2026, 5, 2, 2)


# --- DST --------------------------------------------------------------------------


def test_the_dst_table_is_right() -> None:
    for zone in DST_ZONES:
        for table, hours in ((SPRING_FORWARD, 23), (FALL_BACK, 25)):
            day = table[zone]
            nxt = day + timedelta(days=1)
            length = wall(zone, nxt.year, nxt.month, nxt.day) - wall(
                zone, day.year, day.month, day.day
            )
            assert length == hours * HOUR, (zone, day)


@pytest.mark.parametrize("zone", DST_ZONES)
def test_spring_forward_missing_time_fires_once_at_the_end_of_the_gap(zone: str) -> None:
    day = SPRING_FORWARD[zone]
    hour = MISSING_HOUR[zone]
    spec = cron(f"30 {hour} * * *", zone)
    (fire,) = day_fires(spec, zone, day)
    # The first instant after the gap: the clocks jump from hour:00 to hour+1:00.
    assert local(zone, fire).replace(tzinfo=None) == datetime(
        day.year, day.month, day.day, hour + 1
    )
    assert local(zone, fire - 1).hour == hour - 1
    for other in (day - timedelta(days=1), day + timedelta(days=1)):
        (around,) = day_fires(spec, zone, other)
        assert (local(zone, around).hour, local(zone, around).minute) == (hour, 30)
    # Every wall time in the gap maps there, once: */20 of that hour fires once.
    (only,) = day_fires(cron(f"*/20 {hour} * * *", zone), zone, day)
    assert only == fire


@pytest.mark.parametrize("zone", DST_ZONES)
def test_fall_back_repeated_time_fires_once_at_its_first_occurrence(zone: str) -> None:
    day = FALL_BACK[zone]
    hour = REPEATED_HOUR[zone]
    spec = cron(f"30 {hour} * * *", zone)
    (fire,) = day_fires(spec, zone, day)
    assert fire == wall(zone, day.year, day.month, day.day, hour, 30, fold=0)
    assert wall(zone, day.year, day.month, day.day, hour, 30, fold=1) == fire + HOUR
    for other in (day - timedelta(days=1), day + timedelta(days=1)):
        (around,) = day_fires(spec, zone, other)
        assert (local(zone, around).hour, local(zone, around).minute) == (hour, 30)
    # From inside the second occurrence, the next fire is the next day's.
    second = wall(zone, day.year, day.month, day.day, hour, 15, fold=1)
    nxt = day + timedelta(days=1)
    assert next_after(spec, second) == wall(zone, nxt.year, nxt.month, nxt.day, hour, 30)
    # A fixed hour fires in the first occurrence only, for every minute of it.
    thirds = day_fires(cron(f"*/20 {hour} * * *", zone), zone, day)
    assert thirds == [
        wall(zone, day.year, day.month, day.day, hour, m, fold=0) for m in (0, 20, 40)
    ]


@pytest.mark.parametrize("zone", DST_ZONES)
@pytest.mark.parametrize(
    ("expr", "period", "spring", "fall"),
    [
        ("0 * * * *", HOUR, 23, 25),
        ("30 * * * *", HOUR, 23, 25),
        ("*/15 * * * *", 900.0, 92, 100),
    ],
)
def test_every_hour_schedules_follow_real_time(
    zone: str, expr: str, period: float, spring: int, fall: int
) -> None:
    spec = cron(expr, zone)
    for table, count in ((SPRING_FORWARD, spring), (FALL_BACK, fall)):
        day = table[zone]
        fires = day_fires(spec, zone, day)
        assert len(fires) == count
        # Real-time cadence across the whole day and its neighbours, no duplicates.
        lo = wall(zone, day.year, day.month, day.day) - DAY
        around = fires_between(spec, lo, lo + 3 * DAY)
        assert {b - a for a, b in itertools.pairwise(around)} == {period}


def test_hourly_from_the_first_occurrence_goes_to_the_second() -> None:
    spec = cron("0 * * * *", NEW_YORK)
    first = wall(NEW_YORK, 2026, 11, 1, 1, 15, fold=0)
    assert next_after(spec, first) == wall(NEW_YORK, 2026, 11, 1, 1, 0, fold=1)
    ticks = due(spec, last=first, now=wall(NEW_YORK, 2026, 11, 1, 1, 5, fold=1))
    assert ticks == [
        Tick(
            wall(NEW_YORK, 2026, 11, 1, 1, 0, fold=1),
            wall(NEW_YORK, 2026, 11, 1, 1, 0, fold=0),
            wall(NEW_YORK, 2026, 11, 1, 1, 0, fold=1),
        )
    ]


@pytest.mark.parametrize(
    ("zone", "hour", "minute"),
    [
        (BERLIN, 2, 30),  # missing in spring, repeated in autumn
        (NEW_YORK, 2, 30),  # missing in spring
        (NEW_YORK, 1, 30),  # repeated in autumn
        (SYDNEY, 2, 30),  # both, the other way round in the year
        (SANTIAGO, 0, 0),  # the clocks change at midnight: missing in September
        (BERLIN, 0, 0),  # untouched by DST
    ],
)
def test_a_daily_schedule_fires_once_every_local_day_for_two_years(
    zone: str, hour: int, minute: int
) -> None:
    spec = cron(f"{minute} {hour} * * *", zone)
    fires = upcoming(spec, wall(zone, 2026, 1, 1) - 1, 730)
    days = [local(zone, f).date() for f in fires]
    assert days == [date(2026, 1, 1) + timedelta(days=k) for k in range(730)]
    assert all(a < b for a, b in itertools.pairwise(fires))
    z = ZoneInfo(zone)
    for day, fire in zip(days, fires, strict=True):
        expected = datetime(day.year, day.month, day.day, hour, minute, tzinfo=z)
        if expected.astimezone(UTC).astimezone(z).replace(tzinfo=None) == expected.replace(
            tzinfo=None
        ):
            assert fire == expected.timestamp()  # exists: there (first occurrence if twice)
        else:  # missing: the instant the clocks jump past it
            assert local(zone, fire - 1).utcoffset() != local(zone, fire).utcoffset()
            assert local(zone, fire - 1).replace(tzinfo=None) < expected.replace(tzinfo=None)
            assert local(zone, fire).replace(tzinfo=None) > expected.replace(tzinfo=None)
    # next_after walks the same chain, and each latest-only tick covers one day.
    for before, after in zip(fires[::10], fires[1::10], strict=True):
        assert next_after(spec, before) == after
        assert due(spec, last=before, now=after) == [Tick(after, before, after)]


# An independent oracle for cron across DST: walk real minutes, read each on the wall
# clock and match it with a small parser; then apply the documented policy.

_DOW = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


def _values(text: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        span, _, step = part.partition("/")
        if span == "*":
            a, b = low, high
        elif "-" in span:
            a, b = (int(_DOW.get(x, x)) for x in span.split("-"))
        else:
            a = b = int(_DOW.get(span, span))
        out.update(range(a, b + 1, int(step) if step else 1))
    return out


def _matcher(expr: str) -> Callable[[datetime], bool]:
    m, h, dom, mon, dow = expr.split()
    sets = (_values(m, 0, 59), _values(h, 0, 23), _values(dom, 1, 31), _values(mon, 1, 12))
    weekdays = _values(dow, 0, 6)
    either = dom != "*" and dow != "*"

    def match(w: datetime) -> bool:
        if w.minute not in sets[0] or w.hour not in sets[1] or w.month not in sets[3]:
            return False
        on_day, on_weekday = w.day in sets[2], w.isoweekday() % 7 in weekdays
        return (on_day or on_weekday) if either else (on_day and on_weekday)

    return match


def oracle(expr: str, zone: str, every_hour: bool, lo: int, hi: int) -> list[float]:
    """Fire times in ``(lo, hi]`` (whole minutes) by the module's DST policy."""
    z = ZoneInfo(zone)
    match = _matcher(expr)
    out: list[float] = []
    for u in range(lo + 60, hi + 1, 60):
        now = datetime.fromtimestamp(u, z)
        before = datetime.fromtimestamp(u - 60, z)
        hit = match(now.replace(tzinfo=None)) and (every_hour or now.fold == 0)
        if (
            not every_hour
            and now.timestamp() - before.timestamp()
            < (now.replace(tzinfo=None) - before.replace(tzinfo=None)).total_seconds()
        ):
            # The clocks just jumped: the missing wall times fire now.
            w = before.replace(tzinfo=None) + timedelta(minutes=1)
            while w < now.replace(tzinfo=None):
                hit = hit or match(w)
                w += timedelta(minutes=1)
        if hit:
            out.append(float(u))
    return out


def transitions(zone: str, year: int) -> list[int]:
    """The instants ``zone`` changes its offset in ``year`` (a day apart at least)."""
    z = ZoneInfo(zone)

    def offset(t: int) -> timedelta | None:
        return datetime.fromtimestamp(t, z).utcoffset()

    out = []
    t = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    while t < end:
        if offset(t) != offset(t + 86400):
            lo, hi = t, t + 86400
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            out.append(hi)
        t += 86400
    return out


ORACLE_EXPRS = [
    ("0 * * * *", True),
    ("30 * * * *", True),
    ("*/15 * * * *", True),
    ("*/7 * * * *", True),
    ("45 * * * sun", True),
    ("30 2 * * *", False),
    ("30 1 * * *", False),
    ("0 2 * * *", False),
    ("0 0 * * *", False),
    ("30 23 * * *", False),
    ("*/20 1-3 * * *", False),
    ("15 */2 * * *", False),
    ("0 3 * * *", False),
    ("10 0,1,2 * * sat,sun", False),
]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, SYDNEY, SANTIAGO, LORD_HOWE])
def test_cron_matches_the_oracle_around_every_2026_change(zone: str) -> None:
    changes = transitions(zone, 2026)
    assert len(changes) == 2
    for change in changes:
        lo, hi = change - 5 * 3600, change + 5 * 3600
        for expr, every_hour in ORACLE_EXPRS:
            spec = cron(expr, zone, catchup=True)
            expected = oracle(expr, zone, every_hour, lo, hi)
            ticks = due(spec, last=lo, now=hi, limit=10_000)
            assert [t.at for t in ticks] == expected, (zone, expr, change)
            assert_chained(ticks)
            if ticks:  # the first interval starts at the fire before the window
                assert ticks[0].interval_start <= lo
                assert next_after(spec, ticks[0].interval_start) == ticks[0].at
            assert fires_between(spec, lo, hi) == expected


# --- random cron expressions: properties ------------------------------------------

PROPERTY_EXPRS = [
    "* * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "30 * * * *",
    "15 */2 * * *",
    "0 0 * * *",
    "30 2 * * *",
    "30 1 * * 0",
    "45 1-3 * * *",
    "0 9 * * mon-fri",
    "0 0 1 * *",
    "0 12 29 2 *",
    "*/20 2 * * *",
    "5 4 * * sun",
    "@daily",
    "@hourly",
]
PROPERTY_ZONES = ["UTC", BERLIN, NEW_YORK, SYDNEY, SANTIAGO, LORD_HOWE, "Asia/Kolkata"]


def test_random_cron_schedules_strictly_increase_and_agree() -> None:
    rng = random.Random(20260329)
    changes = {z: transitions(z, 2026) + transitions(z, 2027) for z in PROPERTY_ZONES}
    for _ in range(300):
        expr, zone = rng.choice(PROPERTY_EXPRS), rng.choice(PROPERTY_ZONES)
        if changes[zone] and rng.random() < 0.5:  # near a clock change
            t = rng.choice(changes[zone]) + rng.uniform(-3 * 3600, 3 * 3600)
        else:
            t = rng.uniform(utc(2026, 1, 1), utc(2028, 1, 1))
        if rng.random() < 0.3:
            t = float(round(t / 60) * 60)  # on a whole minute, maybe a fire time
        spec = cron(expr, zone)
        nxt = next_after(spec, t)
        assert nxt is not None and nxt > t
        seq = upcoming(spec, t, 5)
        assert seq[0] == nxt
        assert next_after(spec, math.nextafter(nxt, -math.inf)) == nxt
        assert all(a < b for a, b in itertools.pairwise(seq)), (expr, zone, t)
        for a, b in itertools.pairwise(seq):
            assert next_after(spec, a) == b
        latest = due(spec, last=t, now=seq[-1] + 30)
        assert latest == [Tick(seq[-1], seq[-2], seq[-1])], (expr, zone, t)
        caught = due(cron(expr, zone, catchup=True), last=t, now=seq[-1])
        assert [x.at for x in caught] == seq
        assert_chained(caught)
        if zone == "UTC":  # croniter is right in UTC: an outside check
            reference = croniter(expr, t).get_next(float)
            assert nxt == reference, (expr, t)


# --- problems ---------------------------------------------------------------------

NOW_T = utc(2026, 5, 1)
EXAMPLE = '"0 2 * * *" (every day at 02:00)'


@pytest.mark.parametrize(
    "spec",
    [
        cron("0 2 * * *"),
        cron("@daily", BERLIN, start=0.0, end=1.0, catchup=True),
        cron("*/5 1-3 1,15 jan-jun mon-fri", NEW_YORK),
        ScheduleSpec("interval", every_seconds=0.5),
        ScheduleSpec("interval", every_seconds=3600, start=NOW_T - DAY),
        ScheduleSpec("once", at=NOW_T),  # now: not the past
        ScheduleSpec("once", at=NOW_T + DAY, start=NOW_T, end=NOW_T + DAY),
    ],
)
def test_valid_specs_have_no_problems(spec: ScheduleSpec) -> None:
    assert problems(spec, NOW_T) == []


_FIELDS = ["minute", "hour", "day-of-month", "month", "day-of-week"]


def _field_message(field: str, value: str, allowed: str) -> str:
    bad = value.split()[_FIELDS.index(field)]
    return (
        f'cron expression "{value}": its {field} field "{bad}" is not valid: it takes '
        f'{allowed}, "*", lists (1,15), ranges (1-5) and steps (*/10); e.g. {EXAMPLE}'
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            ScheduleSpec("cron"),
            [("cron", f'kind "cron" needs cron, e.g. cron={EXAMPLE}')],
        ),
        (
            ScheduleSpec("interval"),
            [
                (
                    "every_seconds",
                    'kind "interval" needs every_seconds, e.g. every_seconds=3600 (hourly)',
                )
            ],
        ),
        (
            ScheduleSpec("once"),
            [
                (
                    "at",
                    'kind "once" needs at, e.g. at=1798761600.0 (2027-01-01 00:00:00 UTC, '
                    "in epoch seconds)",
                )
            ],
        ),
        (
            ScheduleSpec("cron", cron="0 2 * * *", every_seconds=60, at=NOW_T + 1),
            [
                (
                    "every_seconds",
                    'every_seconds is for kind "interval" and this schedule is kind "cron": '
                    'remove every_seconds, or set kind="interval"',
                ),
                (
                    "at",
                    'at is for kind "once" and this schedule is kind "cron": remove at, '
                    'or set kind="once"',
                ),
            ],
        ),
        (
            ScheduleSpec("once", at=NOW_T + 1, cron="0 2 * * *"),
            [
                (
                    "cron",
                    'cron is for kind "cron" and this schedule is kind "once": remove cron, '
                    'or set kind="cron"',
                )
            ],
        ),
        (
            ScheduleSpec("weekly"),  # type: ignore[arg-type]
            [
                (
                    "kind",
                    'unknown schedule kind "weekly": use "cron", "interval", "once", "event" '
                    'or "after"',
                )
            ],
        ),
        (
            cron("0 2 * *"),
            [
                (
                    "cron",
                    'cron expression "0 2 * *" has 4 fields; it needs 5, "minute hour '
                    f'day-of-month month day-of-week", e.g. {EXAMPLE}',
                )
            ],
        ),
        (
            cron("0 0 2 * * *"),
            [
                (
                    "cron",
                    'cron expression "0 0 2 * * *" has 6 fields; it needs 5, "minute hour '
                    f'day-of-month month day-of-week", e.g. {EXAMPLE}',
                )
            ],
        ),
        (cron("61 2 * * *"), [("cron", _field_message("minute", "61 2 * * *", "0-59"))]),
        (cron("0 24 * * *"), [("cron", _field_message("hour", "0 24 * * *", "0-23"))]),
        (
            cron("0 2 32 * *"),
            [("cron", _field_message("day-of-month", "0 2 32 * *", "1-31"))],
        ),
        (
            cron("0 2 * 13 *"),
            [("cron", _field_message("month", "0 2 * 13 *", "1-12 or JAN-DEC"))],
        ),
        (
            cron("0 2 * * funday"),
            [("cron", _field_message("day-of-week", "0 2 * * funday", "0-6 or SUN-SAT"))],
        ),
        (cron("@reboot"), [("cron", f'cron expression "@reboot" is not valid; e.g. {EXAMPLE}')]),
        (
            cron("0 0 30 2 *"),
            [
                (
                    "cron",
                    'cron expression "0 0 30 2 *" never matches a date (like the 30th of '
                    f"February); e.g. {EXAMPLE}",
                )
            ],
        ),
        (
            ScheduleSpec("cron", cron=5),  # type: ignore[arg-type]
            [("cron", f"cron must be a string such as {EXAMPLE}, got 5")],
        ),
        (
            cron("0 2 * * *", "Mars/Olympus"),
            [
                (
                    "timezone",
                    "unknown time zone 'Mars/Olympus': use an IANA time zone name such as "
                    '"Europe/Paris", "America/New_York" or "UTC"',
                )
            ],
        ),
        (
            cron("0 2 * * *", ""),
            [
                (
                    "timezone",
                    "unknown time zone '': use an IANA time zone name such as "
                    '"Europe/Paris", "America/New_York" or "UTC"',
                )
            ],
        ),
        *[
            (
                ScheduleSpec("interval", every_seconds=value),
                [
                    (
                        "every_seconds",
                        f"every_seconds must be a finite number of seconds > 0, got {value!r}; "
                        "e.g. 3600",
                    )
                ],
            )
            for value in (0, -5.0, math.nan, math.inf)
        ],
        (
            ScheduleSpec("once", at=math.nan),
            [
                (
                    "at",
                    "at must be a finite time in epoch seconds, got nan; e.g. at=1798761600.0 "
                    "(2027-01-01 00:00:00 UTC, in epoch seconds)",
                )
            ],
        ),
        (
            ScheduleSpec("once", at=NOW_T - 1),
            [
                (
                    "at",
                    "at (2026-04-30 23:59:59 UTC) is in the past (now is 2026-05-01 00:00:00 "
                    "UTC): a once schedule fires at a time to come; set a later at",
                )
            ],
        ),
        (
            cron("0 2 * * *", start=math.nan, end=math.inf),
            [
                ("start", "start must be a finite time in epoch seconds, got nan"),
                ("end", "end must be a finite time in epoch seconds, got inf"),
            ],
        ),
        *[
            (
                cron("0 2 * * *", start=NOW_T, end=end),
                [
                    (
                        "end",
                        f"end ({text}) must be after start (2026-05-01 00:00:00 UTC): the "
                        "schedule would never fire; move end later, or drop it",
                    )
                ],
            )
            for end, text in (
                (NOW_T, "2026-05-01 00:00:00 UTC"),
                (NOW_T - 1, "2026-04-30 23:59:59 UTC"),
            )
        ],
        (
            ScheduleSpec("once", at=NOW_T + 10, start=NOW_T + 20),
            [
                (
                    "at",
                    "at (2026-05-01 00:00:10 UTC) is before start (2026-05-01 00:00:20 UTC): "
                    "the schedule would never fire; drop start, or set at within start and end",
                )
            ],
        ),
        (
            ScheduleSpec("once", at=NOW_T + 30, end=NOW_T + 20),
            [
                (
                    "at",
                    "at (2026-05-01 00:00:30 UTC) is after end (2026-05-01 00:00:20 UTC): "
                    "the schedule would never fire; drop end, or set at within start and end",
                )
            ],
        ),
    ],
)
def test_each_problem_names_its_field_and_the_fix(
    spec: ScheduleSpec, expected: list[tuple[str, str]]
) -> None:
    assert problems(spec, NOW_T) == expected


def test_several_problems_are_all_reported_in_field_order() -> None:
    spec = ScheduleSpec("interval", every_seconds=-1, timezone="Nowhere", start=10.0, end=5.0)
    assert [field for field, _ in problems(spec, NOW_T)] == ["every_seconds", "timezone", "end"]


def test_an_invalid_spec_is_refused_with_its_problems() -> None:
    with pytest.raises(ValueError) as refused:
        next_after(cron("61 2 * * *", "Nowhere"), NOW_T)
    message = str(refused.value)
    assert message.startswith('invalid schedule: cron: cron expression "61 2 * * *": its minute')
    assert "; timezone: unknown time zone 'Nowhere'" in message
    with pytest.raises(ValueError, match="invalid schedule: every_seconds"):
        due(ScheduleSpec("interval"), last=None, now=NOW_T)
    # A once in the past is a problem at ``now`` only: its arithmetic still works.
    assert next_after(ScheduleSpec("once", at=10.0), 0.0) == 10.0


# --- event schedules --------------------------------------------------------------

EVENT_EXAMPLE = 'event="model-pushed" (fires on POST /api/v1/events/model-pushed)'
NO_TIMES = "an event schedule fires on each POST /api/v1/events/pushed, not at times"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ScheduleSpec("event"), [("event", f'kind "event" needs event, e.g. {EVENT_EXAMPLE}')]),
        *[
            (
                ScheduleSpec("event", event=name),  # type: ignore[arg-type]
                [
                    (
                        "event",
                        f"event name {name!r} must be 1-100 letters, digits, '_', '.' or '-', "
                        f"starting with a letter or digit; e.g. {EVENT_EXAMPLE}",
                    )
                ],
            )
            for name in ("a b", "", "-pushed", "x" * 101, "a/b", 5)
        ],
        (
            ScheduleSpec("event", event="pushed", start=NOW_T, end=NOW_T + DAY, catchup=True),
            [
                ("start", f"start does not apply: {NO_TIMES}; remove start"),
                ("end", f"end does not apply: {NO_TIMES}; remove end"),
                ("catchup", f"catchup does not apply: {NO_TIMES} (none is missed); remove catchup"),
            ],
        ),
        (
            ScheduleSpec("event", event="pushed", cron="0 2 * * *", every_seconds=60),
            [
                (
                    "cron",
                    'cron is for kind "cron" and this schedule is kind "event": remove cron, '
                    'or set kind="cron"',
                ),
                (
                    "every_seconds",
                    'every_seconds is for kind "interval" and this schedule is kind "event": '
                    'remove every_seconds, or set kind="interval"',
                ),
            ],
        ),
        (
            ScheduleSpec("cron", cron="0 2 * * *", event="pushed"),
            [
                (
                    "event",
                    'event is for kind "event" and this schedule is kind "cron": remove event, '
                    'or set kind="event"',
                )
            ],
        ),
    ],
)
def test_each_event_schedule_problem_names_its_field_and_the_fix(
    spec: ScheduleSpec, expected: list[tuple[str, str]]
) -> None:
    assert problems(spec, NOW_T) == expected


@pytest.mark.parametrize("name", ["pushed", "model.v2_pushed-ok", "7", "x" * 100])
def test_a_valid_event_schedule_has_no_problems_even_long_after_it_was_made(name: str) -> None:
    spec = ScheduleSpec("event", event=name, timezone=BERLIN)
    assert problems(spec, NOW_T) == []
    assert problems(spec, utc(9999, 1, 1)) == []  # no once-in-the-past check


@pytest.mark.parametrize("last", [None, 0.0, NOW_T - 10 * DAY])
def test_an_event_schedule_has_no_fire_times_and_is_never_due(last: float | None) -> None:
    spec = ScheduleSpec("event", event="pushed")
    assert next_after(spec, 0.0) is None
    assert next_after(spec, NOW_T) is None
    assert upcoming(spec, NOW_T, 5) == []
    assert upcoming(spec, 0.0, 1000) == []
    for now in (0.0, NOW_T, utc(2099, 1, 1)):
        assert due(spec, last, now) == []


def test_spec_of_takes_an_event_as_a_fourth_timing() -> None:
    from stageflow.engine.schedules import spec_of
    from stageflow.errors import UsageError

    assert spec_of(event="pushed") == ScheduleSpec("event", event="pushed")
    with pytest.raises(UsageError) as none:
        spec_of(prefix="schedules[0].")
    assert str(none.value) == (
        "give exactly one of schedules[0].cron or schedules[0].every or schedules[0].at or "
        "schedules[0].event or schedules[0].after or schedules[0].object"
    )
    assert none.value.field == "schedules[0].timing"
    with pytest.raises(UsageError) as two:
        spec_of(every="1h", event="pushed")
    assert str(two.value) == (
        "give exactly one of --cron or --every or --at or --on-event or --after or "
        "--on-object (got --every, --on-event)"
    )


# -- after schedules ---------------------------------------------------------------------

AFTER_EXAMPLE = 'after="extract" (fires when a run of pipeline extract succeeds)'
AFTER_NO_TIMES = "an after schedule fires when a run of extract ends, not at times"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ScheduleSpec("after"), [("after", f'kind "after" needs after, e.g. {AFTER_EXAMPLE}')]),
        *[
            (
                ScheduleSpec("after", after=name),  # type: ignore[arg-type]
                [
                    (
                        "after",
                        f"after {name!r} must be a pipeline's name (1-128 letters, digits, "
                        f"spaces, '_', '.' or '-'); e.g. {AFTER_EXAMPLE}",
                    )
                ],
            )
            for name in ("", "-x", "a..b", "x" * 129, "a/b", 5)
        ],
        (
            ScheduleSpec("after", after="extract", after_states=("success", "bogus")),
            [
                (
                    "after_states",
                    "after_states: 'bogus' is not an end state of a run: use success, "
                    "failed, cancelled",
                )
            ],
        ),
        (
            ScheduleSpec("after", after="extract", after_states=()),
            [
                (
                    "after_states",
                    "after_states must list one or more end states of the upstream run "
                    "(success, failed, cancelled), got ()",
                )
            ],
        ),
        (
            ScheduleSpec("after", after="extract", start=NOW_T, end=NOW_T + DAY, catchup=True),
            [
                ("start", f"start does not apply: {AFTER_NO_TIMES}; remove start"),
                ("end", f"end does not apply: {AFTER_NO_TIMES}; remove end"),
                (
                    "catchup",
                    f"catchup does not apply: {AFTER_NO_TIMES} (none is missed); remove catchup",
                ),
            ],
        ),
        (
            ScheduleSpec("cron", cron="0 2 * * *", after="extract"),
            [
                (
                    "after",
                    'after is for kind "after" and this schedule is kind "cron": remove after, '
                    'or set kind="after"',
                )
            ],
        ),
        (
            ScheduleSpec("event", event="pushed", after_states=("failed",)),
            [
                (
                    "after_states",
                    'after_states is for kind "after" and this schedule is kind "event": '
                    "remove after_states",
                )
            ],
        ),
    ],
)
def test_each_after_schedule_problem_names_its_field_and_the_fix(
    spec: ScheduleSpec, expected: list[tuple[str, str]]
) -> None:
    assert problems(spec, NOW_T) == expected


@pytest.mark.parametrize(
    "states", [("success",), ("failed",), ("cancelled",), ("success", "failed", "cancelled")]
)
def test_a_valid_after_schedule_has_no_problems(states: tuple[str, ...]) -> None:
    spec = ScheduleSpec("after", after="My Workflow", after_states=states)
    assert problems(spec, NOW_T) == []
    assert problems(spec, utc(9999, 1, 1)) == []


@pytest.mark.parametrize("last", [None, 0.0, NOW_T - 10 * DAY])
def test_an_after_schedule_has_no_fire_times_and_is_never_due(last: float | None) -> None:
    spec = ScheduleSpec("after", after="extract", after_states=("success", "failed"))
    assert next_after(spec, 0.0) is None
    assert next_after(spec, NOW_T) is None
    assert upcoming(spec, NOW_T, 5) == []
    for now in (0.0, NOW_T, utc(2099, 1, 1)):
        assert due(spec, last, now) == []


def test_spec_of_takes_after_and_its_states() -> None:
    from stageflow.engine.schedules import spec_of, written_problems
    from stageflow.errors import UsageError

    assert spec_of(after="extract") == ScheduleSpec("after", after="extract")
    both = spec_of(after="extract", after_states=["failed", "success", "failed"])
    assert both.after_states == ("failed", "success")  # duplicates dropped
    with pytest.raises(UsageError) as lone:
        spec_of(cron="0 2 * * *", after_states=["failed"])
    assert lone.value.field == "--after-state"
    with pytest.raises(UsageError) as two:
        spec_of(every="1h", after="extract")
    assert "(got --every, --after)" in str(two.value)
    bad = spec_of(after="extract", after_states=["bogus"])
    assert written_problems(bad, NOW_T) == [
        (
            "after-state",
            "--after-state: 'bogus' is not an end state of a run: use success, failed, cancelled",
        )
    ]
