"""How gateway instances share the batch path's background work through the store.

A lease is a key taken with `set_if_absent` and a TTL: while one instance holds it no other
starts the same work, and a holder that dies lets it lapse after `ttl_s`. A live holder
renews it in the background while its work runs, and may check it explicitly before a step
it must not take once another instance has taken over (`check`, which raises `LeaseLost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gateway.store.base import Store


class LeaseLost(Exception):
    """Another instance holds the lease now: stop before the next step."""


class Leases:
    def __init__(self, store: Store, prefix: str, ttl_s: float) -> None:
        self.store = store
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.token = secrets.token_hex(6).encode()  # this instance

    async def run(self, name: str, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` holding the lease `name`; False (and `work` never started) when another
        instance holds it."""
        key = self.prefix + name
        if not await self.store.set_if_absent(key, self.token, ttl_s=self.ttl_s):
            work.close()
            return False
        renewing = asyncio.get_running_loop().create_task(self._renew(key))
        try:
            await work
        finally:
            renewing.cancel()
            if await self.store.get(key) == self.token:
                await self.store.delete(key)
        return True

    async def check(self, name: str) -> None:
        """Raise LeaseLost unless this instance still holds `name`."""
        if await self.store.get(self.prefix + name) != self.token:
            raise LeaseLost(name)

    async def _renew(self, key: str) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            with contextlib.suppress(Exception):
                if await self.store.get(key) == self.token:
                    await self.store.set(key, self.token, ttl_s=self.ttl_s)


async def every(
    interval_s: float, wake: asyncio.Event, step: Callable[[], Awaitable[None]], log: logging.Logger
) -> None:
    """Run `step` now and then every `interval_s` (sooner when `wake` is set), until cancelled;
    a failed step is logged and tried again next time."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background batch work failed; trying again")
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval_s)
