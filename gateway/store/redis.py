"""The shared store: one Redis serves every gateway instance.

Keys live under `<namespace>:kv:<key>` and logs under `<namespace>:log:<name>`, so one
Redis can hold several deployments and `scan` never meets a log. Every read-modify-write
is a single command or a Lua script, so many clients on many hosts stay exact.

Commands are not retried: a write whose reply was lost may already have been applied,
and replaying an INCRBY or RPUSH would count it twice. The caller sees StoreUnavailable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError, ResponseError

from gateway.store.base import StoreUnavailable
from gateway.store.common import check_ttl

_CONNECT_TIMEOUT_S = 5.0
_COMMAND_TIMEOUT_S = 10.0
_SCAN_BATCH = 1000

# The TTL is applied only when this call created the counter: a fixed window that later
# increments cannot extend. EXISTS and INCRBY run atomically inside the script.
_INCR_WITH_TTL = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""


def escape_glob(text: str) -> str:
    """Make text match itself literally in a Redis MATCH pattern."""
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


def redact_url(url: str) -> str:
    """The URL without its password, fit for an error message or a log line."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<unparseable redis url>"


def _as_bytes(value: bytes | str) -> bytes:
    # The client is built with decode_responses off, so str never arrives; the types allow it.
    return value if isinstance(value, bytes) else value.encode()


def _ttl_ms(ttl_s: float) -> int:
    return max(1, math.ceil(ttl_s * 1000))


class RedisStore:
    backend = "redis"

    def __init__(self, url: str, max_connections: int = 64, *, namespace: str = "tollgate") -> None:
        """Connects lazily; call `ping()` to find out now whether the server answers."""
        self._where = redact_url(url)
        try:
            # The blocking pool makes callers wait for a free connection; the default pool
            # raises "Too many connections" as soon as the limit is reached.
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                socket_connect_timeout=_CONNECT_TIMEOUT_S,
                socket_timeout=_COMMAND_TIMEOUT_S,
            )
        except ValueError as err:
            raise StoreUnavailable(f"invalid redis url {self._where}: {err}") from None
        self._client: Redis = Redis.from_pool(pool)
        self._kv_prefix = f"{namespace}:kv:"
        self._log_prefix = f"{namespace}:log:"
        self._incr_with_ttl = self._client.register_script(_INCR_WITH_TTL)
        self._closed = False

    @contextmanager
    def _translated(self) -> Iterator[None]:
        if self._closed:
            raise StoreUnavailable(f"redis store at {self._where} is closed")
        try:
            yield
        except ResponseError as err:
            message = str(err)
            if "not an integer" in message or "overflow" in message:
                raise ValueError(f"redis at {self._where}: {message}") from None
            raise StoreUnavailable(f"redis at {self._where} refused the command: {message}") from err
        except RedisError as err:
            raise StoreUnavailable(f"redis at {self._where} is unavailable: {err}") from err

    def _kv(self, key: str) -> str:
        return self._kv_prefix + key

    async def get(self, key: str) -> bytes | None:
        with self._translated():
            value = await self._client.get(self._kv(key))
        return None if value is None else _as_bytes(value)

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        check_ttl(ttl_s)
        with self._translated():
            await self._client.set(self._kv(key), value, px=None if ttl_s is None else _ttl_ms(ttl_s))

    async def set_if_absent(self, key: str, value: bytes, *, ttl_s: float | None = None) -> bool:
        check_ttl(ttl_s)
        px = None if ttl_s is None else _ttl_ms(ttl_s)
        with self._translated():
            return bool(await self._client.set(self._kv(key), value, nx=True, px=px))

    async def delete(self, key: str) -> bool:
        with self._translated():
            return int(await self._client.delete(self._kv(key))) > 0

    async def scan(self, prefix: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        if limit <= 0:
            return []
        full_prefix = self._kv(prefix)
        pattern = escape_glob(full_prefix) + "*"
        skip = len(self._kv_prefix)
        with self._translated():
            # SCAN returns keys in hash order, so every match is collected before sorting.
            keys: set[bytes] = set()
            async for raw in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
                keys.add(raw)
            ordered = sorted(keys)
            found: list[tuple[str, bytes]] = []
            # A key may expire between SCAN and MGET; read on until limit live pairs are found.
            for start in range(0, len(ordered), limit):
                batch = ordered[start : start + limit]
                values: list[Any] = await self._client.mget(batch)
                for raw, value in zip(batch, values, strict=True):
                    if value is not None:
                        found.append((raw.decode()[skip:], _as_bytes(value)))
                if len(found) >= limit:
                    break
            return found[:limit]

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        check_ttl(ttl_s)
        with self._translated():
            if ttl_s is None:
                return int(await self._client.incrby(self._kv(key), amount))
            return int(await self._incr_with_ttl(keys=[self._kv(key)], args=[amount, _ttl_ms(ttl_s)]))

    async def append(self, log: str, record: bytes) -> int:
        # A log is a list that is never trimmed: RPUSH is atomic and returns the new length,
        # which is exactly the record's sequence number.
        with self._translated():
            return int(await self._client.rpush(self._log_prefix + log, record))

    async def append_many(self, log: str, records: Sequence[bytes]) -> int:
        if not records:
            return await self._log_length(log)
        with self._translated():
            return int(await self._client.rpush(self._log_prefix + log, *records))

    async def _log_length(self, log: str) -> int:
        with self._translated():
            return int(await self._client.llen(self._log_prefix + log))

    async def read_log(self, log: str, *, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        start = max(after, 0)
        if limit <= 0:
            return []
        with self._translated():
            records = await self._client.lrange(self._log_prefix + log, start, start + limit - 1)
        return [(start + i + 1, _as_bytes(record)) for i, record in enumerate(records)]

    async def ping(self) -> None:
        with self._translated():
            await self._client.ping()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
