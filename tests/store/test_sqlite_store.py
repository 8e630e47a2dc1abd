"""What only the SQLite backend promises: the data outlives the process that wrote it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.config import StoreConfig
from gateway.store import open_store
from gateway.store.base import StoreUnavailable
from gateway.store.sqlite import SCHEMA_VERSION, SqliteStore

pytestmark = pytest.mark.anyio


async def test_a_restart_keeps_keys_counters_logs_and_deadlines(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.db"
    first = await SqliteStore.open(path)
    await first.set("key:abc", b"team-a")
    await first.set("cache:1", b"answer", ttl_s=0.3)
    await first.set("cache:2", b"answer", ttl_s=60)
    assert await first.incr("budget:team-a", 250, ttl_s=60) == 250
    assert await first.append("ledger", b"r1") == 1
    assert await first.append("ledger", b"r2") == 2
    await first.aclose()

    second = await SqliteStore.open(path)
    try:
        assert await second.get("key:abc") == b"team-a"
        assert await second.get("cache:1") == b"answer"
        assert await second.incr("budget:team-a", 50) == 300
        assert await second.append("ledger", b"r3") == 3
        assert await second.read_log("ledger") == [(1, b"r1"), (2, b"r2"), (3, b"r3")]
        await asyncio.sleep(0.35)
        assert await second.get("cache:1") is None
        assert await second.get("cache:2") == b"answer"
    finally:
        await second.aclose()


async def test_two_handles_on_one_file_stay_exact(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one, two = await SqliteStore.open(path), await SqliteStore.open(path)
    try:
        await asyncio.gather(*(store.incr("n") for store in (one, two) for _ in range(100)))
        seqs = await asyncio.gather(*(store.append("log", b"x") for store in (one, two) for _ in range(50)))
        assert await one.get("n") == b"200"
        assert sorted(seqs) == list(range(1, 101))
    finally:
        await one.aclose()
        await two.aclose()


async def test_expired_rows_are_deleted_from_the_file_on_open(tmp_path: Path) -> None:
    path = tmp_path / "sweep.db"
    store = await SqliteStore.open(path)
    await store.set("gone", b"v", ttl_s=0.1)
    await store.set("kept", b"v")
    await store.aclose()
    await asyncio.sleep(0.15)
    await (await SqliteStore.open(path)).aclose()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT key FROM kv").fetchall() == [("kept",)]
    raw.close()


async def test_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "tollgate.db"
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(StoreConfig(backend="sqlite", path=str(path)))
    assert str(caught.value) == f"cannot open sqlite store at {path}: unable to open database file"


async def test_a_file_that_is_not_a_database_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages you are looking for" * 100)
    with pytest.raises(StoreUnavailable) as caught:
        await SqliteStore.open(path)
    assert str(caught.value) == f"cannot open sqlite store at {path}: file is not a database"


async def test_a_file_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreUnavailable) as caught:
        await SqliteStore.open(path)
    assert str(caught.value) == (
        f"sqlite store at {path} has schema version {SCHEMA_VERSION + 1};"
        f" this build understands up to {SCHEMA_VERSION}"
    )


async def test_open_store_builds_the_configured_backend(tmp_path: Path) -> None:
    for config in (StoreConfig(backend="memory"), StoreConfig(backend="sqlite", path=str(tmp_path / "s.db"))):
        store = await open_store(config)
        try:
            assert store.backend == config.backend
            await store.set("k", b"v")
            assert await store.get("k") == b"v"
        finally:
            await store.aclose()
