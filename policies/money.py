"""Money as integer nano-USD, so budget counters add up exactly in any store.

Config and prices speak `Decimal` USD; counters are integers of 1e-9 USD. The rounding
direction is chosen per use so that rounding can only ever err on the safe side:

- a reservation (what a request may cost) rounds UP (`ROUND_CEILING`): a budget is never
  under-reserved;
- a budget's cap rounds DOWN (`ROUND_FLOOR`): it never allows more than was written.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

NANO_PER_USD = 1_000_000_000


def usd_to_nano(usd: Decimal, *, rounding: str = ROUND_CEILING) -> int:
    """USD → nano-USD, exact, rounded the given way (up by default: reservations)."""
    if not usd.is_finite():
        raise ValueError(f"not a finite amount: {usd}")
    return int((usd * NANO_PER_USD).to_integral_value(rounding=rounding))


def cap_to_nano(usd: Decimal) -> int:
    """A budget's amount as a cap: rounded down, so the cap never exceeds what was written."""
    return usd_to_nano(usd, rounding=ROUND_FLOOR)


def nano_to_usd(nano: int) -> Decimal:
    return Decimal(nano) / NANO_PER_USD


def format_usd(nano: int) -> str:
    """`$50.00`, `$0.0042`: cents when the amount is a dollar or more, else up to six decimals."""
    usd = nano_to_usd(nano)
    sign = "-" if usd < 0 else ""
    usd = abs(usd)
    if usd >= 1 or usd == 0:
        return f"{sign}${usd.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,}"
    text = f"{usd.quantize(Decimal('0.000001'), rounding=ROUND_HALF_EVEN):f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{sign}${whole}.{decimals.ljust(2, '0')}"
