"""When each part of an answer goes out: latency, time to first token, tokens per second.

Sleeps target absolute times from the start of the stream, so a long stream does not
drift by the accumulated overhead of every event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.sim.faults import Controls
from gateway.sim.plan import StreamItem


async def sleep_until(deadline: float) -> None:
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


def generation_s(controls: Controls, completion_tokens: int) -> float:
    """How long a non-streamed answer takes after `latency_ms`: first token, then the rest."""
    seconds = controls.ttft_ms / 1000
    if controls.tokens_per_s > 0:
        seconds += completion_tokens / controls.tokens_per_s
    return seconds


def fault_index(items: Sequence[StreamItem]) -> int:
    """Where a mid-stream fault strikes: halfway through the generated content."""
    content = [i for i, item in enumerate(items) if item.tokens]
    return content[len(content) // 2] if content else min(1, len(items))


class Pacer:
    """Waits before each stream event until a real model would have produced it."""

    __slots__ = ("_controls", "_first_at", "_start", "_tokens_sent")

    def __init__(self, controls: Controls) -> None:
        self._controls = controls
        self._start = asyncio.get_running_loop().time()
        self._first_at: float | None = None
        self._tokens_sent = 0

    async def wait(self, item: StreamItem) -> None:
        if not item.tokens:
            return
        if self._first_at is None:
            self._first_at = self._start + self._controls.ttft_ms / 1000
            await sleep_until(self._first_at)
        elif self._controls.tokens_per_s > 0:
            await sleep_until(self._first_at + self._tokens_sent / self._controls.tokens_per_s)
        self._tokens_sent += item.tokens
