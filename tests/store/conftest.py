from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore

OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens a new handle on this test's backend; handles opened twice share the data
    (except memory, which lives in one object)."""
    if request.param == "memory":

        async def open_memory() -> Store:
            return MemoryStore()

        return open_memory
    if request.param == "sqlite":
        path = tmp_path / "store.db"

        async def open_sqlite() -> Store:
            return await SqliteStore.open(path)

        return open_sqlite
    url: str = request.getfixturevalue("redis_url")
    # A fresh namespace per test isolates it from every other test on the shared server.
    namespace = f"test-{uuid.uuid4().hex}"

    async def open_redis() -> Store:
        return RedisStore(url, 16, namespace=namespace)

    return open_redis


@pytest.fixture
async def store(open_backend: OpenStore) -> AsyncIterator[Store]:
    opened = await open_backend()
    yield opened
    await opened.aclose()
