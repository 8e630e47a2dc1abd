"""The reservation contract (budgets, rate limits, concurrency leases) on memory, sqlite and redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.store.base import CounterLimit, LeaseLimit, Reservation, Store, StoreUnavailable

pytestmark = pytest.mark.anyio

# As in test_conformance: short TTLs are only checked after the sleep, when they must be gone.
EXPIRING_TTL_S = 0.05
AFTER_EXPIRY_S = 0.1
LIVE_TTL_S = 60.0
INT64_MAX = 2**63 - 1


def counter(
    name: str,
    amount: int,
    limit: int | None,
    *,
    buckets: tuple[str, ...] | None = None,
    charge: str | None = None,
    ttl_s: float = LIVE_TTL_S,
) -> CounterLimit:
    """A limit on one bucket named after the limit, unless buckets/charge say otherwise."""
    keys = buckets if buckets is not None else (name,)
    return CounterLimit(name, keys, charge if charge is not None else keys[-1], amount, limit, ttl_s)


def lease(
    name: str, holder: str, limit: int, *, key: str | None = None, ttl_s: float = LIVE_TTL_S
) -> LeaseLimit:
    return LeaseLimit(name, key if key is not None else name, holder, limit, ttl_s)


async def test_the_boundary_is_inclusive(store: Store) -> None:
    assert await store.reserve([counter("spend", 10, 10)]) == Reservation(True, None, (10,), ())
    assert await store.reserve([counter("spend", 0, 10)]) == Reservation(True, None, (10,), ())
    assert await store.reserve([counter("spend", 1, 10)]) == Reservation(False, "spend", (10,), ())
    assert await store.counters(["spend"]) == [10]


async def test_a_limit_of_zero_admits_only_amount_zero(store: Store) -> None:
    assert await store.reserve([counter("zero", 0, 0)]) == Reservation(True, None, (0,), ())
    assert await store.reserve([counter("zero", 1, 0)]) == Reservation(False, "zero", (0,), ())
    assert await store.counters(["zero"]) == [0]


async def test_all_or_nothing_when_the_second_of_three_would_be_exceeded(store: Store) -> None:
    await store.adjust([("b", 7, LIVE_TTL_S), ("c", 3, LIVE_TTL_S)])
    limits = [counter("a", 5, 100), counter("b", 5, 10), counter("c", 5, 100)]
    assert await store.reserve(limits) == Reservation(False, "b", (0, 7, 3), ())
    assert await store.counters(["a", "b", "c"]) == [0, 7, 3]
    # Once b has room, all three are charged together.
    await store.adjust([("b", -2, LIVE_TTL_S)])
    assert await store.reserve(limits) == Reservation(True, None, (5, 10, 8), ())
    assert await store.counters(["a", "b", "c"]) == [5, 10, 8]


async def test_failed_names_the_first_limit_exceeded_in_the_order_given(store: Store) -> None:
    limits = [counter("ok", 1, 5), counter("first", 9, 5), counter("second", 9, 5)]
    assert (await store.reserve(limits)).failed == "first"
    assert (await store.reserve(limits[::-1])).failed == "second"
    refused = await store.reserve([counter("ok", 1, 5)], [lease("slots", "r1", 0)])
    assert refused == Reservation(False, "slots", (0,), (0,))


async def test_a_limit_of_none_charges_and_reports_but_never_refuses(store: Store) -> None:
    alert_only = counter("alert", 10**12, None)
    assert await store.reserve([alert_only]) == Reservation(True, None, (10**12,), ())
    assert await store.reserve([alert_only]) == Reservation(True, None, (2 * 10**12,), ())
    # A hard limit refusing leaves the count-only one uncharged too.
    refused = await store.reserve([alert_only, counter("hard", 2, 1)])
    assert refused == Reservation(False, "hard", (2 * 10**12, 0), ())
    assert await store.counters(["alert"]) == [2 * 10**12]


async def test_a_rolling_window_sums_its_buckets_and_charges_one(store: Store) -> None:
    window = ("rpm:00", "rpm:01", "rpm:02")
    await store.adjust([("rpm:00", 20, LIVE_TTL_S), ("rpm:01", 25, LIVE_TTL_S), ("rpm:99", 1000, LIVE_TTL_S)])
    per_minute = counter("rpm", 5, 50, buckets=window)
    assert await store.reserve([per_minute]) == Reservation(True, None, (50,), ())
    assert await store.counters(["rpm:00", "rpm:01", "rpm:02"]) == [20, 25, 5]
    assert await store.reserve([per_minute]) == Reservation(False, "rpm", (50,), ())
    # The oldest bucket leaving the window frees its share.
    moved = counter("rpm", 5, 50, buckets=("rpm:01", "rpm:02", "rpm:03"), charge="rpm:03")
    assert await store.reserve([moved]) == Reservation(True, None, (35,), ())


async def test_usage_after_counts_every_charge_of_the_reservation(store: Store) -> None:
    # Two limits over the same buckets (a hard budget and an alert line) both see both charges;
    # a limit charging a key outside its buckets does not change its own usage.
    limits = [
        counter("budget", 3, 100, buckets=("day",)),
        counter("alert", 4, None, buckets=("day",)),
        counter("elsewhere", 5, None, buckets=("day",), charge="other"),
    ]
    assert await store.reserve(limits) == Reservation(True, None, (7, 7, 7), ())
    assert await store.counters(["day", "other"]) == [7, 5]


async def test_bucket_ttl_is_set_only_when_the_bucket_is_created(store: Store) -> None:
    window_s = 0.2  # the next calls must land inside it
    assert (await store.reserve([counter("w", 1, 10, ttl_s=window_s)])).usage == (1,)
    assert (await store.reserve([counter("w", 1, 10, ttl_s=LIVE_TTL_S)])).usage == (2,)
    await store.adjust([("w", 1, LIVE_TTL_S)])
    await store.adjust([("settled", 4, window_s)])
    await store.adjust([("settled", 1, LIVE_TTL_S)])
    await store.reserve([counter("long", 1, None, ttl_s=LIVE_TTL_S)])
    await store.reserve([counter("long", 1, None, ttl_s=EXPIRING_TTL_S)])
    assert await store.counters(["w", "settled", "long"]) == [3, 5, 2]
    await asyncio.sleep(window_s + AFTER_EXPIRY_S)
    assert await store.counters(["w", "settled", "long"]) == [0, 0, 2]
    # An expired bucket is absent: the next charge starts it again from zero.
    assert (await store.reserve([counter("w", 1, 1)])).usage == (1,)


async def test_adjust_adds_positive_and_negative_amounts_without_clamping(store: Store) -> None:
    await store.adjust([("cost", 1_000, LIVE_TTL_S)])
    await store.adjust([("cost", -300, LIVE_TTL_S), ("cost", 50, LIVE_TTL_S), ("tokens", 9, LIVE_TTL_S)])
    assert await store.counters(["cost", "tokens"]) == [750, 9]
    await store.adjust([("cost", -1_000, LIVE_TTL_S), ("refund", -5, LIVE_TTL_S)])
    assert await store.counters(["cost", "refund"]) == [-250, -5]
    await store.adjust([])
    await store.adjust([("untouched", 0, LIVE_TTL_S)])
    assert await store.counters(["untouched", "never", "cost"]) == [0, 0, -250]
    # A negative bucket leaves more room under the limit.
    assert await store.reserve([counter("cost", 1_250, 1_000)]) == Reservation(True, None, (1_000,), ())


async def test_counters_are_exact_across_the_64_bit_range(store: Store) -> None:
    # Past 2^53 a double cannot tell n from n + 1: each of these sums must still be exact.
    big = 2**62 + 1
    await store.adjust([("x", big, LIVE_TTL_S), ("y", big - 12, LIVE_TTL_S), ("neg", -(2**63), LIVE_TTL_S)])
    assert await store.counters(["x", "y", "neg"]) == [big, big - 12, -(2**63)]
    pair = ("x", "y")
    # usage = 2^63 - 10: an amount of 9 lands exactly on the largest limit, 10 is one over.
    over = counter("pair", 10, INT64_MAX, buckets=pair, charge="x")
    assert await store.reserve([over]) == Reservation(False, "pair", (INT64_MAX - 9,), ())
    exact = counter("pair", 9, INT64_MAX, buckets=pair, charge="x")
    assert await store.reserve([exact]) == Reservation(True, None, (INT64_MAX,), ())
    assert await store.counters(["x"]) == [big + 9]
    # A usage beyond any stored counter is still reported exactly (only stored values must fit).
    await store.adjust([("y", 12, LIVE_TTL_S)])
    assert (await store.reserve([counter("sum", 1, None, buckets=pair, charge="x")])).usage == (2**63 + 12,)
    assert await store.reserve([counter("near", 2**53 + 1, INT64_MAX)]) == Reservation(
        True, None, (2**53 + 1,), ()
    )
    assert (await store.reserve([counter("near", 2**53 - 1, INT64_MAX)])).usage == (2**54,)
    assert (await store.reserve([counter("neg", 0, None)])).usage == (-(2**63),)


async def test_a_charge_that_would_overflow_raises_and_changes_nothing(store: Store) -> None:
    await store.adjust([("top", INT64_MAX - 1, LIVE_TTL_S), ("other", 1, LIVE_TTL_S)])
    with pytest.raises(ValueError, match="'top' would overflow"):
        await store.adjust([("other", 5, LIVE_TTL_S), ("top", 2, LIVE_TTL_S)])
    with pytest.raises(ValueError, match="'top' would overflow"):
        await store.reserve([counter("other", 5, None), counter("top", 2, None)])
    assert await store.counters(["top", "other"]) == [INT64_MAX - 1, 1]
    await store.adjust([("top", 1, LIVE_TTL_S), ("bottom", -(2**63), LIVE_TTL_S)])
    with pytest.raises(ValueError, match="'bottom' would overflow"):
        await store.adjust([("bottom", -1, LIVE_TTL_S)])
    assert await store.counters(["top", "bottom"]) == [INT64_MAX, -(2**63)]


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        (CounterLimit("f", ("k",), "k", 1.5, 10, LIVE_TTL_S), TypeError),  # type: ignore[arg-type]
        (CounterLimit("b", ("k",), "k", True, 10, LIVE_TTL_S), TypeError),
        (CounterLimit("l", ("k",), "k", 1, 10.0, LIVE_TTL_S), TypeError),  # type: ignore[arg-type]
        (CounterLimit("t", ("k",), "k", 1, 10, 0), ValueError),
        (CounterLimit("w", ("k",), "k", 2**63, None, LIVE_TTL_S), ValueError),
    ],
)
async def test_malformed_limits_are_refused_before_anything_is_written(
    store: Store, limit: CounterLimit, error: type[Exception]
) -> None:
    good = counter("k", 1, None)
    with pytest.raises(error):
        await store.reserve([good, limit])
    with pytest.raises(ValueError, match="ttl_s must be a positive number"):
        await store.reserve([good], [lease("slots", "r", 1, ttl_s=float("inf"))])
    with pytest.raises(ValueError, match="ttl_s must be a positive number"):
        await store.adjust([("k", 1, LIVE_TTL_S), ("k", 1, -1.0)])
    assert await store.counters(["k"]) == [0]


async def test_nothing_to_check_is_admitted(store: Store) -> None:
    assert await store.reserve([]) == Reservation(True, None, (), ())
    assert await store.counters([]) == []
    await store.release([])


async def test_leases_limit_release_and_renewal(store: Store) -> None:
    assert await store.reserve([], [lease("conc", "r1", 2)]) == Reservation(True, None, (), (1,))
    assert await store.reserve([], [lease("conc", "r2", 2)]) == Reservation(True, None, (), (2,))
    assert await store.reserve([], [lease("conc", "r3", 2)]) == Reservation(False, "conc", (), (2,))
    # The same holder again renews its lease; it does not need a second slot.
    assert await store.reserve([], [lease("conc", "r1", 2)]) == Reservation(True, None, (), (2,))
    await store.release([("conc", "r1"), ("conc", "never-held"), ("nowhere", "r1")])
    assert await store.reserve([], [lease("conc", "r3", 2)]) == Reservation(True, None, (), (2,))
    await store.release([("conc", "r2"), ("conc", "r3")])
    await store.release([("conc", "r2")])
    assert await store.reserve([], [lease("conc", "r4", 2)]) == Reservation(True, None, (), (1,))


async def test_two_leases_on_one_key_in_one_reservation_need_two_slots(store: Store) -> None:
    both = [lease("a", "r1", 2, key="pool"), lease("b", "r2", 2, key="pool")]
    assert await store.reserve([], both) == Reservation(True, None, (), (2, 2))
    await store.release([("pool", "r2")])
    third = [lease("a", "r3", 2, key="pool"), lease("b", "r4", 2, key="pool")]
    assert await store.reserve([], third) == Reservation(False, "b", (), (1, 1))
    assert await store.reserve([], [lease("a", "r5", 2, key="pool")]) == Reservation(True, None, (), (2,))


async def test_an_unreleased_lease_expires(store: Store) -> None:
    assert (await store.reserve([], [lease("one", "dead", 1, ttl_s=EXPIRING_TTL_S)])).admitted
    assert await store.reserve([], [lease("one", "next", 1)]) == Reservation(False, "one", (), (1,))
    await asyncio.sleep(AFTER_EXPIRY_S)
    assert await store.reserve([], [lease("one", "next", 1)]) == Reservation(True, None, (), (1,))


async def test_a_refused_reservation_takes_no_lease_and_charges_nothing(store: Store) -> None:
    refused = await store.reserve([counter("budget", 11, 10)], [lease("conc", "r1", 5)])
    assert refused == Reservation(False, "budget", (0,), (0,))
    # A full lease pool refuses the counters too.
    await store.reserve([], [lease("full", "r0", 1)])
    refused = await store.reserve(
        [counter("budget", 1, 10)], [lease("conc", "r1", 5), lease("full", "r1", 1)]
    )
    assert refused == Reservation(False, "full", (0,), (0, 1))
    assert await store.counters(["budget"]) == [0]
    admitted = await store.reserve([counter("budget", 1, 10)], [lease("conc", "r2", 5)])
    assert admitted == Reservation(True, None, (1,), (1,))


async def test_exactly_the_limit_is_admitted_under_concurrency(store: Store) -> None:
    limits = [counter("rpm", 1, 50), counter("spend", 10, None)]
    results = await asyncio.gather(*(store.reserve(limits) for _ in range(200)))
    admitted = [r for r in results if r.admitted]
    assert len(admitted) == 50
    assert sorted(r.usage[0] for r in admitted) == list(range(1, 51))
    assert {r.failed for r in results if not r.admitted} == {"rpm"}
    assert await store.counters(["rpm", "spend"]) == [50, 500]


async def test_exactly_the_lease_limit_is_admitted_under_concurrency(store: Store) -> None:
    results = await asyncio.gather(*(store.reserve([], [lease("conc", f"r{i}", 10)]) for i in range(100)))
    assert sum(r.admitted for r in results) == 10
    assert max(r.leases[0] for r in results) == 10


async def test_reservations_do_not_share_keys_with_values_or_logs(store: Store) -> None:
    await store.incr("team:a", 5)
    await store.reserve([counter("team:a", 2, None)], [lease("team:a", "r1", 1)])
    assert await store.get("team:a") == b"5"
    assert await store.counters(["team:a"]) == [2]
    assert await store.scan("") == [("team:a", b"5")]
    await store.delete("team:a")
    assert await store.counters(["team:a"]) == [2]


async def test_reservation_calls_on_a_closed_store_fail(store: Store) -> None:
    await store.aclose()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.reserve([counter("k", 1, 1)])
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.adjust([("k", 1, LIVE_TTL_S)])
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.release([("k", "r")])
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.counters(["k"])


async def test_reserve_latency_with_four_limits(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """Reports the cost of one call (read with -s); the budget check runs on every request."""
    limits = [
        counter("rpm", 1, 10**9, buckets=("rpm:1", "rpm:2")),
        counter("tpm", 500, 10**12, buckets=("tpm:1", "tpm:2")),
        counter("daily", 12_345, 10**15, buckets=("day",)),
        counter("monthly", 12_345, None, buckets=("month",)),
    ]
    for _ in range(20):
        await store.reserve(limits)
    samples = []
    for _ in range(300):
        start = time.perf_counter()
        await store.reserve(limits)
        samples.append(time.perf_counter() - start)
    samples.sort()
    p50, p99 = samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6
    with capsys.disabled():
        print(f"\n[{store.backend}] reserve with 4 limits: p50 {p50:.0f} us, p99 {p99:.0f} us")
