"""The semantic cache's shared catalog: one store log, the same indexes on every instance."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.semantic.catalog import Catalog, Entry, decode, encode, segment_log
from gateway.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

DIM = 8


def _vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_record_round_trips_with_its_vector_in_half_precision() -> None:
    entry = Entry("ns", "What is a webhook?", "sc:t1:abc", 12.5)
    back, vector = decode(encode(entry, _vector(1)))
    assert back == entry
    assert vector.dtype == np.float32 and np.allclose(vector, _vector(1), atol=1e-3)


async def test_entries_added_by_one_instance_reach_another_through_the_log() -> None:
    store, clock = MemoryStore(), Clock()
    one = Catalog(store, DIM, ttl_s=60, clock=clock)
    two = Catalog(store, DIM, ttl_s=60, clock=clock)
    seq = await one.add(Entry("ns-a", "q1", "k1", clock()), _vector(1))
    await one.add(Entry("ns-b", "q2", "k2", clock()), _vector(2))
    assert await two.sync() == 2 and await two.sync() == 0
    index = two.index("ns-a")
    assert index is not None and index.search(_vector(1), 1)[0][0] == seq
    assert two.entry(seq) == Entry("ns-a", "q1", "k1", clock())
    assert two.index("ns-c") is None


async def test_a_long_log_is_read_in_pages_and_a_bad_record_is_skipped() -> None:
    store, clock = MemoryStore(), Clock()
    writer = Catalog(store, DIM, ttl_s=60, clock=clock)
    for n in range(1_500):
        await writer.add(Entry("ns", f"q{n}", f"k{n}", clock()), _vector(n))
    await store.append(segment_log(writer.segment_of(clock())), b"\x00\x01 not a record")
    reader = Catalog(store, DIM, ttl_s=60, clock=clock)
    assert await reader.sync() == 1_500
    assert len(reader) == 1_500


async def test_entries_past_their_ttl_are_skipped_and_swept() -> None:
    store, clock = MemoryStore(), Clock()
    catalog = Catalog(store, DIM, ttl_s=60, clock=clock)
    old = await catalog.add(Entry("ns", "old", "k1", clock()), _vector(1))
    clock.now += 45
    young = await catalog.add(Entry("ns", "young", "k2", clock()), _vector(2))
    clock.now += 30
    assert catalog.entry(old) is None and catalog.entry(young) is not None
    late = Catalog(store, DIM, ttl_s=60, clock=clock)
    assert await late.sync() == 1  # the expired record is not read back
    assert catalog.sweep() == 1 and len(catalog) == 1


async def test_a_dropped_entry_is_skipped_at_once_and_leaves_its_index() -> None:
    store, clock = MemoryStore(), Clock()
    # One worker, as the stage gives it: index work runs in the order it was asked for.
    with ThreadPoolExecutor(max_workers=1) as worker:
        catalog = Catalog(store, DIM, ttl_s=60, clock=clock, executor=worker)
        seq = await catalog.add(Entry("ns", "q", "k", clock()), _vector(1))
        catalog.drop(seq)
        assert catalog.entry(seq) is None and len(catalog) == 0
        await catalog.add(Entry("other", "q", "k", clock()), _vector(2))  # runs after the removal
        assert catalog.index("ns") is None


async def test_segments_whose_entries_all_expired_are_dropped_from_the_store() -> None:
    store, clock = MemoryStore(), Clock()
    catalog = Catalog(store, DIM, ttl_s=60, clock=clock)
    first = catalog.segment_of(clock())
    await catalog.add(Entry("ns", "old", "k1", clock()), _vector(1))
    clock.now += 60
    young = await catalog.add(Entry("ns", "young", "k2", clock()), _vector(2))
    await catalog.sync()
    assert await store.read_log(segment_log(first)) != []  # one TTL on: still the previous segment
    clock.now += 60
    await catalog.sync()
    assert await store.read_log(segment_log(first)) == []
    assert catalog.entry(young) is not None
    # A reader started now sees only what is younger than the TTL.
    late = Catalog(store, DIM, ttl_s=60, clock=clock)
    assert await late.sync() == 1
