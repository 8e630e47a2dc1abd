"""Argument rules every backend enforces the same way, so the conformance suite holds."""

from __future__ import annotations

import math


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
