"""Runs LLMEngine.step in a background thread; requests join and leave between steps.

HTTP handlers live on the asyncio loop and never touch the engine: they enqueue an
action (add or abort), and the engine thread applies all queued actions before each step,
then hands each step's outputs back to the handlers' queues with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Callable

from local_engine.engine.llm_engine import CompletionOutput, LLMEngine
from local_engine.errors import EngineError
from local_engine.sampling_params import SamplingParams

log = logging.getLogger("local_engine")


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._actions: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[object]]] = {}
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _submit(self, action: Callable[[], None]) -> None:
        with self._lock:
            self._actions.append(action)
        self._wake.set()

    def _deliver(self, request_id: str, item: object) -> None:
        target = self._queues.get(request_id)
        if target is not None:
            loop, queue = target
            loop.call_soon_threadsafe(queue.put_nowait, item)

    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, cache_salt: str = ""
    ) -> AsyncIterator[CompletionOutput]:
        """Outputs of one request until each of its n choices has finished."""
        request_id = uuid.uuid4().hex
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queues[request_id] = (asyncio.get_running_loop(), queue)

        def add() -> None:
            try:
                self.engine.add_request(request_id, prompt_token_ids, params, cache_salt)
            except EngineError as exc:
                self._deliver(request_id, _Failure(exc))

        self._submit(add)
        remaining = params.n
        try:
            while remaining:
                item = await queue.get()
                if isinstance(item, _Failure):
                    raise item.error
                assert isinstance(item, CompletionOutput)
                if item.finished:
                    remaining -= 1
                yield item
        finally:
            self._queues.pop(request_id, None)
            if remaining:  # the client went away or an error ended it: free its blocks now
                self._submit(lambda: self.engine.abort(request_id))

    def _run(self) -> None:
        while not self._stopping:
            if not self.engine.has_unfinished():
                self._wake.wait(timeout=1.0)
            self._wake.clear()
            with self._lock:
                actions, self._actions = self._actions, []
            for action in actions:
                action()
            if not self.engine.has_unfinished():
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # a bug must not kill the server: fail the requests in flight
                self.last_error = traceback.format_exc()
                log.error("engine step failed:\n%s", self.last_error)
                for request_id in list(self.engine.requests):
                    self.engine.abort(request_id)
                    self._deliver(request_id, _Failure(EngineError(f"engine step failed: {exc!r}")))
                continue
            for out in outputs:
                self._deliver(out.request_id, out)
