"""Time windows → the counter buckets a limit sums, computed the same way on every instance.

Two kinds of window (docs/policies.md, "Windows"):

- calendar: the current hour / day / ISO week (Monday) / month on the wall clock of a
  timezone, one bucket per window, named by the instant the window starts. DST-correct: a
  window is the set of instants whose local wall-clock label falls in it, so a day is 23 or
  25 hours on a change, the repeated autumn hour is one two-hour window and the skipped
  spring hour has none. `total` is one bucket that never resets.
- rolling: the last N fixed-size buckets aligned on the Unix epoch, the newest one
  partial. It is exact to one bucket: it always covers between (N-1)·size and N·size of
  history, never more.

A bucket is named `<granularity>@<UTC start>`, e.g. `day@20261121T230000Z` or
`10s@20261121T230010Z`; the caller prefixes the limit's name. Nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Period = Literal["hour", "day", "week", "month", "total"]
RollingPeriod = Literal["hour", "day", "week", "month"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A bucket outlives its window by this much so that settling a request that began just
# before the window ended still finds (and corrects) the bucket it reserved in.
SETTLE_GRACE_S = 3600
# (bucket size in seconds, bucket count) per rolling period: the granularity trades store
# keys read per request against how exact the window is (to one bucket).
ROLLING_BUCKETS: dict[RollingPeriod, tuple[int, int]] = {
    "hour": (300, 12),
    "day": (3600, 24),
    "week": (86_400, 7),
    "month": (86_400, 30),
}
# Rate limits are per minute: six ten-second buckets.
RATE_BUCKETS: tuple[int, int] = (10, 6)


@dataclass(frozen=True, slots=True)
class Span:
    """The buckets one limit sums at one instant, oldest first; the newest is charged."""

    buckets: tuple[str, ...]
    # When usage can next go down: the calendar window's end, or when the oldest rolling
    # bucket leaves the window. None: never (`total`).
    resets_at: datetime | None
    # Expiry to give the charged bucket when the store creates it; None: never expires.
    ttl_s: int | None
    # Buckets after the charged one that are summed too: a request stamped just before a
    # boundary may reserve after others stamped just past it (or on an instance whose
    # clock runs ahead), and must see their charges.
    ahead: tuple[str, ...] = ()

    @property
    def charge(self) -> str:
        return self.buckets[-1]


def stamp(instant: datetime) -> str:
    """An instant as a compact UTC label, unambiguous whatever the timezone."""
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _wall(instant: datetime) -> datetime:
    return instant.replace(tzinfo=None, fold=0)


def _first_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first instant whose wall clock in tz reads `wall` or later (until the next label).

    Ambiguous (autumn) → the first occurrence. Skipped (spring gap) → the transition
    itself, the first instant after the gap.
    """
    early = wall.replace(tzinfo=tz, fold=0)
    late = wall.replace(tzinfo=tz, fold=1)
    if early.utcoffset() == late.utcoffset():
        return early
    candidates = sorted((early.astimezone(UTC), late.astimezone(UTC)))
    for candidate in candidates:
        if _wall(candidate.astimezone(tz)) == wall:
            return candidate.astimezone(tz)
    # In a gap: bisect whole seconds (transitions fall on whole seconds) for the first
    # instant at or past `wall`; the bracket is at most a few hours wide.
    low, high = candidates
    while high - low > timedelta(seconds=1):
        middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
        if _wall(middle.astimezone(tz)) >= wall:
            high = middle
        else:
            low = middle
    return high.astimezone(tz)


def _label(period: Period, wall: datetime) -> tuple[datetime, datetime]:
    """The window's wall-clock label (its first wall time) and the next window's."""
    if period == "hour":
        start = wall.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight, midnight + timedelta(days=1)
    if period == "week":
        monday = midnight - timedelta(days=midnight.weekday())
        return monday, monday + timedelta(days=7)
    if period == "month":
        first = midnight.replace(day=1)
        following = (
            first.replace(year=first.year + 1, month=1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        )
        return first, following
    raise ValueError(f"{period} has no calendar window")


def calendar_window(period: Period, tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the calendar period holding `now`, both in tz."""
    label, following = _label(period, _wall(now.astimezone(tz)))
    return _first_instant(label, tz), _first_instant(following, tz)


def _ttl(expires: datetime, now: datetime) -> int:
    # In UTC: between two datetimes of the same zone Python subtracts wall clocks, not instants.
    remaining = expires.astimezone(UTC) - now.astimezone(UTC)
    return max(1, math.ceil(remaining.total_seconds())) + SETTLE_GRACE_S


def calendar_span(period: Period, tz: ZoneInfo, now: datetime) -> Span:
    if period == "total":
        return Span(buckets=("total",), resets_at=None, ttl_s=None)
    start, end = calendar_window(period, tz, now)
    return Span(buckets=(f"{period}@{stamp(start)}",), resets_at=end, ttl_s=_ttl(end, now))


def _granularity(size_s: int) -> str:
    for unit, seconds in (("d", 86_400), ("h", 3600), ("m", 60)):
        if size_s % seconds == 0:
            return f"{size_s // seconds}{unit}"
    return f"{size_s}s"


def rolling_span(size_s: int, count: int, now: datetime) -> Span:
    """The last `count` epoch-aligned buckets of `size_s` seconds, the newest holding now."""
    size = timedelta(seconds=size_s)
    newest = (now.astimezone(UTC) - EPOCH) // size
    tag = _granularity(size_s)
    buckets = tuple(f"{tag}@{stamp(EPOCH + (newest - back) * size)}" for back in reversed(range(count)))
    # The newest bucket is summed until `count` more buckets have begun.
    return Span(
        buckets=buckets,
        resets_at=EPOCH + (newest + 1) * size,
        ttl_s=_ttl(EPOCH + (newest + count) * size, now),
        ahead=(f"{tag}@{stamp(EPOCH + (newest + 1) * size)}",),
    )
