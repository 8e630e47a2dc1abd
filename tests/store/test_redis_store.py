"""What only the Redis backend promises: many clients share one exact state."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid

import pytest

from gateway.config import StoreConfig
from gateway.store import open_store
from gateway.store.base import StoreUnavailable
from gateway.store.redis import RedisStore

pytestmark = pytest.mark.anyio


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_two_clients_see_each_others_writes_and_count_exactly(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    one, two = RedisStore(redis_url, 8, namespace=namespace), RedisStore(redis_url, 8, namespace=namespace)
    try:
        await one.set("key:abc", b"team-a")
        assert await two.get("key:abc") == b"team-a"
        assert await two.set_if_absent("key:abc", b"team-b") is False
        assert await two.delete("key:abc") is True
        assert await one.get("key:abc") is None

        await asyncio.gather(*(store.incr("spent", 3) for store in (one, two) for _ in range(150)))
        assert await one.get("spent") == b"900"
        seqs = await asyncio.gather(
            *(store.append("ledger", b"r") for store in (one, two) for _ in range(50))
        )
        assert sorted(seqs) == list(range(1, 101))
        assert len(await two.read_log("ledger")) == 100
    finally:
        await one.aclose()
        await two.aclose()


async def test_namespaces_do_not_see_each_other(redis_url: str) -> None:
    blue = RedisStore(redis_url, 2, namespace=f"blue-{uuid.uuid4().hex}")
    green = RedisStore(redis_url, 2, namespace=f"green-{uuid.uuid4().hex}")
    try:
        await blue.set("k", b"blue")
        await blue.append("log", b"blue")
        assert await green.get("k") is None
        assert await green.scan("") == []
        assert await green.read_log("log") == []
    finally:
        await blue.aclose()
        await green.aclose()


async def test_more_callers_than_connections_wait_for_one(redis_url: str) -> None:
    store = RedisStore(redis_url, 2, namespace=f"test-{uuid.uuid4().hex}")
    try:
        results = await asyncio.gather(*(store.incr("n") for _ in range(100)))
        assert sorted(results) == list(range(1, 101))
    finally:
        await store.aclose()


async def test_an_unreachable_server_is_reported_with_its_url() -> None:
    url = f"redis://127.0.0.1:{unused_port()}/0"
    store = RedisStore(url)
    try:
        with pytest.raises(
            StoreUnavailable, match=f"^redis at {re.escape(url)} is unavailable: Error 111 connecting"
        ):
            await store.ping()
        with pytest.raises(StoreUnavailable, match=f"^redis at {re.escape(url)} is unavailable"):
            await store.incr("n")
    finally:
        await store.aclose()


async def test_the_password_never_appears_in_an_error() -> None:
    port = unused_port()
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("k")
        assert str(caught.value).startswith(f"redis at redis://:***@127.0.0.1:{port}/0 is unavailable")
        assert "hunter2" not in str(caught.value)
    finally:
        await store.aclose()


async def test_a_url_that_is_not_redis_is_refused() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        RedisStore("http://127.0.0.1:6379")
    assert str(caught.value).startswith("invalid redis url http://127.0.0.1:6379: ")


async def test_open_store_pings_redis_before_returning(redis_url: str) -> None:
    store = await open_store(StoreConfig(backend="redis", url=redis_url, max_connections=4))
    try:
        assert store.backend == "redis"
        await store.ping()
    finally:
        await store.aclose()
    dead = f"redis://127.0.0.1:{unused_port()}/0"
    with pytest.raises(StoreUnavailable, match=f"^redis at {re.escape(dead)} is unavailable"):
        await open_store(StoreConfig(backend="redis", url=dead))
