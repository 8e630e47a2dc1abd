"""Opening the configured store. Backends are imported on demand, so a gateway that
never uses Redis does not pay for importing its client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.store.base import Store, StoreUnavailable

if TYPE_CHECKING:
    from gateway.config import StoreConfig

__all__ = ["Store", "StoreUnavailable", "open_store"]


async def open_store(config: StoreConfig) -> Store:
    """A ready store for the configured backend, or StoreUnavailable naming the file or URL.

    A Redis store is pinged before it is returned, so a wrong URL fails at startup rather
    than on the first request.
    """
    if config.backend == "memory":
        from gateway.store.memory import MemoryStore

        return MemoryStore()
    if config.backend == "sqlite":
        from gateway.store.sqlite import SqliteStore

        return await SqliteStore.open(config.path)
    from gateway.store.redis import RedisStore

    store = RedisStore(config.url, config.max_connections)
    try:
        await store.ping()
    except BaseException:
        await store.aclose()
        raise
    return store
