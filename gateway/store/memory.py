"""The in-process store: dicts and monotonic deadlines, for tests and throwaway runs.

Every method runs to completion without awaiting, so on one event loop each call is
atomic without a lock. Nothing survives the process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from gateway.store.base import CounterLimit, LeaseLimit, Reservation, StoreUnavailable
from gateway.store.common import (
    check_charges,
    check_reservation,
    check_ttl,
    parse_counter,
    plan_charges,
    plan_reservation,
)

# A full sweep of expired keys after this many writes keeps memory bounded even for keys
# that are never read again, at an amortised O(1) per write.
_SWEEP_EVERY_WRITES = 1024


class MemoryStore:
    backend = "memory"

    def __init__(self) -> None:
        # key -> (value, deadline on the monotonic clock or None)
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._logs: dict[str, list[bytes]] = {}
        # Reservation counters: key -> (value, monotonic deadline); leases: key -> holder -> deadline.
        self._counters: dict[str, tuple[int, float]] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._writes = 0
        self._reservation_writes = 0
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory store is closed")

    def _live(self, key: str, now: float) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and deadline <= now:
            del self._values[key]
            return None
        return value

    def _put(self, key: str, value: bytes, ttl_s: float | None, now: float) -> None:
        self._values[key] = (value, None if ttl_s is None else now + ttl_s)
        self._writes += 1
        if self._writes % _SWEEP_EVERY_WRITES == 0:
            expired = [k for k, (_, d) in self._values.items() if d is not None and d <= now]
            for k in expired:
                del self._values[k]

    async def get(self, key: str) -> bytes | None:
        self._check_open()
        return self._live(key, time.monotonic())

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        self._check_open()
        check_ttl(ttl_s)
        self._put(key, _owned(value), ttl_s, time.monotonic())

    async def set_if_absent(self, key: str, value: bytes, *, ttl_s: float | None = None) -> bool:
        self._check_open()
        check_ttl(ttl_s)
        now = time.monotonic()
        if self._live(key, now) is not None:
            return False
        self._put(key, _owned(value), ttl_s, now)
        return True

    async def delete(self, key: str) -> bool:
        self._check_open()
        existed = self._live(key, time.monotonic()) is not None
        self._values.pop(key, None)
        return existed

    async def scan(self, prefix: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        self._check_open()
        now = time.monotonic()
        found = [
            (key, value)
            for key, (value, deadline) in self._values.items()
            if key.startswith(prefix) and (deadline is None or deadline > now)
        ]
        found.sort()
        return found[: max(limit, 0)]

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        self._check_open()
        check_ttl(ttl_s)
        now = time.monotonic()
        current = self._live(key, now)
        if current is None:
            self._put(key, str(amount).encode(), ttl_s, now)
            return amount
        total = parse_counter(current) + amount
        # The deadline is kept: a counter's window is fixed when it is created.
        self._values[key] = (str(total).encode(), self._values[key][1])
        return total

    async def append(self, log: str, record: bytes) -> int:
        self._check_open()
        records = self._logs.setdefault(log, [])
        records.append(_owned(record))
        return len(records)

    async def append_many(self, log: str, records: Sequence[bytes]) -> int:
        self._check_open()
        entries = self._logs.setdefault(log, [])
        entries.extend(_owned(record) for record in records)
        return len(entries)

    async def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        self._check_open()
        start = max(after, 0)
        records = self._logs.get(log, [])[start : start + max(limit, 0)]
        return [(start + i + 1, record) for i, record in enumerate(records)]

    async def drop_log(self, log: str) -> bool:
        self._check_open()
        return bool(self._logs.pop(log, None))

    def _live_counters(self, keys: Iterable[str], now: float) -> dict[str, int]:
        values: dict[str, int] = {}
        for key in keys:
            entry = self._counters.get(key)
            if entry is None:
                continue
            if entry[1] <= now:
                del self._counters[key]
            else:
                values[key] = entry[0]
        return values

    def _live_holders(self, key: str, now: float) -> dict[str, float]:
        holders = self._leases.get(key)
        if holders is None:
            return {}
        for holder in [h for h, deadline in holders.items() if deadline <= now]:
            del holders[holder]
        if not holders:
            del self._leases[key]
        return holders

    def _write_counters(self, writes: dict[str, tuple[int, float | None]], now: float) -> None:
        for key, (value, ttl_s) in writes.items():
            # A key that existed keeps its deadline: its window was fixed when it was created.
            deadline = self._counters[key][1] if ttl_s is None else now + ttl_s
            self._counters[key] = (value, deadline)
        self._count_writes(len(writes), now)

    def _count_writes(self, count: int, now: float) -> None:
        # Counters and leases of teams that go quiet are never read again; the periodic
        # sweep is what frees them.
        before = self._reservation_writes
        self._reservation_writes += count
        if before // _SWEEP_EVERY_WRITES != self._reservation_writes // _SWEEP_EVERY_WRITES:
            self._sweep_reservations(now)

    def _sweep_reservations(self, now: float) -> None:
        for key in [k for k, (_, deadline) in self._counters.items() if deadline <= now]:
            del self._counters[key]
        for key in list(self._leases):
            self._live_holders(key, now)

    async def reserve(self, limits: Sequence[CounterLimit], leases: Sequence[LeaseLimit] = ()) -> Reservation:
        self._check_open()
        check_reservation(limits, leases)
        now = time.monotonic()
        keys = {key for limit in limits for key in (*limit.buckets, limit.charge_key)}
        values = self._live_counters(keys, now)
        held = {lease.key: self._live_holders(lease.key, now) for lease in leases}
        plan = plan_reservation(limits, leases, values, held)
        if plan.reservation.admitted:
            self._write_counters(plan.writes, now)
            for key, holder, ttl_s in plan.takes:
                self._leases.setdefault(key, {})[holder] = now + ttl_s
            self._count_writes(len(plan.takes), now)
        return plan.reservation

    async def adjust(self, charges: Sequence[tuple[str, int, float]]) -> None:
        self._check_open()
        check_charges(charges)
        now = time.monotonic()
        values = self._live_counters({key for key, _, _ in charges}, now)
        self._write_counters(plan_charges(charges, values), now)

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        self._check_open()
        for key, holder in leases:
            holders = self._leases.get(key)
            if holders is not None:
                holders.pop(holder, None)
                if not holders:
                    del self._leases[key]

    async def counters(self, keys: Sequence[str]) -> list[int]:
        self._check_open()
        values = self._live_counters(keys, time.monotonic())
        return [values.get(key, 0) for key in keys]

    async def ping(self) -> None:
        self._check_open()

    async def aclose(self) -> None:
        self._closed = True
        self._values.clear()
        self._logs.clear()
        self._counters.clear()
        self._leases.clear()


def _owned(value: bytes) -> bytes:
    """An exact-size copy. Values live as long as the store; some producers (orjson) hand out
    bytes objects whose allocation is several KiB larger than their content."""
    return bytes(memoryview(value))
