"""The contract every Store backend keeps; each test runs on memory, sqlite and redis."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store.base import Store, StoreUnavailable

pytestmark = pytest.mark.anyio

# Keys given EXPIRING_TTL_S are only ever checked after the sleep, when they must be gone,
# so a slow machine cannot make these tests fail; live keys get a TTL of a minute.
EXPIRING_TTL_S = 0.05
AFTER_EXPIRY_S = 0.1
LIVE_TTL_S = 60.0


async def test_get_set_overwrite(store: Store) -> None:
    assert await store.get("k") is None
    await store.set("k", b"one")
    assert await store.get("k") == b"one"
    await store.set("k", b"two")
    assert await store.get("k") == b"two"
    await store.set("empty", b"")
    assert await store.get("empty") == b""
    await store.set("bin", bytes(range(256)))
    assert await store.get("bin") == bytes(range(256))


async def test_ttl_expiry_and_overwrite_without_ttl_keeps_the_key(store: Store) -> None:
    await store.set("short", b"v", ttl_s=EXPIRING_TTL_S)
    await store.set("made-permanent", b"v", ttl_s=EXPIRING_TTL_S)
    await store.set("made-permanent", b"w")
    await store.set("long", b"v", ttl_s=LIVE_TTL_S)
    assert await store.get("long") == b"v"
    await asyncio.sleep(AFTER_EXPIRY_S)
    assert await store.get("short") is None
    assert await store.get("made-permanent") == b"w"
    assert await store.get("long") == b"v"


async def test_set_if_absent(store: Store) -> None:
    assert await store.set_if_absent("lock", b"first") is True
    assert await store.set_if_absent("lock", b"second") is False
    assert await store.get("lock") == b"first"

    assert await store.set_if_absent("held", b"a", ttl_s=LIVE_TTL_S) is True
    assert await store.set_if_absent("held", b"b", ttl_s=LIVE_TTL_S) is False
    assert await store.get("held") == b"a"

    assert await store.set_if_absent("lease", b"a", ttl_s=EXPIRING_TTL_S) is True
    await asyncio.sleep(AFTER_EXPIRY_S)
    assert await store.set_if_absent("lease", b"c") is True
    assert await store.get("lease") == b"c"


async def test_set_if_absent_has_one_winner_among_concurrent_callers(store: Store) -> None:
    results = await asyncio.gather(*(store.set_if_absent("once", str(i).encode()) for i in range(50)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert await store.get("once") == str(winner).encode()


async def test_delete_reports_whether_a_live_key_existed(store: Store) -> None:
    await store.set("k", b"v")
    assert await store.delete("k") is True
    assert await store.get("k") is None
    assert await store.delete("k") is False
    assert await store.delete("never") is False
    await store.set("gone", b"v", ttl_s=EXPIRING_TTL_S)
    await asyncio.sleep(AFTER_EXPIRY_S)
    assert await store.delete("gone") is False


async def test_scan_prefix_sorted_and_limited(store: Store) -> None:
    for key in ["team:b", "team:a", "team:c", "teams:x", "xteam:a", "tea", "other"]:
        await store.set(key, key.encode())
    assert await store.scan("team:") == [("team:a", b"team:a"), ("team:b", b"team:b"), ("team:c", b"team:c")]
    assert [k for k, _ in await store.scan("team:", limit=2)] == ["team:a", "team:b"]
    assert await store.scan("team:", limit=0) == []
    assert [k for k, _ in await store.scan("team")] == ["team:a", "team:b", "team:c", "teams:x"]
    assert await store.scan("nothing:") == []
    assert [k for k, _ in await store.scan("")] == sorted(
        ["team:b", "team:a", "team:c", "teams:x", "xteam:a", "tea", "other"]
    )


async def test_scan_skips_expired_keys(store: Store) -> None:
    await store.set("s:live", b"1")
    await store.set("s:dying", b"2", ttl_s=EXPIRING_TTL_S)
    await asyncio.sleep(AFTER_EXPIRY_S)
    assert await store.scan("s:") == [("s:live", b"1")]


@pytest.mark.parametrize("prefix", ["team:*", "a?", "[ab]", "x\\", "50%", "a_b", "é:"])
async def test_scan_treats_pattern_characters_literally(store: Store, prefix: str) -> None:
    decoys = ["team:a", "team:", "ab", "a", "b", "x", "50", "50x", "aXb", "axb", "e:", "é"]
    for key in decoys:
        await store.set(key, b"decoy")
    await store.set(prefix, b"exact")
    await store.set(prefix + "1", b"longer")
    assert await store.scan(prefix) == [(prefix, b"exact"), (prefix + "1", b"longer")]


async def test_scan_of_unicode_prefix_stops_at_the_prefix(store: Store) -> None:
    for key in ["\U0010ffff", "\U0010ffff\U0010ffffz", "a\U0010ffff", "b"]:
        await store.set(key, b"v")
    assert [k for k, _ in await store.scan("a\U0010ffff")] == ["a\U0010ffff"]
    assert [k for k, _ in await store.scan("\U0010ffff")] == ["\U0010ffff", "\U0010ffff\U0010ffffz"]


async def test_incr_is_atomic_under_concurrency(store: Store) -> None:
    results = await asyncio.gather(*(store.incr("hits") for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    amounts = list(range(1, 201))
    await asyncio.gather(*(store.incr("spent", amount) for amount in amounts))
    assert await store.incr("spent", 0) == sum(amounts)
    assert await store.incr("spent", -sum(amounts)) == 0


async def test_incr_counts_from_zero_and_reads_back_as_decimal_text(store: Store) -> None:
    assert await store.incr("c", 5) == 5
    assert await store.incr("c", -7) == -2
    assert await store.get("c") == b"-2"
    await store.set("preset", b"40")
    assert await store.incr("preset", 2) == 42


async def test_incr_ttl_is_set_only_when_the_counter_is_created(store: Store) -> None:
    window_s = 0.2  # the next three calls must land inside it
    assert await store.incr("window", ttl_s=window_s) == 1
    # A later ttl neither extends nor replaces the window.
    assert await store.incr("window", ttl_s=LIVE_TTL_S) == 2
    assert await store.incr("window") == 3
    assert await store.incr("forever") == 1
    assert await store.incr("forever", ttl_s=EXPIRING_TTL_S) == 2
    await asyncio.sleep(window_s + AFTER_EXPIRY_S)
    assert await store.get("window") is None
    assert await store.get("forever") == b"2"
    assert await store.incr("window", ttl_s=LIVE_TTL_S) == 1


@pytest.mark.parametrize("value", [b"abc", b"1.5", b" 7", b"07", b""])
async def test_incr_refuses_a_value_that_is_not_a_counter(store: Store, value: bytes) -> None:
    await store.set("text", value)
    with pytest.raises(ValueError, match="not an integer"):
        await store.incr("text")
    assert await store.get("text") == value


@pytest.mark.parametrize("ttl_s", [0, -1, float("inf"), float("nan")])
async def test_ttl_must_be_positive_and_finite(store: Store, ttl_s: float) -> None:
    with pytest.raises(ValueError, match="ttl_s must be a positive number"):
        await store.set("k", b"v", ttl_s=ttl_s)
    with pytest.raises(ValueError, match="ttl_s must be a positive number"):
        await store.set_if_absent("k", b"v", ttl_s=ttl_s)
    with pytest.raises(ValueError, match="ttl_s must be a positive number"):
        await store.incr("k", ttl_s=ttl_s)
    assert await store.get("k") is None


async def test_append_and_read_log(store: Store) -> None:
    assert await store.read_log("ledger") == []
    assert [await store.append("ledger", f"r{i}".encode()) for i in range(1, 6)] == [1, 2, 3, 4, 5]
    assert await store.append("other", b"x") == 1
    everything = [(i, f"r{i}".encode()) for i in range(1, 6)]
    assert await store.read_log("ledger") == everything
    assert await store.read_log("ledger", after=2) == everything[2:]
    assert await store.read_log("ledger", after=1, limit=2) == everything[1:3]
    assert await store.read_log("ledger", after=5) == []
    assert await store.read_log("ledger", limit=0) == []
    assert await store.read_log("other") == [(1, b"x")]


async def test_a_dropped_log_is_gone_and_starts_again_at_one(store: Store) -> None:
    await store.append_many("segment-1", [b"a", b"b"])
    await store.append("segment-2", b"kept")
    await store.set("segment-1", b"a key of the same name")
    assert await store.drop_log("segment-1") is True
    assert await store.read_log("segment-1") == []
    assert await store.drop_log("segment-1") is False
    assert await store.append("segment-1", b"again") == 1
    assert await store.read_log("segment-2") == [(1, b"kept")]
    assert await store.get("segment-1") == b"a key of the same name"


async def test_logs_and_keys_do_not_share_names(store: Store) -> None:
    await store.append("name", b"record")
    assert await store.get("name") is None
    assert await store.scan("") == []
    await store.set("name", b"value")
    assert await store.read_log("name") == [(1, b"record")]


async def test_concurrent_appends_get_distinct_consecutive_numbers(store: Store) -> None:
    records = [f"r{i}".encode() for i in range(100)]
    seqs = await asyncio.gather(*(store.append("busy", record) for record in records))
    assert sorted(seqs) == list(range(1, 101))
    assert await store.read_log("busy", limit=1000) == sorted(zip(seqs, records, strict=True))


async def test_append_many_is_one_ordered_batch(store: Store) -> None:
    assert await store.append("batch", b"first") == 1
    assert await store.append_many("batch", [b"a", b"b", b"c"]) == 4
    assert await store.append_many("batch", []) == 4
    assert await store.read_log("batch") == [(1, b"first"), (2, b"a"), (3, b"b"), (4, b"c")]
    batches = [[f"{n}-{i}".encode() for i in range(10)] for n in range(20)]
    await asyncio.gather(*(store.append_many("many", batch) for batch in batches))
    rows = await store.read_log("many", limit=1000)
    assert [seq for seq, _ in rows] == list(range(1, 201))
    # Each batch lands contiguous and in order, whatever order the batches landed in.
    records = [record for _, record in rows]
    for start in range(0, 200, 10):
        prefix = records[start].split(b"-")[0]
        assert records[start : start + 10] == [prefix + f"-{i}".encode() for i in range(10)]


async def test_ping_and_close_twice(store: Store) -> None:
    await store.ping()
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get("k")
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.ping()
