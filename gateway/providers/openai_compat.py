"""The fast path: raw HTTP to any OpenAI-compatible upstream (OpenAI, Groq, vLLM, our engine ...).

One shared aiohttp session with pooled keep-alive connections. The request body goes out
as the client's own bytes when nothing changed it; stream chunks are forwarded as they
arrive, split only at event boundaries, never parsed except the one carrying usage.
A body the gateway built goes out without Anthropic cache breakpoints, which OpenAI rejects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from gateway.config import Deployment
from gateway.errors import (
    TollgateError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import (
    ProviderCall,
    ProviderResponse,
    SSEStream,
    retry_after_seconds,
)
from gateway.wire.cache_control import without_cache_control

_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
# The engine's tenant salt is set by the gateway from the authenticated team; which client
# headers reach an upstream at all (`call.headers`) is decided once, by the server.
TENANT_HEADER = "x-tollgate-tenant"


# The code OpenAI gives a prompt too long for the model; the dispatcher tries the fallbacks on it.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
# How servers that give no code (vLLM, llama.cpp ...) word the same refusal.
_OVERFLOW_PHRASES = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "exceed context limit",
    "context window",
)


def is_overflow_message(message: str) -> bool:
    """The upstream's message says the prompt does not fit the model's context window."""
    lowered = message.lower()
    return any(phrase in lowered for phrase in _OVERFLOW_PHRASES)


def upstream_error(status: int, body: bytes, headers: Mapping[str, str], where: str) -> TollgateError:
    """Translate an upstream HTTP error into the gateway's error tree, keeping its message."""
    message, error_type = body.decode("utf-8", "replace")[:500] or f"HTTP {status}", None
    # The provider's `param` and `code` (`context_length_exceeded` ...) are what a client acts on.
    param: str | None = None
    code: str | None = None
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
            code = error.get("code") if isinstance(error.get("code"), str) else None
        elif isinstance(error, str):
            message = error
    except orjson.JSONDecodeError:
        pass
    text = f"{where}: {message}"
    if status == 429:
        return UpstreamRateLimited(text, retry_after_s=retry_after_seconds(headers))
    if 400 <= status < 500:
        if code is None and status in (400, 413) and is_overflow_message(message):
            code = CONTEXT_LENGTH_EXCEEDED
        return UpstreamRejected(text, upstream_status=status, error_type=error_type, param=param, code=code)
    if status in (502, 503, 529):
        return UpstreamUnavailable(text, upstream_status=status)
    if status == 504:
        return UpstreamTimeout(text, upstream_status=status)
    return UpstreamError(text, upstream_status=status)


class OpenAICompatProvider:
    kind = "openai_compat"

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float, bool], aiohttp.ClientTimeout] = {}
        self._static_headers: dict[tuple[int, str | None], dict[str, str]] = {}

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop; limit=0: the upstream, not us, sets concurrency.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        # Built once per deployment and key: the key is still read at call time, so a
        # rotated environment variable takes effect without a restart.
        key = deployment.resolved_api_key()
        cache_key = (id(deployment), key)
        headers = self._static_headers.get(cache_key)
        if headers is None:
            headers = {"content-type": "application/json"}
            if key:
                headers["authorization"] = f"Bearer {key}"
            if len(self._static_headers) > 1024:
                self._static_headers.clear()
            self._static_headers[cache_key] = headers
        return headers

    async def send(self, call: ProviderCall, deployment: Deployment) -> ProviderResponse:
        base = deployment.resolved_api_base()
        where = f"{deployment.provider}/{call.body.get('model')}"
        url = f"{base}{_PATHS[call.endpoint]}"
        headers = self._headers(deployment)
        if call.headers or (deployment.provider == "local" and call.tenant):
            headers = dict(headers)
        headers.update(call.headers)
        if deployment.provider == "local" and call.tenant:
            headers[TENANT_HEADER] = call.tenant
        payload = self._payload(call, deployment)
        timeout = self._timeout(deployment.timeout_s, call.stream)
        try:
            resp = await self._client().post(url, data=payload, headers=headers, timeout=timeout)
        except TimeoutError:
            raise UpstreamTimeout(f"{where}: no response within {deployment.timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as err:
            raise UpstreamUnavailable(f"{where}: cannot connect to {base}: {err}") from None
        except aiohttp.ClientConnectionError as err:
            # Connected, then the upstream hung up before answering (a crash, a proxy reset).
            raise UpstreamUnavailable(f"{where}: connection to {base} lost: {err}") from None
        except aiohttp.ClientError as err:
            raise UpstreamError(f"{where}: {err}") from None
        if resp.status >= 400 or not call.stream:
            try:
                body = await resp.read()
            except TimeoutError:
                raise UpstreamTimeout(f"{where}: no response within {deployment.timeout_s:g}s") from None
            except aiohttp.ClientError as err:
                raise UpstreamError(f"{where}: connection lost reading the response: {err}") from None
            finally:
                resp.release()
            if resp.status >= 400:
                raise upstream_error(resp.status, body, resp.headers, where)
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise UpstreamError(f"{where}: upstream answered with malformed JSON") from None
            if not isinstance(parsed, dict):
                raise UpstreamError(f"{where}: upstream answered with malformed JSON")
            return ProviderResponse(raw=body, _json=parsed)
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        return ProviderResponse(stream=UpstreamStream(resp, where, include_usage=include_usage))

    def _timeout(self, seconds: float, stream: bool) -> aiohttp.ClientTimeout:
        # A whole-response deadline for plain answers; for streams, a limit on each silence
        # (a read timer rescheduled on every chunk costs too much to pay on plain answers).
        key = (seconds, stream)
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect = min(10.0, seconds)
            timeout = (
                aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=seconds)
                if stream
                else aiohttp.ClientTimeout(total=seconds, sock_connect=connect)
            )
            self._timeouts[key] = timeout
        return timeout

    @staticmethod
    def _payload(call: ProviderCall, deployment: Deployment) -> bytes:
        wants_usage = call.stream and not (call.body.get("stream_options") or {}).get("include_usage")
        if call.raw_body is not None and not deployment.extra_body and not wants_usage:
            return call.raw_body
        # Only a body the gateway built (an Anthropic translation, a stage's rewrite) is
        # stripped: a client's own body goes out as the client wrote it, as on the raw path.
        body: dict[str, Any] = dict(call.body if call.raw_body is not None else without_cache_control(call.body))
        if deployment.extra_body:
            body.update(deployment.extra_body)
        if wants_usage:
            # Accounting needs usage even when the client did not ask; SSEStream drops it again.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class UpstreamStream(SSEStream):
    """The upstream's SSE body, forwarded as it arrives: whole events, usage recorded on the way.

    One generator does the buffering, the shape check and the usage watch, because each
    generator a chunk passes through costs about a microsecond, twenty times a stream.
    """

    __slots__ = ("_response", "_where")

    def __init__(self, response: aiohttp.ClientResponse, where: str, *, include_usage: bool) -> None:
        super().__init__(_no_source(), include_usage=include_usage)
        self._response = response
        self._where = where

    async def _iterate(self) -> AsyncIterator[bytes]:
        where = self._where
        seen = self.seen
        buffer = b""
        done = False
        try:
            async for data in self._response.content.iter_any():
                buffer += data
                end = buffer.rfind(b"\n\n")
                if end < 0:
                    continue
                ready, buffer = buffer[: end + 2], buffer[end + 2 :]
                if b"\r\n" in ready:
                    ready = ready.replace(b"\r\n", b"\n")
                # A JSON event ends in "}": three counts in C instead of a loop over events.
                events = ready.count(b"\n\n")
                closed = ready.count(b"}\n\n")
                if b"[DONE]" in ready:
                    done = True
                    closed += ready.count(b"[DONE]\n\n")
                if closed != events:
                    _check_events(ready, where)
                if b'"usage"' in ready:
                    ready = self.watch_usage(ready)
                    if not ready:
                        continue
                seen.append(ready)
                yield ready
        except TimeoutError:
            raise UpstreamTimeout(f"{where}: stream stalled") from None
        except aiohttp.ClientError as err:
            raise UpstreamError(f"{where}: stream interrupted: {err}") from None
        finally:
            await self.aclose()
        if buffer.strip():
            raise UpstreamError(f"{where}: stream ended in the middle of an event")
        if not done:
            raise UpstreamError(f"{where}: stream ended without [DONE]")

    async def aclose(self) -> None:
        self._response.release()


def _check_events(ready: bytes, where: str) -> None:
    """The slow path: comments (`: ping`) and other non-JSON lines are fine; garbage is not."""
    for event in ready[:-2].split(b"\n\n"):
        if event and not event.endswith((b"}", b"[DONE]")) and not event.startswith((b":", b"event:", b"id:", b"retry:")):
            raise UpstreamError(f"{where}: upstream sent a malformed stream event")


async def _no_source() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator
