"""Calendar windows across DST, ISO weeks and month ends; rolling buckets; `total`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from policies.windows import SETTLE_GRACE_S, Period, calendar_span, calendar_window, rolling_span

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def window_utc(period: Period, tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    # Compared in UTC: Python compares two datetimes of one zone by wall clock, not instant.
    start, end = calendar_window(period, tz, now)
    return start.astimezone(UTC), end.astimezone(UTC)


def test_a_paris_day_starts_and_ends_at_local_midnight() -> None:
    start, end = calendar_window("day", PARIS, utc(2026, 11, 21, 14, 0))
    assert start.isoformat() == "2026-11-21T00:00:00+01:00"
    assert end.isoformat() == "2026-11-22T00:00:00+01:00"


def test_just_before_local_midnight_is_still_the_same_day() -> None:
    # 23:30 UTC is already the 22nd in Paris.
    assert window_utc("day", PARIS, utc(2026, 11, 21, 22, 59, 59)) == (
        utc(2026, 11, 20, 23),
        utc(2026, 11, 21, 23),
    )
    assert window_utc("day", PARIS, utc(2026, 11, 21, 23, 0)) == (
        utc(2026, 11, 21, 23),
        utc(2026, 11, 22, 23),
    )


@pytest.mark.parametrize(
    ("tz", "now", "hours"),
    [
        (PARIS, utc(2026, 3, 29, 12), 23),  # spring forward: 02:00 → 03:00
        (PARIS, utc(2026, 10, 25, 12), 25),  # fall back: 03:00 → 02:00
        (NEW_YORK, utc(2026, 3, 8, 17), 23),
        (NEW_YORK, utc(2026, 11, 1, 17), 25),
        (PARIS, utc(2026, 6, 1, 12), 24),
    ],
)
def test_a_day_lasts_23_or_25_hours_on_a_dst_change(tz: ZoneInfo, now: datetime, hours: int) -> None:
    start, end = window_utc("day", tz, now)
    assert end - start == timedelta(hours=hours)
    local_start = start.astimezone(tz)
    assert (local_start.hour, local_start.minute) == (0, 0)


def test_paris_spring_forward_skips_the_0200_hour() -> None:
    # 01:30+01:00 is 00:30Z; the next wall hour, 02:00, does not exist: 03:00+02:00 follows.
    before = calendar_window("hour", PARIS, utc(2026, 3, 29, 0, 30))
    assert [t.isoformat() for t in before] == ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"]
    after = window_utc("hour", PARIS, utc(2026, 3, 29, 1, 30))
    assert after == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))


def test_paris_fall_back_makes_the_repeated_0200_hour_one_two_hour_window() -> None:
    first_pass = utc(2026, 10, 25, 0, 30)  # 02:30+02:00
    second_pass = utc(2026, 10, 25, 1, 30)  # 02:30+01:00
    assert first_pass.astimezone(PARIS).hour == second_pass.astimezone(PARIS).hour == 2
    assert window_utc("hour", PARIS, first_pass) == window_utc("hour", PARIS, second_pass)
    assert window_utc("hour", PARIS, first_pass) == (utc(2026, 10, 25, 0), utc(2026, 10, 25, 2))
    assert (
        calendar_span("hour", PARIS, first_pass).buckets == calendar_span("hour", PARIS, second_pass).buckets
    )


def test_new_york_spring_forward_hour_and_fall_back_hour() -> None:
    # 01:30 EST (06:30Z): the 01:00 hour ends at 03:00 EDT, one real hour later.
    assert window_utc("hour", NEW_YORK, utc(2026, 3, 8, 6, 30)) == (utc(2026, 3, 8, 6), utc(2026, 3, 8, 7))
    # 01:00-02:00 happens twice on 1 November: both passes are one window.
    assert window_utc("hour", NEW_YORK, utc(2026, 11, 1, 5, 10)) == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 7))
    assert window_utc("hour", NEW_YORK, utc(2026, 11, 1, 6, 50)) == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 7))


def test_a_day_whose_midnight_is_skipped_starts_at_the_transition() -> None:
    # São Paulo began DST at midnight on 2018-11-04: the clock went 23:59:59 → 01:00.
    start, end = calendar_window("day", ZoneInfo("America/Sao_Paulo"), utc(2018, 11, 4, 12))
    assert start.isoformat() == "2018-11-04T01:00:00-02:00"
    assert start.astimezone(UTC) == utc(2018, 11, 4, 3)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)


@pytest.mark.parametrize(
    ("now", "monday"),
    [
        (utc(2026, 11, 21, 12), "2026-11-16"),  # a Saturday
        (utc(2026, 11, 16, 0), "2026-11-16"),  # Monday 00:00 starts its own week
        (utc(2026, 11, 15, 23, 59, 59), "2026-11-09"),  # Sunday night is the week before
        (utc(2027, 1, 1, 12), "2026-12-28"),  # ISO week 53 straddles the new year
    ],
)
def test_weeks_are_iso_weeks_starting_monday(now: datetime, monday: str) -> None:
    start, end = calendar_window("week", ZoneInfo("UTC"), now)
    assert start.date().isoformat() == monday
    assert start.weekday() == 0
    assert end - start == timedelta(days=7)


def test_a_week_in_paris_starts_monday_midnight_paris_time() -> None:
    # Sunday 23:30Z is already Monday 00:30 in Paris: a new week.
    start, _ = calendar_window("week", PARIS, utc(2026, 11, 22, 23, 30))
    assert start.isoformat() == "2026-11-23T00:00:00+01:00"


@pytest.mark.parametrize(
    ("now", "first", "following"),
    [
        (utc(2026, 1, 31, 23, 59, 59), "2026-01-01", "2026-02-01"),
        (utc(2028, 2, 29, 12), "2028-02-01", "2028-03-01"),  # leap year
        (utc(2026, 2, 28, 12), "2026-02-01", "2026-03-01"),
        (utc(2026, 12, 31, 23, 59, 59), "2026-12-01", "2027-01-01"),  # the year rolls over
        (utc(2027, 1, 1, 0), "2027-01-01", "2027-02-01"),
    ],
)
def test_months_end_on_their_last_day(now: datetime, first: str, following: str) -> None:
    start, end = calendar_window("month", ZoneInfo("UTC"), now)
    assert (start.date().isoformat(), end.date().isoformat()) == (first, following)


def test_a_paris_month_that_holds_a_dst_change_is_an_hour_short() -> None:
    start, end = window_utc("month", PARIS, utc(2026, 3, 15))
    assert end - start == timedelta(days=31) - timedelta(hours=1)


def test_calendar_bucket_is_named_by_its_utc_start_and_lives_past_its_end() -> None:
    now = utc(2026, 11, 21, 14)
    span = calendar_span("day", PARIS, now)
    assert span.buckets == ("day@20261120T230000Z",)
    assert span.charge == "day@20261120T230000Z"
    assert span.resets_at is not None and span.resets_at.isoformat() == "2026-11-22T00:00:00+01:00"
    # 9 hours to Paris midnight, plus the settlement grace.
    assert span.ttl_s == 9 * 3600 + SETTLE_GRACE_S


def test_ttl_counts_real_seconds_when_now_is_given_in_the_budget_zone() -> None:
    # Midnight to midnight across the autumn change is 25 real hours, not 24 wall hours.
    now = datetime(2026, 10, 25, 0, 0, tzinfo=PARIS)
    assert calendar_span("day", PARIS, now).ttl_s == 25 * 3600 + SETTLE_GRACE_S


def test_total_is_one_bucket_that_never_resets_or_expires() -> None:
    for now in (utc(2020, 1, 1), utc(2099, 12, 31, 23, 59)):
        span = calendar_span("total", PARIS, now)
        assert span.buckets == ("total",)
        assert span.resets_at is None
        assert span.ttl_s is None


def test_rolling_day_is_24_hourly_buckets_ending_with_the_current_one() -> None:
    now = utc(2026, 11, 21, 14, 25)
    span = rolling_span(3600, 24, now)
    assert len(span.buckets) == 24
    assert span.buckets[0] == "1h@20261120T150000Z"
    assert span.buckets[-1] == span.charge == "1h@20261121T140000Z"
    # The oldest bucket leaves the window when the next hour begins.
    assert span.resets_at == utc(2026, 11, 21, 15)
    # The charged bucket is summed until 24 more hours have begun.
    assert span.ttl_s == (24 * 3600 - 25 * 60) + SETTLE_GRACE_S


def test_rolling_buckets_shift_by_one_at_each_boundary() -> None:
    earlier = rolling_span(10, 6, utc(2026, 11, 21, 14, 0, 9))
    later = rolling_span(10, 6, utc(2026, 11, 21, 14, 0, 10))
    assert earlier.buckets[1:] == later.buckets[:-1]
    assert later.buckets[-1] == "10s@20261121T140010Z"
    assert rolling_span(10, 6, utc(2026, 11, 21, 14, 0, 10, 5)).buckets == later.buckets


@pytest.mark.parametrize(
    ("size_s", "tag"), [(10, "10s"), (300, "5m"), (3600, "1h"), (86_400, "1d"), (45, "45s")]
)
def test_bucket_granularity_tags(size_s: int, tag: str) -> None:
    assert rolling_span(size_s, 2, utc(2026, 1, 1)).charge.startswith(f"{tag}@")


def test_rolling_buckets_ignore_the_zone_now_is_given_in() -> None:
    instant = utc(2026, 11, 21, 14, 25)
    assert rolling_span(300, 12, instant) == rolling_span(300, 12, instant.astimezone(NEW_YORK))
