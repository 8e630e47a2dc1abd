"""Cache entries in the store: a TTL, a byte bound per namespace, and no work on the response path.

One `CacheStorage` serves one namespace (a team's exact cache, say) through the plain Store
API, so it behaves the same on memory, SQLite and Redis, and several gateway instances
sharing one Redis share its entries and its bound.

- `get` is one store read. A hit also marks the entry as used; the marks are written in a
  batch a second later.
- `put` only queues the entry: a background task writes it (the entry with its TTL, a
  record `(key, size, bucket)` under an increasing sequence number, and the size added to
  a byte counter of the current time bucket), then checks the bound. `put_nowait` returns
  a future that says, once the entry's batch is written, whether it was: a caller that must
  know the entry is readable awaits it, and no other write or upkeep.
- Bytes in use are the sum of the live time-bucket counters. Each counter expires a little
  after every entry written in its bucket, so expired entries stop counting by themselves.
- Past the bound, one instance at a time (a lock with a TTL) walks the records oldest
  first, from a shared cursor, and deletes entries until the namespace is back under 90 %
  of its bound. An entry used since it was written gets a second chance: its record moves
  to the young end instead (CLOCK, an approximation of least-recently-used).

The guarantee: bytes are counted conservatively (an entry overwritten or deleted before its
record is walked keeps counting until its bucket expires), so the bound is never exceeded
for long; it can be exceeded by what is written while an eviction pass runs, and a pass
stops after a few seconds, to resume on the next write. Nothing here ever fails or delays a
request: store errors in the background are logged and the work dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from gateway.store.base import Store

log = logging.getLogger("tollgate.cache")

# Entries waiting to be written; past this (a store far slower than traffic) new ones are dropped.
_MAX_PENDING = 10_000
_MAX_TOUCHED = 10_000
_BATCH = 64
_TOUCH_DELAY_S = 1.0
# Buckets per TTL: how finely expiry is followed (more buckets, more counters read per check).
_BUCKETS_PER_TTL = 32
_LOW_WATER = 0.9
_LOCK_TTL_S = 30.0
_PASS_BUDGET_S = 5.0


class CacheStorage:
    def __init__(self, store: Store, prefix: str, *, max_bytes: int, ttl_s: float) -> None:
        if max_bytes <= 0 or ttl_s <= 0:
            raise ValueError("max_bytes and ttl_s must be positive")
        self.store = store
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._bucket_s = ttl_s / _BUCKETS_PER_TTL
        # A counter outlives every entry written in its bucket, and a record its entry.
        self._bucket_ttl_s = ttl_s + 2 * self._bucket_s
        self._seq_key = f"{prefix}#seq"
        self._cursor_key = f"{prefix}#cursor"
        self._lock_key = f"{prefix}#lock"
        self._holder = os.urandom(8).hex().encode()
        self._pending: list[tuple[str, bytes, asyncio.Future[bool]]] = []
        self._touched: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        self._toucher: asyncio.Task[None] | None = None
        self._closed = False

    # --- the request path --------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The entry, or None. Store errors reach the caller (who treats them as a miss)."""
        value = await self.store.get(key)
        if value is not None and len(self._touched) < _MAX_TOUCHED:
            self._touched.add(key)
            if self._toucher is None:
                self._toucher = asyncio.get_running_loop().create_task(self._write_touches())
        return value

    async def put(self, key: str, value: bytes) -> None:
        """Queue the entry for writing; returns at once (see `flush`)."""
        self.put_nowait(key, value)

    def put_nowait(self, key: str, value: bytes) -> asyncio.Future[bool] | None:
        """Queue the entry. The future resolves True once it is written, False if writing
        failed; None means the entry was dropped (closed, larger than the bound, or too many
        entries waiting)."""
        if self._closed or len(key) + len(value) > self.max_bytes:
            return None
        if len(self._pending) >= _MAX_PENDING:
            log.warning(
                "cache writes are falling behind; an entry was dropped", extra={"prefix": self.prefix}
            )
            return None
        loop = asyncio.get_running_loop()
        written: asyncio.Future[bool] = loop.create_future()
        self._pending.append((key, value, written))
        if self._writer is None:
            self._writer = loop.create_task(self._write_pending())
        return written

    async def delete(self, key: str) -> bool:
        """Remove the entry now. Its bytes keep counting until its record is walked or its
        bucket expires (the count errs on the safe side)."""
        return await self.store.delete(key)

    # --- upkeep --------------------------------------------------------------------------

    async def bytes_used(self) -> int:
        now = time.time()
        first = int((now - self._bucket_ttl_s) // self._bucket_s)
        last = int(now // self._bucket_s)
        return sum(await self.store.counters([self._bucket_key(b) for b in range(first, last + 1)]))

    async def flush(self) -> None:
        """Write now whatever is queued: entries (and the bound checked), then marks of use."""
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._toucher is not None:
            self._toucher.cancel()
        await self._write_touches(delay_s=0)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Stop taking entries and finish writing the queued ones (marks of use are dropped)."""
        self._closed = True
        if self._toucher is not None:
            self._toucher.cancel()
        tasks = [task for task in (self._writer, self._toucher) if task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                try:
                    await self._write(batch)
                    _settle(batch, True)  # readable now: an eviction pass is no one's wait
                    await self._evict_if_over()
                except Exception as err:
                    log.warning("cache write failed", extra={"prefix": self.prefix, "error": str(err)})
                finally:
                    _settle(batch, False)  # not written (a future already settled keeps its answer)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[str, bytes, asyncio.Future[bool]]]) -> None:
        store = self.store
        bucket = int(time.time() // self._bucket_s)
        await asyncio.gather(*(store.set(key, value, ttl_s=self.ttl_s) for key, value, _ in batch))
        last = await store.incr(self._seq_key, len(batch))
        sizes = [len(key) + len(value) for key, value, _ in batch]
        await asyncio.gather(
            *(
                store.set(
                    self._record_key(last - len(batch) + 1 + i),
                    _record(bucket, size, key),
                    ttl_s=self._bucket_ttl_s,
                )
                for i, ((key, _, _), size) in enumerate(zip(batch, sizes, strict=True))
            )
        )
        await store.adjust([(self._bucket_key(bucket), sum(sizes), self._bucket_ttl_s)])

    async def _write_touches(self, delay_s: float = _TOUCH_DELAY_S) -> None:
        try:
            if delay_s:
                await asyncio.sleep(delay_s)
            touched, self._touched = self._touched, set()
            await asyncio.gather(
                *(self.store.set(self._touch_key(key), b"1", ttl_s=self.ttl_s) for key in touched)
            )
        except asyncio.CancelledError:
            pass
        except Exception as err:
            log.warning("cache use marks not written", extra={"prefix": self.prefix, "error": str(err)})
        finally:
            self._toucher = None

    # --- eviction --------------------------------------------------------------------------

    async def _evict_if_over(self) -> None:
        used = await self.bytes_used()
        if used <= self.max_bytes:
            return
        store = self.store
        if not await store.set_if_absent(self._lock_key, self._holder, ttl_s=_LOCK_TTL_S):
            return  # another instance is evicting this namespace
        try:
            await self._evict(used)
        finally:
            # Only our own lock: had the pass outlived it, another instance may hold it now.
            if await store.get(self._lock_key) == self._holder:
                await store.delete(self._lock_key)

    async def _evict(self, used: int) -> None:
        store = self.store
        target = int(self.max_bytes * _LOW_WATER)
        cursor = int(await store.get(self._cursor_key) or 0)
        head = await store.incr(self._seq_key, 0)
        deadline = time.monotonic() + _PASS_BUDGET_S
        while used > target and cursor < head and time.monotonic() < deadline:
            seqs = range(cursor + 1, min(head, cursor + _BATCH) + 1)
            found = await asyncio.gather(*(store.get(self._record_key(seq)) for seq in seqs))
            # A missing record expired with its entry, whose bytes its bucket no longer counts.
            records = [
                (seq, record, *_parse(record)) for seq, record in zip(seqs, found, strict=True) if record
            ]
            marks = await asyncio.gather(*(store.get(self._touch_key(key)) for _, _, _, _, key in records))
            kept: list[tuple[int, bytes, int, int, str]] = []
            evicted: list[tuple[int, bytes, int, int, str]] = []
            planned, walked_to = used, seqs[-1]
            for rec, mark in zip(records, marks, strict=True):
                if planned <= target:
                    walked_to = rec[0] - 1  # enough: this record and the rest wait for next time
                    break
                if mark is not None:
                    kept.append(rec)
                else:
                    evicted.append(rec)
                    planned -= rec[3]
            if kept:
                await self._second_chance(kept)
            gone = await asyncio.gather(*(store.delete(key) for _, _, _, _, key in evicted))
            freed: dict[int, int] = {}
            for (_, _, bucket, size, _), deleted in zip(evicted, gone, strict=True):
                if deleted:
                    freed[bucket] = freed.get(bucket, 0) + size
                    used -= size
            if freed:
                await store.adjust(
                    [(self._bucket_key(b), -size, self._bucket_ttl_s) for b, size in freed.items()]
                )
            await asyncio.gather(*(store.delete(self._record_key(seq)) for seq, *_ in evicted))
            cursor = walked_to
            await store.set(self._cursor_key, str(cursor).encode())

    async def _second_chance(self, kept: list[tuple[int, bytes, int, int, str]]) -> None:
        """Entries used since they were written move to the young end, their marks cleared."""
        store = self.store
        last = await store.incr(self._seq_key, len(kept))
        first = last - len(kept) + 1
        await asyncio.gather(
            *(store.delete(self._touch_key(key)) for _, _, _, _, key in kept),
            *(
                store.set(self._record_key(first + i), record, ttl_s=self._bucket_ttl_s)
                for i, (_, record, *_) in enumerate(kept)
            ),
            *(store.delete(self._record_key(seq)) for seq, *_ in kept),
        )

    # --- key names -------------------------------------------------------------------------

    def _record_key(self, seq: int) -> str:
        return f"{self.prefix}#r:{seq:016d}"

    def _touch_key(self, key: str) -> str:
        return f"{self.prefix}#t:{key}"

    def _bucket_key(self, bucket: int) -> str:
        return f"{self.prefix}#bytes:{self._bucket_s:g}:{bucket}"


def _settle(batch: list[tuple[str, bytes, asyncio.Future[bool]]], written: bool) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_result(written)


def _record(bucket: int, size: int, key: str) -> bytes:
    return f"{bucket} {size} {key}".encode()


def _parse(record: bytes) -> tuple[int, int, str]:
    bucket, size, key = record.decode().split(" ", 2)
    return int(bucket), int(size), key
