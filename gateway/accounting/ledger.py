"""The ledger: one row per request, written off the response path.

Rows go into an in-memory queue and a background task appends them to the store's
`ledger` log in batches, so a slow disk or a Redis hiccup never delays a response. On
shutdown the queue is drained.
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
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="ledger-writer")

    def submit(self, row: Mapping[str, Any]) -> None:
        self._queue.put_nowait(orjson.dumps(row))

    async def flush(self) -> None:
        await self._queue.join()

    async def _drain(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            for _ in batch:
                self._queue.task_done()

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
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=5)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
