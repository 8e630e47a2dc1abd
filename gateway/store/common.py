"""Argument rules every backend enforces the same way, so the conformance suite holds."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.store.base import CounterLimit, LeaseLimit, Reservation


def check_ttl(ttl_s: float | None) -> None:
    # A zero, negative or infinite TTL is a caller's bug; Redis would reject it too.
    if ttl_s is not None and not (ttl_s > 0 and math.isfinite(ttl_s)):
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")


def parse_counter(value: bytes) -> int:
    """The integer a counter holds; only canonical decimal text counts, as in Redis."""
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or str(number).encode() != value:
        raise ValueError(f"value is not an integer counter: {value[:40]!r}")
    return number


# Stored counters are 64-bit in Redis and SQLite; every backend refuses to leave that range
# so all three agree (Python ints would grow silently, SQLite would turn them into floats).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _check_int(what: str, value: object) -> None:
    # bool is an int subclass but never a meaningful amount; a float would make sums inexact.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} must fit a signed 64-bit integer, got {value}")


def check_reservation(limits: Sequence[CounterLimit], leases: Sequence[LeaseLimit]) -> None:
    """Refuse malformed limits before any I/O, identically on every backend."""
    for limit in limits:
        _check_int(f"amount of {limit.name!r}", limit.amount)
        if limit.limit is not None:
            _check_int(f"limit of {limit.name!r}", limit.limit)
        check_ttl(limit.ttl_s)
    for lease in leases:
        _check_int(f"limit of {lease.name!r}", lease.limit)
        check_ttl(lease.ttl_s)


def check_charges(charges: Sequence[tuple[str, int, float]]) -> None:
    for key, amount, ttl_s in charges:
        _check_int(f"amount for {key!r}", amount)
        check_ttl(ttl_s)


def overflow(key: str) -> ValueError:
    return ValueError(f"counter {key!r} would overflow a signed 64-bit integer")


@dataclass(slots=True)
class Plan:
    """What a reservation or an adjustment decides, before anything is written."""

    reservation: Reservation
    # key -> (new value, ttl_s when this write creates the key else None)
    writes: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    # (key, holder, ttl_s) leases to take or renew
    takes: list[tuple[str, str, float]] = field(default_factory=list)


def plan_reservation(
    limits: Sequence[CounterLimit],
    leases: Sequence[LeaseLimit],
    values: Mapping[str, int],
    held: Mapping[str, Collection[str]],
) -> Plan:
    """Decide a reservation from the live counter values and live lease holders.

    Memory and SQLite both call this inside their atomic section, so they share one set of
    rules; the Redis script implements the same rules in Lua.
    """
    before = [sum(values.get(key, 0) for key in limit.buckets) for limit in limits]
    failed: str | None = None
    for limit, used in zip(limits, before, strict=True):
        if limit.limit is not None and used + limit.amount > limit.limit:
            failed = limit.name
            break
    leases_before = [len(held.get(lease.key, ())) for lease in leases]
    taking: dict[str, set[str]] = {}
    for lease in leases:
        if failed is not None:
            break
        current = held.get(lease.key, ())
        new = taking.setdefault(lease.key, set())
        if lease.holder in current or lease.holder in new:
            continue  # a renewal uses the slot it already has
        if len(current) + len(new) >= lease.limit:
            failed = lease.name
            break
        new.add(lease.holder)
    if failed is not None:
        return Plan(Reservation(False, failed, tuple(before), tuple(leases_before)))

    plan = Plan(Reservation(True, None, (), ()))
    plan.writes = plan_charges([(limit.charge_key, limit.amount, limit.ttl_s) for limit in limits], values)
    after = {**values, **{key: value for key, (value, _) in plan.writes.items()}}
    usage = tuple(sum(after.get(key, 0) for key in limit.buckets) for limit in limits)
    counts = tuple(len(held.get(lease.key, ())) + len(taking[lease.key]) for lease in leases)
    plan.reservation = Reservation(True, None, usage, counts)
    plan.takes = [(lease.key, lease.holder, lease.ttl_s) for lease in leases]
    return plan


def plan_charges(
    charges: Sequence[tuple[str, int, float]], values: Mapping[str, int]
) -> dict[str, tuple[int, float | None]]:
    """New values for charged keys; ValueError (nothing to write) if one would overflow.

    A zero amount writes nothing, so it never creates a bucket.
    """
    writes: dict[str, tuple[int, float | None]] = {}
    for key, amount, ttl_s in charges:
        if amount == 0:
            continue
        if key in writes:
            total, ttl = writes[key][0] + amount, writes[key][1]
        elif key in values:
            total, ttl = values[key] + amount, None
        else:
            total, ttl = amount, ttl_s
        if not INT64_MIN <= total <= INT64_MAX:
            raise overflow(key)
        writes[key] = (total, ttl)
    return writes
