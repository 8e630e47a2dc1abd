"""One storage interface for everything that must outlive a request.

Three backends implement it: `memory` (tests, throwaway), `sqlite` (the embedded default,
persistent across restarts) and `redis` (shared by many gateway instances). Callers
namespace their own keys (`key:<hash>`, `team:<id>`, ...). Every backend passes the same
conformance suite (tests/store/test_conformance.py).

Values are bytes: callers serialise (orjson) so the store never guesses a type.

Budgets and rate limits use a separate key space: integer counters and leases that
`reserve` checks and charges atomically, also across many gateway instances. They are
not visible to get/set/scan/incr, and those never touch them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CounterLimit:
    """One limit that `Store.reserve` checks and charges atomically with the others."""

    name: str  # identifies the limit in the result
    # Keys whose values SUM to the current usage: a rolling window is several buckets,
    # a calendar period is one.
    buckets: tuple[str, ...]
    charge_key: str  # the bucket the amount is added to (normally one of `buckets`)
    # What this request adds: nano-USD, requests or tokens. Integers only, so sums are exact.
    amount: int
    limit: int | None  # None: charge and report usage but never refuse (alert-only, count-only)
    # Expiry set on charge_key when this charge creates it (window length + slack), so a
    # bucket vanishes once its window is gone; a later charge never extends it.
    ttl_s: float


@dataclass(frozen=True, slots=True)
class LeaseLimit:
    """A concurrency limit: at most `limit` live leases under `key`; a lease not released
    within ttl_s expires (its holder died).

    A holder that already has a live lease under the key keeps its one slot: taking it
    again only renews the expiry, so a retried request does not count twice.
    """

    name: str
    key: str
    holder: str  # the request id
    limit: int
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Reservation:
    admitted: bool
    # Name of the first limit that would be exceeded, counters in the order given and then
    # leases in the order given; None when admitted.
    failed: str | None
    # For each CounterLimit in order: the sum of its buckets after every charge of this
    # reservation when admitted; before (unchanged) when refused.
    usage: tuple[int, ...]
    # For each LeaseLimit in order: live leases under its key after (admitted) / before (refused).
    leases: tuple[int, ...]


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

    async def drop_log(self, log: str) -> bool:
        """Remove a whole log; True when it had records. Appending to it again starts at 1.

        Logs are never trimmed record by record (sequence numbers stay stable for readers);
        a writer that needs bounded storage writes to time-segmented logs and drops whole
        segments once nothing in them is wanted (the semantic cache does).
        """

    async def ping(self) -> None:
        """Raise StoreUnavailable if the backend cannot serve requests."""

    async def aclose(self) -> None:
        """Release connections / file handles. Safe to call twice."""

    async def reserve(self, limits: Sequence[CounterLimit], leases: Sequence[LeaseLimit] = ()) -> Reservation:
        """Check and charge every limit, all or nothing, atomically.

        Admitted iff for every CounterLimit with a limit `usage + amount <= limit` (usage
        being the sum of its buckets before this call; the boundary is inclusive, so a limit
        of 0 admits only amount 0) and every LeaseLimit has fewer than `limit` live leases
        (expired ones are dropped first). When admitted every amount is added and every
        lease taken; when refused nothing changes. A stored counter must stay within a
        signed 64-bit integer: a charge that would leave that range raises ValueError and
        changes nothing.
        """

    async def adjust(self, charges: Sequence[tuple[str, int, float]]) -> None:
        """Add (key, amount, ttl_s) amounts, possibly negative, as one atomic batch.

        Settles a reservation with the real cost. ttl_s applies only when the charge creates
        the key. Nothing is clamped: a bucket goes below zero when the amounts say so.
        """

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        """Drop leases given as (key, holder); releasing an absent lease is a no-op."""

    async def counters(self, keys: Sequence[str]) -> list[int]:
        """Current counter values, 0 when absent or expired (for reports)."""
