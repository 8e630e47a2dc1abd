"""Cache storage on every store backend: TTL, the byte bound, and instances sharing one store."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.cache.storage import CacheStorage
from gateway.store.base import Store, StoreUnavailable
from gateway.store.memory import MemoryStore
from tests.store.conftest import OpenStore

pytestmark = pytest.mark.anyio

PREFIX = "xc:team-a"


def _key(i: int) -> str:
    return f"{PREFIX}:{i:040d}"


def _value(i: int, size: int = 200) -> bytes:
    return str(i).encode().ljust(size - len(_key(i)), b".")  # key + value = size bytes


async def _live(store: Store) -> dict[str, bytes]:
    return dict(await store.scan(PREFIX + ":", limit=10_000))


async def test_an_entry_is_written_off_the_call_and_read_back(store: Store) -> None:
    storage = CacheStorage(store, PREFIX, max_bytes=10_000, ttl_s=60)
    await storage.put(_key(1), _value(1))
    await storage.flush()
    assert await storage.get(_key(1)) == _value(1)
    assert await storage.get(_key(2)) is None
    assert await storage.bytes_used() == 200
    assert await storage.delete(_key(1)) and await storage.get(_key(1)) is None
    await storage.aclose()


async def test_entries_and_their_bytes_expire_with_the_ttl(store: Store) -> None:
    storage = CacheStorage(store, PREFIX, max_bytes=10_000, ttl_s=0.4)
    await storage.put(_key(1), _value(1))
    await storage.flush()
    assert await storage.get(_key(1)) == _value(1)
    await asyncio.sleep(0.5)
    assert await storage.get(_key(1)) is None
    # The byte counter of the entry's time bucket outlives it by at most two buckets.
    await asyncio.sleep(0.1)
    assert await storage.bytes_used() == 0
    await storage.aclose()


async def test_the_byte_bound_evicts_the_oldest_entries_first(store: Store) -> None:
    storage = CacheStorage(store, PREFIX, max_bytes=2_000, ttl_s=60)
    for i in range(25):
        await storage.put(_key(i), _value(i))
        await storage.flush()
        used = await storage.bytes_used()
        assert used <= 2_000
        live = await _live(store)
        assert sum(len(k) + len(v) for k, v in live.items()) == used
    live = await _live(store)
    # Back under 90 % of the bound once over it: the newest stay, the oldest went first.
    assert 9 <= len(live) <= 10
    newest = [_key(i) for i in range(25 - len(live), 25)]
    assert sorted(live) == newest
    await storage.aclose()


async def test_an_entry_used_since_it_was_written_gets_a_second_chance(store: Store) -> None:
    storage = CacheStorage(store, PREFIX, max_bytes=2_000, ttl_s=60)
    for i in range(10):
        await storage.put(_key(i), _value(i))
    await storage.flush()
    assert await storage.get(_key(0)) is not None  # the oldest, but in use
    await storage.flush()
    for i in range(10, 14):
        await storage.put(_key(i), _value(i))
        await storage.flush()
    live = await _live(store)
    assert _key(0) in live
    assert _key(1) not in live and _key(2) not in live
    assert await storage.bytes_used() <= 2_000
    await storage.aclose()


async def test_a_queued_write_never_waits_for_the_store() -> None:
    class SlowStore(MemoryStore):
        async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
            await asyncio.sleep(0.3)
            await super().set(key, value, ttl_s=ttl_s)

    store = SlowStore()
    storage = CacheStorage(store, PREFIX, max_bytes=10_000, ttl_s=60)
    started = time.perf_counter()
    await storage.put(_key(1), _value(1))
    assert time.perf_counter() - started < 0.05
    await storage.aclose()  # a clean close finishes the queued writes
    assert await store.get(_key(1)) == _value(1)


async def test_an_entry_larger_than_the_bound_is_not_kept(store: Store) -> None:
    storage = CacheStorage(store, PREFIX, max_bytes=500, ttl_s=60)
    await storage.put(_key(1), _value(1, size=501))
    await storage.flush()
    assert await storage.get(_key(1)) is None and await storage.bytes_used() == 0


async def test_a_failing_store_fails_reads_loudly_and_writes_quietly() -> None:
    store = MemoryStore()
    storage = CacheStorage(store, PREFIX, max_bytes=10_000, ttl_s=60)
    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await storage.get(_key(1))
    await storage.put(_key(1), _value(1))
    await storage.flush()  # logged and dropped; nothing raised


async def test_two_instances_on_one_store_share_entries_and_the_bound(
    open_backend: OpenStore, store: Store, request: pytest.FixtureRequest
) -> None:
    # The memory backend cannot be opened twice; its two storages share one object instead.
    other = store if "memory" in request.node.callspec.id else await open_backend()
    first = CacheStorage(store, PREFIX, max_bytes=2_000, ttl_s=60)
    second = CacheStorage(other, PREFIX, max_bytes=2_000, ttl_s=60)
    await first.put(_key(0), _value(0))
    await first.flush()
    assert await second.get(_key(0)) == _value(0)
    for i in range(1, 30):
        writer = first if i % 2 else second
        await writer.put(_key(i), _value(i))
        await writer.flush()
    assert await first.bytes_used() == await second.bytes_used() <= 2_000
    live = await _live(store)
    assert sum(len(k) + len(v) for k, v in live.items()) <= 2_000
    assert _key(29) in live and _key(1) not in live
    await first.aclose()
    await second.aclose()
    if other is not store:
        await other.aclose()


async def test_a_writer_can_await_its_own_entry_and_hears_when_it_was_dropped(store: Store) -> None:
    storage = CacheStorage(store, PREFIX, max_bytes=500, ttl_s=60)
    written = storage.put_nowait(_key(1), _value(1))
    assert written is not None and await written is True
    assert await storage.get(_key(1)) == _value(1)
    assert storage.put_nowait(_key(2), _value(2, size=501)) is None  # larger than the bound
    await storage.aclose()
    assert storage.put_nowait(_key(3), _value(3)) is None  # closed


async def test_a_write_that_fails_resolves_its_future_false() -> None:
    store = MemoryStore()
    storage = CacheStorage(store, PREFIX, max_bytes=10_000, ttl_s=60)
    await store.aclose()
    written = storage.put_nowait(_key(1), _value(1))
    assert written is not None and await written is False
