"""One storage interface for everything that must outlive a request.

Three backends implement it: `memory` (tests, throwaway), `sqlite` (the embedded default,
persistent across restarts) and `redis` (shared by many gateway instances). Callers
namespace their own keys (`key:<hash>`, `team:<id>`, ...). Every backend passes the same
conformance suite (tests/store/test_conformance.py).

Values are bytes: callers serialise (orjson) so the store never guesses a type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class StoreUnavailable(Exception):
    """The backend cannot be reached or failed; the message says which and why."""


class Store(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        """Write (overwrite) the value; with ttl_s it disappears after that many seconds."""

    async def set_if_absent(self, key: str, value: bytes, *, ttl_s: float | None = None) -> bool:
        """Write only if the key is absent (or expired); True when written. Atomic."""

    async def delete(self, key: str) -> bool:
        """Remove the key; True when it existed."""

    async def scan(self, prefix: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        """Live (key, value) pairs whose key starts with prefix, sorted by key, at most limit."""

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        """Atomically add amount to an integer counter (absent = 0) and return the new value.

        ttl_s, when given, is set only when the counter is created (a fixed window).
        """

    async def append(self, log: str, record: bytes) -> int:
        """Append a record to an append-only log; returns its sequence number (1, 2, 3 ...)."""

    async def append_many(self, log: str, records: Sequence[bytes]) -> int:
        """Append records in order, atomically as one batch; returns the last sequence number.

        One round trip (one transaction) for many rows: the ledger writes this way, so its
        cost per request stays small.
        """

    async def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Records with a sequence number greater than after, oldest first, at most limit."""

    async def ping(self) -> None:
        """Raise StoreUnavailable if the backend cannot serve requests."""

    async def aclose(self) -> None:
        """Release connections / file handles. Safe to call twice."""
