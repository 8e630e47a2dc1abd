"""The ledger: one row per request, written off the response path.

Rows are gathered in memory and a background timer appends them to the store's `ledger`
log in batches, so a slow disk or a Redis hiccup never delays a response. On shutdown
what is left is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("tollgate.ledger")
LEDGER_LOG = "ledger"
_BATCH = 256


class Ledger:
    """Rows are collected in memory and written every `flush_interval_s`, many per round trip.

    Waking a writer task for every request would cost more than the row itself; a timer
    that drains whatever has gathered costs the same at 1 or 10,000 requests a second.
    """

    def __init__(self, store: Store, *, flush_interval_s: float = 0.05) -> None:
        self._store = store
        self._interval = flush_interval_s
        self._pending: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    def submit(self, row: Mapping[str, Any]) -> None:
        # An exact-size copy: orjson's result keeps a multi-KiB allocation behind a short row,
        # which adds up across the rows waiting for the next write.
        self._pending.append(bytes(memoryview(orjson.dumps(row))))

    async def flush(self) -> None:
        """Write everything submitted so far (in order, under one lock)."""
        async with self._lock:
            while self._pending:
                batch = self._pending[:_BATCH]
                await self._write(batch)
                # Removed only once written: rows submitted meanwhile were appended after it.
                del self._pending[: len(batch)]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._pending:
                await self.flush()

    async def _write(self, batch: list[bytes]) -> None:
        for attempt in range(5):
            try:
                await self._store.append_many(LEDGER_LOG, batch)
                return
            except StoreUnavailable as err:
                log.warning("ledger write failed, retrying", extra={"error": str(err), "attempt": attempt})
                await asyncio.sleep(0.2 * 2**attempt)
        log.error("ledger rows dropped after retries", extra={"rows": len(batch)})

    async def rows(self, *, after: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        await self.flush()
        return [{"seq": seq, **orjson.loads(raw)} for seq, raw in await self._store.read_log(LEDGER_LOG, after=after, limit=limit)]

    async def aclose(self) -> None:
        if self._task is None:
            return
        # Let a write in flight finish before stopping the timer, so no batch is cut in half.
        async with self._lock:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=10)
