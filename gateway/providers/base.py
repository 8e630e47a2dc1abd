"""The one interface every upstream speaks, and the shapes that cross it.

Inside the gateway every request and response is in the OpenAI wire format (chat
completions, completions, embeddings): it is what most upstreams speak natively, so the
fast path forwards bytes untouched. A provider that speaks something else (Anthropic,
Gemini, Bedrock ...) translates at its own edge. Streams are async iterables of raw SSE
bytes, each item one or more whole `data: ...\n\n` events, so they pass through as they
arrive; usage is read from the bytes without parsing every event.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import orjson

Endpoint = Literal["chat", "completions", "embeddings"]

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(slots=True)
class Usage:
    """Tokens one request used, normalised to OpenAI's convention.

    `prompt_tokens` counts every input token, including those read from and written to a
    provider's prompt cache (OpenAI's `prompt_tokens` already does; Anthropic's
    `input_tokens` excludes both, so `from_anthropic` adds them back). `completion_tokens`
    includes reasoning tokens. `estimated` marks counts made with tiktoken because the
    provider reported none.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage | None:
        if not usage:
            return None
        if "input_tokens" in usage and "prompt_tokens" not in usage:
            return cls.from_anthropic(usage)
        details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        # `cache_creation_tokens` is how litellm carries Anthropic's cache writes in OpenAI shape.
        written = details.get("cache_creation_tokens") or usage.get("cache_creation_input_tokens") or 0
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_prompt_tokens=int(details.get("cached_tokens") or 0),
            cache_write_tokens=int(written),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        )

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any] | None) -> Usage | None:
        """Anthropic's `input_tokens` excludes cache reads and writes: add them back."""
        if not usage:
            return None
        read = int(usage.get("cache_read_input_tokens") or 0)
        written = int(usage.get("cache_creation_input_tokens") or 0)
        return cls(
            prompt_tokens=int(usage.get("input_tokens") or 0) + read + written,
            completion_tokens=int(usage.get("output_tokens") or 0),
            cached_prompt_tokens=read,
            cache_write_tokens=written,
        )


@dataclass(slots=True, frozen=True)
class ProviderCall:
    """One attempt at one deployment: the body is OpenAI-format with the upstream's model name."""

    endpoint: Endpoint
    body: Mapping[str, Any]
    stream: bool = False
    # Client headers to pass upstream as they are; the server alone chooses them (`x-sim-*`).
    headers: Mapping[str, str] = field(default_factory=dict)
    # True when `body` is exactly what the client sent, so `raw_body` can be forwarded as is.
    raw_body: bytes | None = None
    # Who is asking, for upstreams that isolate tenants (the local engine's prefix cache).
    tenant: str | None = None


class ResponseStream(Protocol):
    """SSE bytes in OpenAI chunk format. `usage` is known once iteration has ended."""

    usage: Usage | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class ProviderResponse:
    status: int = 200
    raw: bytes | None = None
    stream: ResponseStream | None = None
    headers: dict[str, str] = field(default_factory=dict)
    _json: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any], **kwargs: Any) -> ProviderResponse:
        return cls(raw=None, _json=body, **kwargs)

    def json(self) -> dict[str, Any]:
        if self._json is None:
            assert self.raw is not None, "a streaming response has no JSON body"
            self._json = orjson.loads(self.raw)
        return self._json

    def body_bytes(self) -> bytes:
        if self.raw is None:
            self.raw = orjson.dumps(self._json)
        return self.raw

    @property
    def usage(self) -> Usage | None:
        if self.stream is not None:
            return self.stream.usage
        return Usage.from_openai(self.json().get("usage"))


class Provider(Protocol):
    """A transport to one kind of upstream. Errors leave it as `gateway.errors.UpstreamError`."""

    kind: str

    async def send(self, call: ProviderCall, deployment: Any) -> ProviderResponse: ...

    async def aclose(self) -> None: ...


class StreamWrapper:
    """A ResponseStream around another that passes its pieces on unchanged: `usage` is the
    source's (read and written through), `seen` is the source's list of pieces (or, for a
    source that keeps none, one of the wrapper's own, which a subclass appends each piece
    to through `_own_seen`), and `aclose` closes the source once. Subclasses define
    `_iterate` (or `__aiter__`)."""

    __slots__ = ("_closed", "_own_seen", "_source", "seen")

    def __init__(self, source: ResponseStream) -> None:
        self._source = source
        self._closed = False
        seen: list[bytes] | None = getattr(source, "seen", None)
        # Accounting (finish reasons, estimates) and the cache recorders read `seen`.
        self.seen: list[bytes] = [] if seen is None else seen
        # The list to append each piece to: None when the source already keeps them.
        self._own_seen: list[bytes] | None = self.seen if seen is None else None

    @property
    def source(self) -> ResponseStream:
        return self._source

    @property
    def usage(self) -> Usage | None:
        return self._source.usage

    @usage.setter
    def usage(self, usage: Usage | None) -> None:
        self._source.usage = usage

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    def _iterate(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._source.aclose()


class SSEStream:
    """Wraps an async iterator of raw SSE bytes (whole events) and watches it for usage.

    Only events that carry a `"usage":{...}` object are parsed. When the client did not ask
    for usage (`include_usage=False`) but the gateway asked the upstream for it, the
    usage-only chunk (empty `choices`) is read and dropped instead of forwarded, and the
    `"usage":null` the upstream then puts in every chunk is taken out again.

    `seen` keeps every piece forwarded (references, no copies): when a stream ends without
    usage (a client hung up, the upstream broke off) accounting counts what was generated.
    """

    __slots__ = ("_closed", "_include_usage", "_source", "seen", "usage")

    def __init__(self, source: AsyncIterator[bytes], *, include_usage: bool = True) -> None:
        self._source = source
        self._include_usage = include_usage
        self.usage: Usage | None = None
        self.seen: list[bytes] = []
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        seen = self.seen
        try:
            async for data in self._source:
                if b'"usage"' in data:
                    data = self.watch_usage(data)
                    if not data:
                        continue
                seen.append(data)
                yield data
        finally:
            await self.aclose()

    def watch_usage(self, data: bytes) -> bytes:
        """Events that mention usage: record a usage object, and give the client only the
        usage it asked for (the usage-only chunk and the `"usage":null` fields go)."""
        # Chunks say `"usage":null` until the last one: only a usage object is parsed.
        if b'"usage":{' in data or b'"usage": {' in data:
            data = self.take_usage(data)
        if data and not self._include_usage and b'"usage":null' in data:
            data = strip_null_usage(data)
        return data

    def take_usage(self, data: bytes) -> bytes:
        """Record the usage these events carry; drop the usage-only chunk if the client did not ask."""
        kept: list[bytes] = []
        for event in data.split(b"\n\n"):
            if not event:
                continue
            payload = event[6:] if event.startswith(b"data: ") else None
            if payload is not None and (b'"usage":{' in payload or b'"usage": {' in payload):
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    kept.append(event)
                    continue
                usage = Usage.from_openai(chunk.get("usage"))
                if usage is not None:
                    self.usage = usage
                    if not self._include_usage and not chunk.get("choices"):
                        continue
            kept.append(event)
        return b"".join(e + b"\n\n" for e in kept)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()


def strip_null_usage(data: bytes) -> bytes:
    """Chunks without usage, as the client would have had them had the gateway not asked for it."""
    return data.replace(b',"usage":null', b"").replace(b'"usage":null,', b"")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long the provider asked us to wait: `retry-after-ms`, or `retry-after` in seconds or as a date."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return float(milliseconds) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        # The other form the HTTP spec allows: a date.
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def sse_event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_payloads(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The data of every SSE event in these pieces of whole events: `data:` lines joined by
    newlines, line ends CRLF or LF; events with no data (comments) are skipped."""
    for piece in pieces:
        for event in piece.replace(b"\r\n", b"\n").split(b"\n\n"):
            if event.startswith(b"data: ") and b"\n" not in event:
                yield event[6:]  # the usual event: one data line
                continue
            lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if lines:
                yield b"\n".join(lines)
