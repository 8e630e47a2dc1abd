"""The ledger loses no row: not to a killed process, a store outage, or a full memory.

Stores are real (SQLite in tmp_path, a real redis-server); an outage is either a stopped
Redis or a wrapper that refuses ledger writes while `down`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

import tests.conftest as shared
from gateway.accounting.ledger import LEDGER_LOG, Ledger, spool_dir_for
from gateway.config import Config
from gateway.store.base import Store, StoreUnavailable
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
FAST = {"flush_interval_s": 0.01, "retry_base_s": 0.01, "retry_max_s": 0.05}


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "ledger.db")
    yield store
    await store.aclose()


class FlakyStore:
    """A real store whose ledger writes fail while `down`, as a dead backend's would."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.down = False
        self.refused = 0
        self.gate: asyncio.Event | None = None  # when set, each write waits for it

    async def append_many(self, log: str, records: Sequence[bytes]) -> int:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            self.refused += 1
            raise StoreUnavailable("store is down (test)")
        return await self.inner.append_many(log, records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _row(tag: str, n: int) -> dict[str, Any]:
    return {"request_id": f"{tag}-{n}", "n": n, "cost_usd": "0.000123"}


async def _stored_ids(store: Store) -> list[str]:
    """Every request id in the raw log, duplicates included, oldest first."""
    return [orjson.loads(raw)["request_id"] for _, raw in await store.read_log(LEDGER_LOG, limit=1_000_000)]


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _spools(directory: Path) -> list[Path]:
    return sorted(directory.glob("ledger-*.spool"))


# -- the normal path ----------------------------------------------------------------------------


async def test_rows_are_on_disk_at_submit_stored_once_and_the_spool_goes_at_close(
    sqlite: SqliteStore, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    ledger = Ledger(sqlite, spool_dir=spool_dir, flush_interval_s=3600)
    await ledger.start()
    for n in range(10):
        ledger.submit(_row("ok", n))
    # Before any write to the store, each row is already a line in this process's spool.
    assert ledger.spool_path is not None
    assert ledger.spool_path.read_bytes().count(b'"request_id":"ok-') == 10
    assert await _stored_ids(sqlite) == []

    rows = await ledger.rows()
    assert [row["request_id"] for row in rows] == [f"ok-{n}" for n in range(10)]
    assert [row["seq"] for row in rows] == list(range(1, 11))
    assert rows[0] == {"seq": 1, **_row("ok", 0)}
    await ledger.aclose()
    assert await _stored_ids(sqlite) == [f"ok-{n}" for n in range(10)]
    assert list(spool_dir.iterdir()) == []


async def test_without_a_spool_the_ledger_still_writes() -> None:
    store = MemoryStore()
    ledger = Ledger(store)
    await ledger.start()
    ledger.submit(_row("mem", 1))
    assert [row["request_id"] for row in await ledger.rows()] == ["mem-1"]
    await ledger.aclose()


def test_spool_dir_defaults_beside_the_store() -> None:
    def config(**fields: Any) -> Config:
        return Config.model_validate(fields)

    assert spool_dir_for(config(store={"backend": "sqlite", "path": "data/t.db"})) == Path("data/t.db-spool")
    assert spool_dir_for(config(store={"backend": "redis"})) == Path("tollgate-spool")
    assert spool_dir_for(config(store={"backend": "memory"})) is None
    assert spool_dir_for(config(ledger={"spool": False})) is None
    assert spool_dir_for(config(ledger={"spool_dir": "/var/spool/tg"})) == Path("/var/spool/tg")


# -- reads ----------------------------------------------------------------------------------------


async def test_rows_show_each_request_once_the_first_copy(sqlite: SqliteStore) -> None:
    def raw(request_id: str, copy: int) -> bytes:
        return orjson.dumps({"request_id": request_id, "copy": copy})

    await sqlite.append_many(
        LEDGER_LOG, [raw("a", 1), raw("b", 1), raw("a", 2), raw("c", 1), raw("b", 2), raw("d", 1)]
    )
    ledger = Ledger(sqlite)
    everything = await ledger.rows()
    assert [(r["seq"], r["request_id"], r["copy"]) for r in everything] == [
        (1, "a", 1), (2, "b", 1), (4, "c", 1), (6, "d", 1),
    ]  # fmt: skip
    # A page is filled with distinct rows, so a short page still means the end of the log.
    assert [r["request_id"] for r in await ledger.rows(limit=3)] == ["a", "b", "c"]
    # A page is also checked against the rows before it: b's copy at seq 5 stays hidden.
    assert [r["request_id"] for r in await ledger.rows(after=4)] == ["d"]


# -- store outages -------------------------------------------------------------------------------


async def test_a_redis_outage_drops_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The server comes back on the same port, so the client just reconnects.
    port = shared.free_port()
    monkeypatch.setattr(shared, "free_port", lambda: port)
    namespace = f"test-{uuid.uuid4().hex}"
    with shared.running_redis(tmp_path / "redis-1") as url:
        store = RedisStore(url, 4, namespace=namespace)
        ledger = Ledger(store, spool_dir=tmp_path / "spool", **FAST)
        await ledger.start()
    try:
        for n in range(40):
            ledger.submit(_row("outage", n))
        with caplog.at_level(logging.WARNING, logger="tollgate.ledger"):
            await _until(lambda: _failed_writes(caplog, at_least=3))
        # One warning per failed write, not one per row.
        assert len([r for r in caplog.records if r.getMessage().startswith("ledger write failed")]) < 40
        with shared.running_redis(tmp_path / "redis-2"):
            await _until(lambda: _has_rows(store, 40))
            assert await _stored_ids(store) == [f"outage-{n}" for n in range(40)]
            await ledger.aclose()
    finally:
        await ledger.aclose()
        await store.aclose()
    assert _spools(tmp_path / "spool") == []


async def _failed_writes(caplog: pytest.LogCaptureFixture, *, at_least: int) -> bool:
    return sum(r.getMessage().startswith("ledger write failed") for r in caplog.records) >= at_least


async def _has_rows(store: Store, count: int) -> bool:
    try:
        return len(await _stored_ids(store)) >= count
    except StoreUnavailable:
        return False


async def test_a_backlog_past_the_memory_limit_waits_in_the_spool(
    sqlite: SqliteStore, tmp_path: Path
) -> None:
    flaky = FlakyStore(sqlite)
    flaky.down = True
    ledger = Ledger(cast(Store, flaky), spool_dir=tmp_path / "spool", max_pending_rows=100, **FAST)
    await ledger.start()
    for n in range(350):
        ledger.submit(_row("spill", n))
    await _until(lambda: _refused(flaky, 2))
    # Past the limit memory let go; the spool file is the only record now.
    assert ledger.pending_in_memory == 0
    assert ledger.spool_path is not None
    assert ledger.spool_path.read_bytes().count(b'"request_id":"spill-') == 350

    flaky.down = False
    await _until(lambda: _has_rows(sqlite, 350))
    await ledger.flush()  # the timer's write that stored them has finished too
    for n in range(350, 355):  # caught up: rows wait in memory again, as usual
        ledger.submit(_row("spill", n))
    assert ledger.pending_in_memory == 5
    await ledger.flush()
    assert await _stored_ids(sqlite) == [f"spill-{n}" for n in range(355)]
    await ledger.aclose()


async def _refused(flaky: FlakyStore, at_least: int) -> bool:
    return flaky.refused >= at_least


async def test_memory_letting_go_during_a_write_neither_loses_nor_repeats(
    sqlite: SqliteStore, tmp_path: Path
) -> None:
    flaky = FlakyStore(sqlite)
    flaky.gate = asyncio.Event()
    ledger = Ledger(
        cast(Store, flaky), spool_dir=tmp_path / "spool", max_pending_rows=10, flush_interval_s=3600
    )
    await ledger.start()
    for n in range(5):
        ledger.submit(_row("gate", n))
    writing = asyncio.create_task(ledger.flush())
    await asyncio.sleep(0.01)  # the flush took rows 0-4 and waits on the store
    for n in range(5, 30):
        ledger.submit(_row("gate", n))
    assert ledger.pending_in_memory == 0  # spilled while the write was in flight
    flaky.gate.set()
    await writing
    await ledger.flush()
    assert await _stored_ids(sqlite) == [f"gate-{n}" for n in range(30)]
    await ledger.aclose()


async def test_a_store_down_at_close_leaves_the_spool_for_the_next_start(
    sqlite: SqliteStore, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    flaky = FlakyStore(sqlite)
    flaky.down = True
    first = Ledger(cast(Store, flaky), spool_dir=spool_dir, **FAST)
    await first.start()
    for n in range(5):
        first.submit(_row("close", n))
    await first.aclose()
    assert len(_spools(spool_dir)) == 1
    assert await _stored_ids(sqlite) == []

    second = Ledger(sqlite, spool_dir=spool_dir, **FAST)
    await second.start()
    assert await _stored_ids(sqlite) == [f"close-{n}" for n in range(5)]
    assert _spools(spool_dir) == [second.spool_path]
    await second.aclose()


async def test_a_failing_spool_write_keeps_the_row_in_memory(
    sqlite: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(sqlite, spool_dir=tmp_path / "spool", flush_interval_s=3600)
    await ledger.start()
    real_write = os.write
    full = True

    def disk_full(fd: int, data: bytes) -> int:
        if full and b"request_id" in data:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", disk_full)
    for n in range(3):
        ledger.submit(_row("full", n))
    full = False
    await ledger.flush()
    assert await _stored_ids(sqlite) == ["full-0", "full-1", "full-2"]
    # Once everything was stored the spool started afresh, and takes rows again.
    ledger.submit(_row("full", 3))
    assert ledger.spool_path is not None
    assert b"full-3" in ledger.spool_path.read_bytes()
    await ledger.aclose()


# -- a process that died ---------------------------------------------------------------------------

_CHILD = """
import asyncio, sys
from pathlib import Path
from gateway.accounting.ledger import Ledger
from gateway.store.sqlite import SqliteStore

async def main() -> None:
    store = await SqliteStore.open(sys.argv[1])
    ledger = Ledger(store, spool_dir=Path(sys.argv[2]), flush_interval_s=3600)
    await ledger.start()
    for n in range(int(sys.argv[3])):
        ledger.submit({"request_id": f"child-{n}", "n": n})
    await ledger.flush()
    for n in range(int(sys.argv[3]), int(sys.argv[4])):
        ledger.submit({"request_id": f"child-{n}", "n": n})
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _start_child(db: Path, spool_dir: Path, flushed: int, total: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD), str(db), str(spool_dir), str(flushed), str(total)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


async def test_a_killed_process_spool_is_replayed_from_where_it_stopped(
    sqlite: SqliteStore, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    child = _start_child(tmp_path / "ledger.db", spool_dir, flushed=10, total=25)
    try:
        # Alive, its spool is locked: a neighbour starting on the same directory leaves it alone.
        neighbour = Ledger(sqlite, spool_dir=spool_dir, flush_interval_s=3600)
        await neighbour.start()
        assert await _stored_ids(sqlite) == [f"child-{n}" for n in range(10)]
        assert len(_spools(spool_dir)) == 2
    finally:
        child.kill()
        child.wait()
    assert child.stdout is not None
    child.stdout.close()

    heir = Ledger(sqlite, spool_dir=spool_dir, flush_interval_s=3600)
    await heir.start()
    # Only the 15 rows after the stored offset are replayed: no duplicates in the raw log.
    assert await _stored_ids(sqlite) == [f"child-{n}" for n in range(25)]
    assert sorted(_spools(spool_dir)) == sorted([neighbour.spool_path, heir.spool_path])
    await heir.aclose()
    await neighbour.aclose()
    assert list(spool_dir.iterdir()) == []


async def test_an_orphan_with_a_torn_last_line_replays_its_whole_lines(
    sqlite: SqliteStore, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    orphan = spool_dir / "ledger-1-dead.spool"
    # No valid header (as if cut short): the whole file is read; garbage and the torn line are skipped.
    orphan.write_bytes(
        b'{"request_id":"o-1"}\n{"request_id":"o-2"}\nnot json\n{"request_id":"o-3"}\n{"request_id":"o-'
    )
    ledger = Ledger(sqlite, spool_dir=spool_dir, flush_interval_s=3600)
    await ledger.start()
    assert await _stored_ids(sqlite) == ["o-1", "o-2", "o-3"]
    assert not orphan.exists()
    await ledger.aclose()


async def test_a_live_spool_held_by_another_descriptor_is_not_stolen(
    sqlite: SqliteStore, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    owner = Ledger(sqlite, spool_dir=spool_dir, flush_interval_s=3600)
    await owner.start()
    owner.submit(_row("live", 1))
    thief = Ledger(sqlite, spool_dir=spool_dir, flush_interval_s=3600)
    await thief.start()
    assert await _stored_ids(sqlite) == []
    assert owner.spool_path is not None and owner.spool_path.exists()
    await thief.aclose()
    await owner.flush()
    assert await _stored_ids(sqlite) == ["live-1"]
    await owner.aclose()


async def test_orphans_wait_for_a_store_that_is_down_at_start(sqlite: SqliteStore, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "ledger-1-dead.spool").write_bytes(b'{"request_id":"late-1"}\n')
    flaky = FlakyStore(sqlite)
    flaky.down = True
    ledger = Ledger(cast(Store, flaky), spool_dir=spool_dir, **FAST)
    await ledger.start()  # does not fail: the replay goes on in the background
    ledger.submit(_row("late", 2))
    flaky.down = False
    await _until(lambda: _has_rows(sqlite, 2))
    assert await _stored_ids(sqlite) == ["late-1", "late-2"]
    assert _spools(spool_dir) == [ledger.spool_path]
    await ledger.aclose()
