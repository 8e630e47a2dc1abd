"""The embedded default store: one SQLite file that survives a restart.

Each operation is a single SQL statement in autocommit mode, so it is atomic on its own,
also against other processes sharing the file (SQLite serialises writers; the busy timeout
makes them wait instead of failing). Deadlines are wall-clock seconds because they must
mean the same thing after a restart. Expired rows are invisible to every query; a sweep
deletes them on open and then at most once a minute, riding on a write.

Reservations (budgets, rate limits, leases) read, decide and write in one `BEGIN IMMEDIATE`
transaction. Those run on a second connection owned by one worker thread, each transaction
inside a single call on that thread: on the shared aiosqlite connection other coroutines'
statements could slip into an open transaction (and be rolled back with it), and a caller
cancelled mid-transaction would leave it open. The write lock makes the check-and-charge
exact against every other connection and process using the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from gateway.store.base import CounterLimit, LeaseLimit, Reservation, StoreUnavailable
from gateway.store.common import check_charges, check_reservation, check_ttl, plan_charges, plan_reservation

_T = TypeVar("_T")

SCHEMA_VERSION = 1
_SWEEP_INTERVAL_S = 60.0
_BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS log (
    log TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (log, seq)
);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS counters_expires_at ON counters (expires_at);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, holder)
);
CREATE INDEX IF NOT EXISTS leases_expires_at ON leases (expires_at);
"""

# A NULL deadline marks a key that already exists: it keeps the deadline it was created
# with, because a window is fixed at creation. (The column is nullable only because SQLite
# checks NOT NULL before it detects the conflict that turns the INSERT into an UPDATE.)
_WRITE_COUNTER = """
INSERT INTO counters (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value,
    expires_at = COALESCE(excluded.expires_at, counters.expires_at)
"""

_TAKE_LEASE = """
INSERT INTO leases (key, holder, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key, holder) DO UPDATE SET expires_at = excluded.expires_at
"""

_LIVE = "(expires_at IS NULL OR expires_at > :now)"

# An expired row is replaced as if it were absent. The UPDATE's WHERE refuses a live value
# that is not canonical integer text: no row comes back and the caller gets a ValueError.
_INCR = """
INSERT INTO kv (key, value, expires_at) VALUES (:key, CAST(:amount AS BLOB), :deadline)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN kv.expires_at <= :now THEN excluded.value
                 ELSE CAST(CAST(kv.value AS INTEGER) + :amount AS BLOB) END,
    expires_at = CASE WHEN kv.expires_at <= :now THEN excluded.expires_at ELSE kv.expires_at END
WHERE kv.expires_at <= :now OR CAST(CAST(kv.value AS INTEGER) AS BLOB) = kv.value
RETURNING CAST(value AS INTEGER)
"""

# The MAX read and the INSERT run in one write transaction, so concurrent appenders, even
# from other processes, get distinct consecutive numbers.
_APPEND = """
INSERT INTO log (log, seq, record)
VALUES (:log, (SELECT COALESCE(MAX(seq), 0) + 1 FROM log WHERE log = :log), :record)
RETURNING seq
"""

_APPEND_NO_RETURN = """
INSERT INTO log (log, seq, record)
VALUES (:log, (SELECT COALESCE(MAX(seq), 0) + 1 FROM log WHERE log = :log), :record)
"""


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with prefix (None: no bound).

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so
    `prefix <= key < bound` is exactly "key starts with prefix" and can use the index.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            following = last + 1
            if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be encoded; skip past them
                following = 0xE000
            return "".join(chars) + chr(following)
    return None


class SqliteStore:
    backend = "sqlite"

    def __init__(self, connection: aiosqlite.Connection, path: str) -> None:
        """Use `await SqliteStore.open(path)`; this only wraps an already prepared connection."""
        self._connection: aiosqlite.Connection | None = connection
        self._path = path
        self._next_sweep = time.time() + _SWEEP_INTERVAL_S
        self._batch_lock = asyncio.Lock()
        # The thread starts on first use, so a gateway without budgets never has one.
        self._reserver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-sqlite-reserve")
        self._reserve_db: sqlite3.Connection | None = None  # only ever touched on that thread

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        """Open (creating if needed) the database file and its schema; StoreUnavailable names the path."""
        where = str(path)
        try:
            await asyncio.to_thread(_prepare, where)
            connection = await aiosqlite.connect(where, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error as err:
            raise StoreUnavailable(f"cannot open sqlite store at {where}: {err}") from err
        try:
            # Per connection, not stored in the file. In WAL mode NORMAL is durable across a
            # process crash (only an OS crash can lose the last commits) and skips an fsync per write.
            await connection.execute_fetchall("PRAGMA synchronous = NORMAL")
            store = cls(connection, where)
            await store._sweep(time.time())
        except BaseException:
            await connection.close()
            raise
        return store

    async def _rows(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> list[sqlite3.Row]:
        connection = self._connection
        if connection is None:
            raise StoreUnavailable(f"sqlite store at {self._path} is closed")
        try:
            return list(await connection.execute_fetchall(sql, params))
        except sqlite3.Error as err:
            raise StoreUnavailable(f"sqlite store at {self._path}: {err}") from err

    async def _sweep(self, now: float) -> None:
        self._next_sweep = now + _SWEEP_INTERVAL_S
        await self._rows("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        await self._rows("DELETE FROM counters WHERE expires_at <= ?", (now,))
        await self._rows("DELETE FROM leases WHERE expires_at <= ?", (now,))

    async def _wrote(self, now: float) -> None:
        if now >= self._next_sweep:
            await self._sweep(now)

    async def get(self, key: str) -> bytes | None:
        rows = await self._rows(
            f"SELECT value FROM kv WHERE key = :key AND {_LIVE}", {"key": key, "now": time.time()}
        )
        return bytes(rows[0][0]) if rows else None

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        check_ttl(ttl_s)
        now = time.time()
        await self._rows(
            "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
            " SET value = excluded.value, expires_at = excluded.expires_at",
            (key, bytes(value), _deadline(now, ttl_s)),
        )
        await self._wrote(now)

    async def set_if_absent(self, key: str, value: bytes, *, ttl_s: float | None = None) -> bool:
        check_ttl(ttl_s)
        now = time.time()
        rows = await self._rows(
            "INSERT INTO kv (key, value, expires_at) VALUES (:key, :value, :deadline) ON CONFLICT (key) DO UPDATE"
            " SET value = excluded.value, expires_at = excluded.expires_at WHERE kv.expires_at <= :now RETURNING 1",
            {"key": key, "value": bytes(value), "deadline": _deadline(now, ttl_s), "now": now},
        )
        await self._wrote(now)
        return bool(rows)

    async def delete(self, key: str) -> bool:
        now = time.time()
        # Liveness is judged here, not in RETURNING: SQLite 3.40 evaluates `expires_at IS NULL`
        # there as false on this table (with its NOT NULL key), so a live key read as expired.
        rows = await self._rows("DELETE FROM kv WHERE key = ? RETURNING expires_at", (key,))
        return bool(rows) and (rows[0][0] is None or rows[0][0] > now)

    async def scan(self, prefix: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        params: dict[str, Any] = {"prefix": prefix, "now": time.time(), "limit": max(limit, 0)}
        bound = prefix_upper_bound(prefix)
        below = ""
        if bound is not None:
            params["bound"] = bound
            below = "AND key < :bound"
        rows = await self._rows(
            f"SELECT key, value FROM kv WHERE key >= :prefix {below} AND {_LIVE} ORDER BY key LIMIT :limit",
            params,
        )
        return [(str(key), bytes(value)) for key, value in rows]

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        check_ttl(ttl_s)
        now = time.time()
        params = {"key": key, "amount": int(amount), "deadline": _deadline(now, ttl_s), "now": now}
        rows = await self._rows(_INCR, params)
        if not rows:
            raise ValueError(f"value of {key!r} is not an integer counter")
        await self._wrote(now)
        return int(rows[0][0])

    async def append(self, log: str, record: bytes) -> int:
        rows = await self._rows(_APPEND, {"log": log, "record": bytes(record)})
        return int(rows[0][0])

    async def append_many(self, log: str, records: Sequence[bytes]) -> int:
        connection = self._connection
        if connection is None:
            raise StoreUnavailable(f"sqlite store at {self._path} is closed")
        async with self._batch_lock:
            return await self._append_batch(connection, log, records)

    async def _append_batch(self, connection: aiosqlite.Connection, log: str, records: Sequence[bytes]) -> int:
        # One transaction for the whole batch: contiguous sequence numbers and one commit.
        # Single statements issued meanwhile on this connection join it and commit with it.
        try:
            await connection.execute("BEGIN IMMEDIATE")
            try:
                await connection.executemany(_APPEND_NO_RETURN, [{"log": log, "record": bytes(r)} for r in records])
                rows = await connection.execute_fetchall(
                    "SELECT COALESCE(MAX(seq), 0) FROM log WHERE log = ?", (log,)
                )
                await connection.execute("COMMIT")
            except BaseException:
                await connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise StoreUnavailable(f"sqlite store at {self._path}: {err}") from err
        return int(next(iter(rows))[0])

    async def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        rows = await self._rows(
            "SELECT seq, record FROM log WHERE log = ? AND seq > ? ORDER BY seq LIMIT ?",
            (log, after, max(limit, 0)),
        )
        return [(int(seq), bytes(record)) for seq, record in rows]

    async def drop_log(self, log: str) -> bool:
        rows = await self._rows("DELETE FROM log WHERE log = ? RETURNING seq", (log,))
        return bool(rows)

    async def ping(self) -> None:
        await self._rows("SELECT 1", ())

    async def reserve(self, limits: Sequence[CounterLimit], leases: Sequence[LeaseLimit] = ()) -> Reservation:
        check_reservation(limits, leases)

        def work(db: sqlite3.Connection, now: float) -> Reservation:
            keys = {key for limit in limits for key in (*limit.buckets, limit.charge_key)}
            values = _live_counters(db, keys, now)
            held: dict[str, set[str]] = {}
            lease_keys = sorted({lease.key for lease in leases})
            if lease_keys:
                marks = _marks(lease_keys)
                purge = f"DELETE FROM leases WHERE key IN ({marks}) AND expires_at <= ?"
                db.execute(purge, (*lease_keys, now))
                live = db.execute(f"SELECT key, holder FROM leases WHERE key IN ({marks})", lease_keys)
                for key, holder in live:
                    held.setdefault(key, set()).add(holder)
            plan = plan_reservation(limits, leases, values, held)
            if plan.reservation.admitted:
                _write_counters(db, plan.writes, now)
                db.executemany(_TAKE_LEASE, [(key, holder, now + ttl_s) for key, holder, ttl_s in plan.takes])
            return plan.reservation

        if not limits and not leases:
            return Reservation(True, None, (), ())
        return await self._transaction(work)

    async def adjust(self, charges: Sequence[tuple[str, int, float]]) -> None:
        check_charges(charges)

        def work(db: sqlite3.Connection, now: float) -> None:
            values = _live_counters(db, {key for key, _, _ in charges}, now)
            _write_counters(db, plan_charges(charges, values), now)

        if charges:
            await self._transaction(work)

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        def work(db: sqlite3.Connection, now: float) -> None:
            db.executemany("DELETE FROM leases WHERE key = ? AND holder = ?", leases)

        if leases:
            await self._transaction(work)

    async def counters(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        unique = sorted(set(keys))
        rows = await self._rows(
            f"SELECT key, value FROM counters WHERE key IN ({_marks(unique)}) AND expires_at > ?",
            (*unique, time.time()),
        )
        values = {str(key): int(value) for key, value in rows}
        return [values.get(key, 0) for key in keys]

    async def _transaction(self, work: Callable[[sqlite3.Connection, float], _T]) -> _T:
        if self._connection is None:
            raise StoreUnavailable(f"sqlite store at {self._path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reserver, self._run_transaction, work)
        except sqlite3.Error as err:
            raise StoreUnavailable(f"sqlite store at {self._path}: {err}") from err

    def _run_transaction(self, work: Callable[[sqlite3.Connection, float], _T]) -> _T:
        """On the reservation thread: the whole transaction, so nothing can interleave with it."""
        db = self._reserve_db
        if db is None:
            db = sqlite3.connect(
                self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous = NORMAL")
            self._reserve_db = db
        db.execute("BEGIN IMMEDIATE")
        try:
            # The clock is read once the write lock is held, so a wait for it cannot make
            # a lease or a bucket look younger than it is.
            result = work(db, time.time())
            db.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT: a transaction left open would make every later
            # BEGIN on this connection fail.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    def _close_reserve_db(self) -> None:
        db, self._reserve_db = self._reserve_db, None
        if db is not None:
            db.close()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
            # Queued behind any transaction still running, so that one finishes first.
            await asyncio.get_running_loop().run_in_executor(self._reserver, self._close_reserve_db)
            self._reserver.shutdown(wait=False)


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def _live_counters(db: sqlite3.Connection, keys: Iterable[str], now: float) -> dict[str, int]:
    unique = sorted(set(keys))
    if not unique:
        return {}
    rows = db.execute(
        f"SELECT key, value FROM counters WHERE key IN ({_marks(unique)}) AND expires_at > ?", (*unique, now)
    )
    return {str(key): int(value) for key, value in rows}


def _write_counters(
    db: sqlite3.Connection, writes: Mapping[str, tuple[int, float | None]], now: float
) -> None:
    db.executemany(
        _WRITE_COUNTER,
        [(key, value, None if ttl_s is None else now + ttl_s) for key, (value, ttl_s) in writes.items()],
    )


def _deadline(now: float, ttl_s: float | None) -> float | None:
    return None if ttl_s is None else now + ttl_s


def _prepare(path: str) -> None:
    """Check the file and create or migrate its schema on a short-lived plain connection.

    Doing this before aiosqlite opens keeps every open-time failure off aiosqlite's failed-open
    path, whose worker thread may call back into an event loop that has since closed.
    """
    raw = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    try:
        version = int(raw.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"sqlite store at {path} has schema version {version}; this build understands up to {SCHEMA_VERSION}"
            )
        # WAL is a property of the file: readers proceed during a write, from any process.
        _set_wal(raw)
        raw.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
    finally:
        raw.close()


def _set_wal(raw: sqlite3.Connection) -> None:
    """Switch the file to WAL. Two processes opening a new file at once can both ask; the
    switch takes an exclusive lock that SQLite's busy timeout does not wait for, so wait here."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            raw.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
