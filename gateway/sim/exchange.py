"""One HTTP request/response over raw ASGI, with the misbehaviours a simulator needs.

Besides answering and streaming, it can wait for the client to give up (a request that
never answers) and drop the connection without a complete response (a reset).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway.errors import InvalidRequest

_JSON = "application/json"
_NOT_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library "
    "correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON."
)
# After closing a socket, how long to wait for the server to notice before giving up waiting.
_DROP_GRACE_S = 1.0


class Exchange:
    __slots__ = ("_body_read", "_gone", "_receive", "_send", "_watcher", "headers", "query", "started")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.query: str = scope.get("query_string", b"").decode("latin-1")
        self.started = False
        self._receive = receive
        self._send = send
        self._gone = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._body_read = False

    async def json_body(self) -> dict[str, Any]:
        try:
            body = orjson.loads(await self.body())
        except orjson.JSONDecodeError:
            raise InvalidRequest(_NOT_JSON) from None
        if not isinstance(body, dict):
            raise InvalidRequest(_NOT_JSON)
        return body

    async def body(self) -> bytes:
        """The whole request body, as sent (an upload is read into memory)."""
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone.set()
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self._body_read = True
        return b"".join(chunks)

    async def respond(
        self, status: int, body: bytes, headers: Mapping[str, str] | None = None, content_type: str = _JSON
    ) -> None:
        raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": raw})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def respond_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        await self.respond(status, orjson.dumps(payload), headers)

    async def start_stream(self, headers: Mapping[str, str]) -> None:
        raw = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
        self.started = True
        await self._send({"type": "http.response.start", "status": 200, "headers": raw})
        # The body is read, so the next receive() returns only when the client disconnects.
        self._watcher = asyncio.ensure_future(self._watch())

    async def write(self, data: bytes) -> bool:
        """Send one event; False once the client has gone."""
        if self._gone.is_set():
            return False
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        return True

    async def end_stream(self) -> None:
        try:
            if not self._gone.is_set():
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.stop_watching()

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone.set()
                return

    def stop_watching(self) -> None:
        """Stop listening for a disconnect; safe to call more than once."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def wait_for_disconnect(self) -> None:
        """Never answer; return once the client has given up (it is the client's timeout that ends this)."""
        if self._watcher is None and not self._gone.is_set():
            self._watcher = asyncio.ensure_future(self._watch())
        try:
            await self._gone.wait()
        finally:
            self.stop_watching()

    async def drop(self) -> None:
        """Close the connection with no (or no complete) response, as a crashed upstream does."""
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        if transport is not None and hasattr(transport, "close"):
            # uvicorn's `send` is a bound method of the request cycle, which holds the socket's transport.
            transport.close()
            if self._watcher is None:
                self._watcher = asyncio.ensure_future(self._watch())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gone.wait(), _DROP_GRACE_S)
            self.stop_watching()
            return
        # Any other server: promise a body and stop short; the server then closes the connection.
        self.stop_watching()
        if not self.started:
            self.started = True
            await self._send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
                }
            )
            await self._send({"type": "http.response.body", "body": b"{", "more_body": True})
