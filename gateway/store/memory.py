"""The in-process store: dicts and monotonic deadlines, for tests and throwaway runs.

Every method runs to completion without awaiting, so on one event loop each call is
atomic without a lock. Nothing survives the process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.store.base import StoreUnavailable
from gateway.store.common import check_ttl, parse_counter

# A full sweep of expired keys after this many writes keeps memory bounded even for keys
# that are never read again, at an amortised O(1) per write.
_SWEEP_EVERY_WRITES = 1024


class MemoryStore:
    backend = "memory"

    def __init__(self) -> None:
        # key -> (value, deadline on the monotonic clock or None)
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._logs: dict[str, list[bytes]] = {}
        self._writes = 0
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

    async def ping(self) -> None:
        self._check_open()

    async def aclose(self) -> None:
        self._closed = True
        self._values.clear()
        self._logs.clear()


def _owned(value: bytes) -> bytes:
    """An exact-size copy. Values live as long as the store; some producers (orjson) hand out
    bytes objects whose allocation is several KiB larger than their content."""
    return bytes(memoryview(value))
