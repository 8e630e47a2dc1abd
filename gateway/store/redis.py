"""The shared store: one Redis serves every gateway instance.

Keys live under `<namespace>:kv:<key>` and logs under `<namespace>:log:<name>`, so one
Redis can hold several deployments and `scan` never meets a log. Every read-modify-write
is a single command or a Lua script, so many clients on many hosts stay exact.

Commands are not retried: a write whose reply was lost may already have been applied,
and replaying an INCRBY or RPUSH would count it twice. The caller sees StoreUnavailable.

Reservations live under `<namespace>:ctr:<key>` (integer strings) and
`<namespace>:lease:<key>` (sorted sets, score = expiry in ms by the server's clock). Each
reservation operation is one Lua script, so its check and its charges are one atomic step
for every instance sharing the server.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gateway.store.base import CounterLimit, LeaseLimit, Reservation, StoreUnavailable
from gateway.store.common import check_charges, check_reservation, check_ttl, overflow

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

# Counters may hold any signed 64-bit integer, but Lua numbers are doubles, exact only up to
# 2^53 (9 million USD in nano-USD). So the scripts never turn a counter into one number:
# each value is split, from its decimal text, into hi * 10^9 + lo, two parts that stay
# exact through the few additions a reservation needs. INCRBY itself is exact; its reply
# (converted to a double) is never used.
_LUA_PRELUDE = """
local B = 1000000000
local function split(s)
  if not s then return 0, 0 end
  local sign = 1
  if string.sub(s, 1, 1) == '-' then
    sign = -1
    s = string.sub(s, 2)
  end
  local n = string.len(s)
  if n <= 9 then return 0, sign * tonumber(s) end
  return sign * tonumber(string.sub(s, 1, n - 9)), sign * tonumber(string.sub(s, n - 8))
end
local function norm(hi, lo)
  local carry = math.floor(lo / B)
  return hi + carry, lo - carry * B
end
local function fits(hi, lo)
  hi, lo = norm(hi, lo)
  if hi > 9223372036 or (hi == 9223372036 and lo > 854775807) then return false end
  return hi > -9223372037 or (hi == -9223372037 and lo >= 145224192)
end
local function read(n)
  local hi, lo, exists = {}, {}, {}
  if n > 0 then
    local raw = redis.call('MGET', unpack(KEYS, 1, n))
    for k = 1, n do
      hi[k], lo[k] = split(raw[k])
      exists[k] = raw[k] ~= false
    end
  end
  return hi, lo, exists
end
-- charges: {key index, amount text, ttl ms}. Every new value is checked before the first
-- write, because a script that fails halfway keeps its earlier writes.
local function charge(charges, hi, lo, exists)
  for _, c in ipairs(charges) do
    local ah, al = split(c[2])
    hi[c[1]], lo[c[1]] = hi[c[1]] + ah, lo[c[1]] + al
    if not fits(hi[c[1]], lo[c[1]]) then return c[1] end
  end
  for _, c in ipairs(charges) do
    if exists[c[1]] then
      redis.call('INCRBY', KEYS[c[1]], c[2])
    else
      -- The expiry is set only by the charge that creates the bucket: a fixed window.
      redis.call('SET', KEYS[c[1]], c[2], 'PX', c[3])
      exists[c[1]] = true
    end
  end
  return 0
end
"""

# KEYS: counter keys, then lease keys. ARGV: #counter keys, #limits, #leases; per limit:
# #buckets, bucket indexes, charge index, amount, limit ('' = none), ttl ms; per lease: key
# index, holder, limit, ttl ms. Reply: status (1 admitted, 0 refused, -1 overflow), the
# 1-based failed limit (counters, then leases) or overflowing key, then hi/lo per limit and
# a live count per lease.
_RESERVE = (
    _LUA_PRELUDE
    + """
local nk, nl, nls = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hi, lo, exists = read(nk)
local function usage(buckets)
  local h, l = 0, 0
  for _, k in ipairs(buckets) do
    h, l = h + hi[k], l + lo[k]
  end
  return h, l
end
local a, failed, limits, charges = 4, 0, {}, {}
for i = 1, nl do
  local nb = tonumber(ARGV[a])
  local buckets = {}
  for j = 1, nb do buckets[j] = tonumber(ARGV[a + j]) end
  a = a + nb + 1
  local key, amount, cap, ttl = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  limits[i] = buckets
  if failed == 0 and cap ~= '' then
    local uh, ul = usage(buckets)
    local ah, al = split(amount)
    local ch, cl = split(cap)
    local dh, dl = norm(uh + ah - ch, ul + al - cl)
    if dh > 0 or (dh == 0 and dl > 0) then failed = i end
  end
  if amount ~= '0' then charges[#charges + 1] = {key, amount, ttl} end
end
-- The server's clock, so the instances' clocks never matter (7.0 replicates effects).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, pending, taking, takes = {}, {}, {}, {}
for j = 1, nls do
  local k, holder, cap, ttl = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  if base[k] == nil then
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    base[k] = redis.call('ZCARD', KEYS[k])
    pending[k], taking[k] = 0, {}
  end
  -- A holder that already has a live lease renews it without needing a second slot.
  if failed == 0 and not taking[k][holder] and not redis.call('ZSCORE', KEYS[k], holder) then
    if base[k] + pending[k] >= cap then
      failed = nl + j
    else
      taking[k][holder] = true
      pending[k] = pending[k] + 1
    end
  end
  takes[j] = {k, holder, ttl}
end
local out = {1, 0}
if failed ~= 0 then
  out[1], out[2] = 0, failed
else
  local over = charge(charges, hi, lo, exists)
  if over ~= 0 then return {-1, over} end
  for _, take in ipairs(takes) do
    local key, ttl = KEYS[take[1]], take[3]
    redis.call('ZADD', key, now + ttl, take[2])
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  end
end
for i = 1, nl do
  local h, l = norm(usage(limits[i]))
  out[#out + 1] = h
  out[#out + 1] = l
end
for _, take in ipairs(takes) do
  out[#out + 1] = redis.call('ZCARD', KEYS[take[1]])
end
return out
"""
)

# KEYS: the counters. ARGV: #keys, then per charge: key index, amount, ttl ms.
# Reply: 0, or the 1-based index of a key that would overflow (then nothing was written).
_ADJUST = (
    _LUA_PRELUDE
    + """
local hi, lo, exists = read(tonumber(ARGV[1]))
local charges = {}
for i = 2, #ARGV, 3 do
  charges[#charges + 1] = {tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]}
end
return charge(charges, hi, lo, exists)
"""
)

# KEYS: the lease keys. ARGV: per lease: key index, holder.
_RELEASE = """
for i = 1, #ARGV, 2 do
  redis.call('ZREM', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
end
return 0
"""


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Keys:
    """Distinct keys in first-seen order, each named in ARGV by its 1-based KEYS index."""

    def __init__(self, offset: int = 0) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self._offset = offset

    def slot(self, key: str) -> int:
        index = self._index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._index[key] = len(self.keys) + self._offset
        return index


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


_RESERVE_SCRIPT = _Script(_RESERVE)
_ADJUST_SCRIPT = _Script(_ADJUST)
_RELEASE_SCRIPT = _Script(_RELEASE)


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
        self._ctr_prefix = f"{namespace}:ctr:"
        self._lease_prefix = f"{namespace}:lease:"
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

    async def drop_log(self, log: str) -> bool:
        with self._translated():
            return int(await self._client.delete(self._log_prefix + log)) > 0

    async def ping(self) -> None:
        with self._translated():
            await self._client.ping()

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # The server forgot the script (restart, failover, SCRIPT FLUSH). NOSCRIPT means
            # nothing ran, so running it once by EVAL is safe, and caches it again.
            return await self._client.eval(script.source, len(keys), *keys, *args)

    async def reserve(self, limits: Sequence[CounterLimit], leases: Sequence[LeaseLimit] = ()) -> Reservation:
        check_reservation(limits, leases)
        if not limits and not leases:
            return Reservation(True, None, (), ())
        counters = _Keys()
        limit_args: list[str | int] = []
        for limit in limits:
            limit_args.append(len(limit.buckets))
            limit_args.extend(counters.slot(self._ctr_prefix + key) for key in limit.buckets)
            limit_args.append(counters.slot(self._ctr_prefix + limit.charge_key))
            cap = "" if limit.limit is None else str(limit.limit)
            limit_args += [str(limit.amount), cap, _ttl_ms(limit.ttl_s)]
        lease_keys = _Keys(offset=len(counters.keys))
        lease_args: list[str | int] = []
        for lease in leases:
            slot = lease_keys.slot(self._lease_prefix + lease.key)
            lease_args += [slot, lease.holder, str(lease.limit), _ttl_ms(lease.ttl_s)]
        args = [len(counters.keys), len(limits), len(leases), *limit_args, *lease_args]
        with self._translated():
            raw = await self._eval(_RESERVE_SCRIPT, counters.keys + lease_keys.keys, args)
        reply = [int(item) for item in raw]
        status, failed_at = reply[0], reply[1]
        if status == -1:
            raise overflow(counters.keys[failed_at - 1][len(self._ctr_prefix) :])
        parts = reply[2 : 2 + 2 * len(limits)]
        usage = tuple(hi * 1_000_000_000 + lo for hi, lo in zip(parts[::2], parts[1::2], strict=True))
        names = [limit.name for limit in limits] + [lease.name for lease in leases]
        failed = names[failed_at - 1] if failed_at else None
        return Reservation(status == 1, failed, usage, tuple(reply[2 + 2 * len(limits) :]))

    async def adjust(self, charges: Sequence[tuple[str, int, float]]) -> None:
        check_charges(charges)
        keys = _Keys()
        args: list[str | int] = []
        for key, amount, ttl_s in charges:
            if amount != 0:  # a zero charge would only create an empty bucket
                args += [keys.slot(self._ctr_prefix + key), str(amount), _ttl_ms(ttl_s)]
        if not args:
            return
        with self._translated():
            over = int(await self._eval(_ADJUST_SCRIPT, keys.keys, [len(keys.keys), *args]))
        if over:
            raise overflow(keys.keys[over - 1][len(self._ctr_prefix) :])

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        keys = _Keys()
        args: list[str | int] = []
        for key, holder in leases:
            args += [keys.slot(self._lease_prefix + key), holder]
        if args:
            with self._translated():
                await self._eval(_RELEASE_SCRIPT, keys.keys, args)

    async def counters(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        with self._translated():
            values: list[Any] = await self._client.mget([self._ctr_prefix + key for key in keys])
        return [0 if value is None else int(value) for value in values]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
