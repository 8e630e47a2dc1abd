"""A stored answer, and its replay as JSON or as an SSE stream.

An answer is kept in the gateway's internal OpenAI format (a `chat.completion`,
`text_completion` or embeddings `list`), without its `id` and `created`, which every replay
makes fresh. However it was first delivered, it replays either way: a streamed answer as
one JSON body, a JSON answer as a stream of `chat.completion.chunk` events (role, content in
a few pieces, tool calls, finish, usage when asked, `[DONE]`), which the Anthropic wire
translation turns into Messages events like any upstream stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.providers.base import DONE_EVENT, Endpoint, ProviderResponse, Usage, sse_event

_VERSION = 1
# Characters of content per replayed chunk: a few events, not one per token.
_PIECE = 256
_ID_PREFIX: Mapping[str, str] = {"chat": "chatcmpl-", "completions": "cmpl-"}
_OBJECT: Mapping[str, str] = {"chat": "chat.completion", "completions": "text_completion"}
_CHUNK_OBJECT: Mapping[str, str] = {"chat": "chat.completion.chunk", "completions": "text_completion"}


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    endpoint: Endpoint
    # The answer as the upstream gave it (or as its stream assembles), minus `id` and `created`.
    body: dict[str, Any]
    stored_at: float

    # --- making one --------------------------------------------------------------------

    @classmethod
    def from_body(
        cls, endpoint: Endpoint, body: Mapping[str, Any], *, stored_at: float | None = None
    ) -> CachedAnswer | None:
        """The answer worth keeping, or None: an error, an empty or unfinished answer is not."""
        if not isinstance(body, Mapping) or body.get("error") is not None:
            return None
        if endpoint == "embeddings":
            data = body.get("data")
            if not isinstance(data, list) or not data:
                return None
        else:
            choices = body.get("choices")
            if not isinstance(choices, list) or not choices:
                return None
            for choice in choices:
                if not isinstance(choice, Mapping) or choice.get("finish_reason") in (None, "error"):
                    return None
        kept = {name: value for name, value in body.items() if name not in ("id", "created")}
        return cls(endpoint, kept, time.time() if stored_at is None else stored_at)

    @classmethod
    def from_response(cls, endpoint: Endpoint, response: ProviderResponse) -> CachedAnswer | None:
        """From a JSON response; a stream is recorded with `AnswerRecorder` instead."""
        if response.status != 200 or response.stream is not None:
            return None
        try:
            body = response.json()
        except orjson.JSONDecodeError:
            return None
        return cls.from_body(endpoint, body)

    # --- storing -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return orjson.dumps({"v": _VERSION, "e": self.endpoint, "t": self.stored_at, "b": self.body})

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedAnswer:
        """Raises ValueError when the bytes are not an answer this version wrote."""
        try:
            stored = orjson.loads(data)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"not a cached answer: {err}") from None
        if (
            not isinstance(stored, dict)
            or stored.get("v") != _VERSION
            or stored.get("e") not in ("chat", "completions", "embeddings")
        ):
            raise ValueError("not a cached answer of this version")
        return cls(stored["e"], stored["b"], float(stored["t"]))

    # --- replaying ---------------------------------------------------------------------

    @property
    def usage(self) -> Usage | None:
        usage = self.body.get("usage")
        return Usage.from_openai(usage) if isinstance(usage, Mapping) else None

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.stored_at)

    def json_response(self, request_id: str, created: int | None = None) -> ProviderResponse:
        """The answer as a JSON body, with a fresh id and creation time."""
        if self.endpoint == "embeddings":
            return ProviderResponse.from_json(dict(self.body))
        body = {
            "id": _ID_PREFIX[self.endpoint] + request_id,
            "object": _OBJECT[self.endpoint],  # OpenAI's field order: id, object, created, model ...
            "created": int(time.time()) if created is None else created,
            **self.body,
        }
        return ProviderResponse.from_json(body)

    def stream_response(
        self, include_usage: bool, *, request_id: str = "", created: int | None = None
    ) -> ProviderResponse:
        """The answer as an SSE stream of chunks ending in `[DONE]`; its `usage` is the original's."""
        if self.endpoint == "embeddings":
            raise ValueError("embeddings are never streamed")
        envelope: dict[str, Any] = {
            "id": _ID_PREFIX[self.endpoint] + (request_id or "cached"),
            "object": _CHUNK_OBJECT[self.endpoint],
            "created": int(time.time()) if created is None else created,
            "model": self.body.get("model", ""),
        }
        for name in ("system_fingerprint", "service_tier"):
            if name in self.body:
                envelope[name] = self.body[name]
        choices = sorted(self.body["choices"], key=lambda c: c.get("index", 0))
        events: list[bytes] = []
        for position, choice in enumerate(choices):
            index = choice.get("index", position)
            pieces = _chat_deltas(choice) if self.endpoint == "chat" else _text_deltas(choice)
            for choice_chunk in pieces:
                events.append(sse_event({**envelope, "choices": [{"index": index, **choice_chunk}]}))
        usage = self.body.get("usage")
        if include_usage and isinstance(usage, Mapping):
            events.append(sse_event({**envelope, "choices": [], "usage": usage}))
        events.append(DONE_EVENT)
        return ProviderResponse(stream=ReplayStream(b"".join(events), self.usage))


class ReplayStream:
    """A ResponseStream over a stored answer's events, all in one piece: nothing to wait for."""

    __slots__ = ("_events", "seen", "usage")

    def __init__(self, events: bytes, usage: Usage | None) -> None:
        self._events = events
        self.usage = usage
        # Accounting reads finish reasons (and, when capturing content, the text) from here.
        self.seen: list[bytes] = [events]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        yield self._events

    async def aclose(self) -> None:
        return None


def _pieces(text: str) -> list[str]:
    return [text[start : start + _PIECE] for start in range(0, len(text), _PIECE)] or [""]


def _chat_deltas(choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One choice of a chat.completion as the `choices[]` entries of its chunks."""
    message = choice.get("message") or {}
    content = message.get("content")
    logprobs = choice.get("logprobs")
    chunks: list[dict[str, Any]] = []
    role: dict[str, Any] = {
        "role": message.get("role", "assistant"),
        "content": "" if isinstance(content, str) else None,
    }
    chunks.append({"delta": role, "logprobs": None, "finish_reason": None})
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        chunks.append({"delta": {"reasoning_content": reasoning}, "logprobs": None, "finish_reason": None})
    if isinstance(content, str) and content:
        if logprobs:
            # Token logprobs belong to the text they score: one piece carries both.
            chunks.append({"delta": {"content": content}, "logprobs": logprobs, "finish_reason": None})
        else:
            chunks += [
                {"delta": {"content": piece}, "logprobs": None, "finish_reason": None}
                for piece in _pieces(content)
            ]
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        chunks.append({"delta": {"refusal": refusal}, "logprobs": None, "finish_reason": None})
    for position, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        delta_call = {
            "index": position,
            "id": call.get("id"),
            "type": call.get("type", "function"),
            "function": {"name": function.get("name", ""), "arguments": function.get("arguments", "")},
        }
        chunks.append({"delta": {"tool_calls": [delta_call]}, "logprobs": None, "finish_reason": None})
    if message.get("function_call"):
        chunks.append(
            {"delta": {"function_call": message["function_call"]}, "logprobs": None, "finish_reason": None}
        )
    chunks.append({"delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")})
    return chunks


def _text_deltas(choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One choice of a text_completion as the `choices[]` entries of its chunks."""
    text = choice.get("text") or ""
    logprobs = choice.get("logprobs")
    chunks: list[dict[str, Any]] = []
    if logprobs:
        chunks.append({"text": text, "logprobs": logprobs, "finish_reason": None})
    elif text:
        chunks += [{"text": piece, "logprobs": None, "finish_reason": None} for piece in _pieces(text)]
    chunks.append({"text": "", "logprobs": None, "finish_reason": choice.get("finish_reason")})
    return chunks
