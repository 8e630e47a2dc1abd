"""Reservations stay exact when many gateways share one backend: two handles in one process,
two OS processes, a server that lost its script cache."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.store.base import CounterLimit, LeaseLimit, Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]
LIMIT = 50
CALLS_PER_GATEWAY = 200

# One gateway: opens its own handle, says it is ready, waits for the word, then fires its
# reservations all at once and prints how many were admitted.
GATEWAY = """
import asyncio, sys
from gateway.store.base import CounterLimit, LeaseLimit

async def main() -> None:
    backend, where, namespace, calls, limit = sys.argv[1:6]
    if backend == "redis":
        from gateway.store.redis import RedisStore
        store = RedisStore(where, 8, namespace=namespace)
    else:
        from gateway.store.sqlite import SqliteStore
        store = await SqliteStore.open(where)
    await store.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    budget = CounterLimit("rpm", ("rpm:1", "rpm:2"), "rpm:2", 1, int(limit), 60.0)
    results = await asyncio.gather(*(store.reserve([budget]) for _ in range(int(calls))))
    print(sum(r.admitted for r in results), flush=True)
    await store.aclose()

asyncio.run(main())
"""


def budget() -> CounterLimit:
    return CounterLimit("rpm", ("rpm:1", "rpm:2"), "rpm:2", 1, LIMIT, 60.0)


def run_gateways(backend: str, where: str, namespace: str, count: int) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", GATEWAY, backend, where, namespace, str(CALLS_PER_GATEWAY), str(LIMIT)]
    children = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        for _ in range(count)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        # Every gateway is connected before any starts, so their reservations overlap.
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        admitted = []
        for child in children:
            out, _ = child.communicate(timeout=60)
            assert child.returncode == 0
            admitted.append(int(out.strip()))
        return admitted
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


async def reserve_from(stores: list[Store]) -> list[bool]:
    calls = [store.reserve([budget()]) for store in stores for _ in range(CALLS_PER_GATEWAY)]
    return [result.admitted for result in await asyncio.gather(*calls)]


@pytest.mark.anyio
async def test_two_redis_instances_admit_exactly_the_limit(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    stores: list[Store] = [RedisStore(redis_url, 8, namespace=namespace) for _ in range(2)]
    try:
        assert sum(await reserve_from(stores)) == LIMIT
        assert await stores[1].counters(["rpm:1", "rpm:2"]) == [0, LIMIT]
        leases = [LeaseLimit("conc", "team", f"r{i}", 5, 60.0) for i in range(40)]
        results = await asyncio.gather(
            *(stores[i % 2].reserve([], [lease]) for i, lease in enumerate(leases))
        )
        assert sum(r.admitted for r in results) == 5
    finally:
        for store in stores:
            await store.aclose()


def test_two_redis_gateway_processes_admit_exactly_the_limit(redis_url: str) -> None:
    admitted = run_gateways("redis", redis_url, f"test-{uuid.uuid4().hex}", 2)
    assert sum(admitted) == LIMIT, admitted


@pytest.mark.anyio
async def test_two_sqlite_handles_admit_exactly_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    stores: list[Store] = [await SqliteStore.open(path), await SqliteStore.open(path)]
    try:
        assert sum(await reserve_from(stores)) == LIMIT
        assert await stores[0].counters(["rpm:2"]) == [LIMIT]
    finally:
        for store in stores:
            await store.aclose()


def test_two_sqlite_gateway_processes_admit_exactly_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    admitted = run_gateways("sqlite", str(path), "", 2)
    assert sum(admitted) == LIMIT, admitted


@pytest.mark.anyio
async def test_redis_keys_are_namespaced_and_expire(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    store = RedisStore(redis_url, 4, namespace=namespace)
    raw = Redis.from_url(redis_url)
    try:
        await store.reserve([budget()], [LeaseLimit("conc", "team", "r1", 5, 30.0)])
        await store.adjust([("settle", 5, 90.0)])
        keys = sorted([key.decode() async for key in raw.scan_iter(match=f"{namespace}:*")])
        assert keys == [f"{namespace}:ctr:rpm:2", f"{namespace}:ctr:settle", f"{namespace}:lease:team"]
        assert 59_000 < await raw.pttl(f"{namespace}:ctr:rpm:2") <= 60_000
        assert 89_000 < await raw.pttl(f"{namespace}:ctr:settle") <= 90_000
        assert 29_000 < await raw.pttl(f"{namespace}:lease:team") <= 30_000
        # A longer lease stretches the set's expiry to cover it; a shorter one never cuts it.
        await store.reserve([], [LeaseLimit("conc", "team", "r2", 5, 120.0)])
        await store.reserve([], [LeaseLimit("conc", "team", "r3", 5, 1.0)])
        assert 119_000 < await raw.pttl(f"{namespace}:lease:team") <= 120_000
    finally:
        await store.aclose()
        await raw.aclose()


@pytest.mark.anyio
async def test_redis_reruns_a_script_the_server_forgot(redis_url: str) -> None:
    store = RedisStore(redis_url, 4, namespace=f"test-{uuid.uuid4().hex}")
    raw = Redis.from_url(redis_url)
    try:
        assert (await store.reserve([budget()])).usage == (1,)
        await raw.script_flush()
        assert (await store.reserve([budget()])).usage == (2,)
        await raw.script_flush()
        await store.adjust([("rpm:2", 3, 60.0)])
        await raw.script_flush()
        await store.release([("team", "r1")])
        assert await store.counters(["rpm:2"]) == [5]
    finally:
        await store.aclose()
        await raw.aclose()


@pytest.mark.anyio
async def test_a_cancelled_sqlite_reservation_leaves_no_transaction_open(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "cancel.db")
    try:
        calls = [asyncio.ensure_future(store.reserve([budget()])) for _ in range(20)]
        await asyncio.sleep(0)
        for call in calls[::2]:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        done = sum(1 for call in calls if not call.cancelled())
        # A call cancelled once its transaction had started still completed it: the count
        # is at least what the callers saw, and the store keeps working.
        (charged,) = await store.counters(["rpm:2"])
        assert done <= charged <= 20
        assert (await store.reserve([budget()])).usage == (charged + 1,)
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_sqlite_deletes_expired_counters_and_leases_on_open(tmp_path: Path) -> None:
    path = tmp_path / "sweep.db"
    store = await SqliteStore.open(path)
    await store.reserve(
        [
            CounterLimit("gone", ("gone",), "gone", 1, None, 0.05),
            CounterLimit("kept", ("kept",), "kept", 1, None, 60),
        ],
        [LeaseLimit("conc", "team", "dead", 1, 0.05), LeaseLimit("conc", "other", "live", 1, 60)],
    )
    await store.aclose()
    await asyncio.sleep(0.1)
    await (await SqliteStore.open(path)).aclose()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT key, value FROM counters").fetchall() == [("kept", 1)]
        assert raw.execute("SELECT key, holder FROM leases").fetchall() == [("other", "live")]
    raw.close()
