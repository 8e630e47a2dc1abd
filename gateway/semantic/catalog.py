"""The semantic cache's entries, one index per namespace, shared by every instance.

An entry is a question (the last user turn's text), its embedding, and the key of its
answer in the cache storage. Entries live in append-only store logs, one per time segment
(a TTL long): the segment and the sequence number the store gives an entry make its id
everywhere, so every instance that reads the logs builds the same indexes. An instance adds
its own entries at once and tails the two live segments for the others' (every
`sync_interval_s`), so a question answered behind one gateway is a hit behind another
within that interval.

A namespace is a team and the fingerprint of the question's context (system prompt,
earlier turns, tools, model, parameters): an index never holds two teams' entries, and a
follow-up is only compared with follow-ups of the same conversation.

Entries older than the answer TTL are skipped when read and swept from memory; an entry
whose answer was evicted from storage is dropped at its next lookup. A segment whose
entries have all expired is dropped from the store as a whole, so the logs stay bounded by
what was written in the last two TTLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import orjson

from gateway.semantic.index import VectorIndex
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("tollgate.semantic_cache")

LOG_PREFIX = "semantic-cache:"
# Segments older than this many are assumed dropped already (by this or another instance).
_DROP_LOOKBACK = 8


def segment_log(segment: int) -> str:
    return f"{LOG_PREFIX}{segment}"


def _entry_id(segment: int, seq: int) -> int:
    """Unique across segments, and a non-negative 64-bit integer for the index."""
    return (segment << 32) | seq
_HEADER = struct.Struct("<I")
_READ_BATCH = 1000


@dataclass(slots=True)
class Entry:
    namespace: str
    question: str
    answer_key: str
    created: float


def encode(entry: Entry, vector: np.ndarray) -> bytes:
    """One log record: a length-prefixed JSON header, then the vector as float16."""
    head = orjson.dumps(
        {"ns": entry.namespace, "q": entry.question, "k": entry.answer_key, "t": round(entry.created, 3)}
    )
    return _HEADER.pack(len(head)) + head + np.asarray(vector, dtype=np.float16).tobytes()


def decode(record: bytes) -> tuple[Entry, np.ndarray]:
    (size,) = _HEADER.unpack_from(record)
    head = orjson.loads(record[_HEADER.size : _HEADER.size + size])
    vector = np.frombuffer(record[_HEADER.size + size :], dtype=np.float16).astype(np.float32)
    return Entry(head["ns"], head["q"], head["k"], float(head["t"])), vector


class Catalog:
    """Every live entry this instance knows, by namespace, kept in step with the store's log."""

    def __init__(
        self,
        store: Store,
        dim: int,
        *,
        ttl_s: float,
        sync_interval_s: float = 0.5,
        exact_below: int = 4096,
        clock: Callable[[], float] = time.time,
        executor: Executor | None = None,
    ) -> None:
        self._store = store
        self._dim = dim
        self._ttl_s = ttl_s
        self._sync_interval_s = sync_interval_s
        self._exact_below = exact_below
        self._clock = clock
        # Index work (an HNSW insert, a namespace moving to its graph) runs here, off the loop.
        self._executor = executor
        self._indexes: dict[str, VectorIndex] = {}
        self._entries: dict[int, Entry] = {}
        # Entries go to one log per time segment (a TTL long, a minute at least), so a whole
        # segment can be dropped once every entry in it has expired: the store stays bounded.
        self._segment_s = max(ttl_s, 60.0)
        self._cursors: dict[int, int] = {}
        self._dropped_below = 0
        self._task: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()
        self._swept_at = clock()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the whole log (so the first request already sees every live entry), then tail it."""
        try:
            await self.sync()
        except StoreUnavailable as err:
            log.warning("semantic cache: cannot read its entries yet (%s); starting empty", err)
        self._task = asyncio.create_task(self._tail(), name="semantic-cache-sync")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tail(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval_s)
            try:
                await self.sync()
                # A sweep walks every entry: once a minute at most, or once per TTL if shorter.
                if self._clock() - self._swept_at >= min(60.0, self._ttl_s):
                    self._swept_at = self._clock()
                    self.sweep()
            except StoreUnavailable as err:
                log.warning("semantic cache: sync failed (%s); retrying", err)
            except Exception:  # a bad record must not stop the tail for good
                log.exception("semantic cache: sync failed")

    async def sync(self) -> int:
        """Add every record appended since the last read; returns how many were added."""
        added = 0
        async with self._sync_lock:
            current = self.segment_of(self._clock())
            # Entries younger than the TTL are in this segment or the one before.
            for segment in (current - 1, current):
                added += await self._read_segment(segment)
            for segment in [s for s in self._cursors if s < current - 1]:
                del self._cursors[segment]
            await self._drop_expired(current)
        return added

    async def _read_segment(self, segment: int) -> int:
        added = 0
        name = segment_log(segment)
        while True:
            after = self._cursors.get(segment, 0)
            records = await self._store.read_log(name, after=after, limit=_READ_BATCH)
            if not records:
                return added
            oldest = self._clock() - self._ttl_s
            fresh: list[tuple[int, Entry, np.ndarray]] = []
            for seq, record in records:
                self._cursors[segment] = max(self._cursors.get(segment, 0), seq)
                entry_id = _entry_id(segment, seq)
                if entry_id in self._entries:
                    continue
                try:
                    entry, vector = decode(record)
                except (ValueError, KeyError, struct.error):
                    log.warning("semantic cache: skipping unreadable record %d of %s", seq, name)
                    continue
                if entry.created >= oldest and vector.shape == (self._dim,):
                    fresh.append((entry_id, entry, vector))
            if fresh:
                await self._run(self._put, fresh)
                added += len(fresh)
            if len(records) < _READ_BATCH:
                return added

    async def _drop_expired(self, current: int) -> None:
        """Remove segments whose entries are all past the TTL (any instance may; it is idempotent)."""
        if self._dropped_below >= current - 1:
            return
        for segment in range(max(self._dropped_below, current - 1 - _DROP_LOOKBACK), current - 1):
            await self._store.drop_log(segment_log(segment))
        self._dropped_below = current - 1

    def segment_of(self, moment: float) -> int:
        return int(moment // self._segment_s)

    # --- entries --------------------------------------------------------------------------

    async def add(self, entry: Entry, vector: np.ndarray) -> int:
        """Append an entry to the shared log and index it here at once; returns its id."""
        segment = self.segment_of(entry.created)
        seq = await self._store.append(segment_log(segment), encode(entry, vector))
        entry_id = _entry_id(segment, seq)
        await self._run(self._put, [(entry_id, entry, vector)])
        return entry_id

    async def _run(
        self,
        work: Callable[[list[tuple[int, Entry, np.ndarray]]], None],
        batch: list[tuple[int, Entry, np.ndarray]],
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, work, batch)

    def _put(self, batch: list[tuple[int, Entry, np.ndarray]]) -> None:
        """Index a batch, one call per namespace (a graph insert is cheaper in bulk)."""
        by_namespace: dict[str, list[tuple[int, Entry, np.ndarray]]] = {}
        for item in batch:
            by_namespace.setdefault(item[1].namespace, []).append(item)
        for namespace, items in by_namespace.items():
            index = self._indexes.get(namespace)
            if index is None:
                index = VectorIndex(self._dim, exact_below=self._exact_below)
            index.add([seq for seq, _, _ in items], np.stack([vector for _, _, vector in items]))
            for seq, entry, _ in items:
                self._entries[seq] = entry
            # Published once it holds the entries, so a lookup never sees a half-built index.
            self._indexes[namespace] = index

    def index(self, namespace: str) -> VectorIndex | None:
        return self._indexes.get(namespace)

    def entry(self, seq: int) -> Entry | None:
        """The entry, or None when it is unknown or older than the TTL."""
        entry = self._entries.get(seq)
        if entry is None or entry.created < self._clock() - self._ttl_s:
            return None
        return entry

    def drop(self, seq: int) -> None:
        """Forget an entry now (lookups skip it at once); its vector leaves the index off the loop."""
        self._forget([seq])

    def sweep(self) -> int:
        """Forget entries past their TTL; returns how many."""
        oldest = self._clock() - self._ttl_s
        stale = [seq for seq, entry in self._entries.items() if entry.created < oldest]
        self._forget(stale)
        return len(stale)

    def _forget(self, seqs: list[int]) -> None:
        by_namespace: dict[str, list[int]] = {}
        for seq in seqs:
            entry = self._entries.pop(seq, None)
            if entry is not None:
                by_namespace.setdefault(entry.namespace, []).append(seq)
        if by_namespace:
            loop = asyncio.get_running_loop()
            loop.run_in_executor(self._executor, self._remove, by_namespace)

    def _remove(self, by_namespace: dict[str, list[int]]) -> None:
        for namespace, seqs in by_namespace.items():
            index = self._indexes.get(namespace)
            if index is not None:
                index.remove(seqs)
                if not len(index):
                    self._indexes.pop(namespace, None)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(index.nbytes for index in self._indexes.values())
