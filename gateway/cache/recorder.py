"""Recording a streamed answer for the cache without holding the client's stream back.

`AnswerRecorder` wraps a ResponseStream and forwards every piece the moment it arrives. The
pieces are kept anyway (`SSEStream.seen`, by reference), so nothing is copied. Only when
the stream has ended complete (its `[DONE]` passed, or its source ran out, with no error)
is the answer assembled from the chunks, after the last piece has gone, and handed to the
callback; a stream broken off by an error, a client that hangs up, or a choice that never
finished is not an answer, and nothing is handed on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson

from gateway.cache.answer import CachedAnswer
from gateway.providers.base import Endpoint, ResponseStream, Usage

log = logging.getLogger("tollgate.cache")


class AnswerRecorder:
    """A ResponseStream: the source's pieces unchanged; `on_answer` gets the whole answer."""

    __slots__ = ("_closed", "_complete", "_endpoint", "_failed", "_on_answer", "_own", "_source", "seen")

    def __init__(
        self, source: ResponseStream, endpoint: Endpoint, on_answer: Callable[[CachedAnswer], None]
    ) -> None:
        self._source = source
        self._endpoint = endpoint
        self._on_answer = on_answer
        seen = getattr(source, "seen", None)
        # Accounting reads `seen` too; a source that keeps none gets ours.
        self._own = seen is None
        self.seen: list[bytes] = [] if seen is None else seen
        self._complete = False
        self._failed = False
        self._closed = False

    @property
    def usage(self) -> Usage | None:
        return self._source.usage

    @usage.setter
    def usage(self, usage: Usage | None) -> None:
        self._source.usage = usage

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        own = self.seen if self._own else None
        try:
            async for data in self._source:
                if own is not None:
                    own.append(data)
                if b"[DONE]" in data:
                    # The Anthropic translation stops reading here, so this is the end.
                    self._complete = True
                yield data
            self._complete = True
        except GeneratorExit:
            raise
        except BaseException:
            self._failed = True
            raise
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._source.aclose()
        finally:
            if self._complete and not self._failed:
                # After the last piece has left: assembling is not the client's wait.
                asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        try:
            body = assemble(self._endpoint, self.seen, self._source.usage)
            answer = None if body is None else CachedAnswer.from_body(self._endpoint, body)
            if answer is not None:
                self._on_answer(answer)
        except Exception:
            log.exception("recording a streamed answer failed")


def assemble(endpoint: Endpoint, pieces: list[bytes], usage: Usage | None = None) -> dict[str, Any] | None:
    """The chat.completion / text_completion a stream of chunks adds up to; None when the
    stream holds an error event or a chunk that is not JSON."""
    if endpoint == "embeddings":
        return None
    header: dict[str, Any] = {}
    raw_usage: Any = None
    choices: dict[int, _Choice] = {}
    for piece in pieces:
        for event in piece.split(b"\n\n"):
            if not event.startswith(b"data:"):
                continue
            payload = event[5:].strip()
            if payload == b"[DONE]":
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
            if not isinstance(chunk, dict) or chunk.get("error") is not None:
                return None
            for name in ("model", "system_fingerprint", "service_tier"):
                if chunk.get(name) is not None and name not in header:
                    header[name] = chunk[name]
            if isinstance(chunk.get("usage"), dict):
                raw_usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict):
                    index = choice.get("index", 0)
                    state = choices.get(index)
                    if state is None:
                        state = choices[index] = _Choice(index)
                    state.add(choice, endpoint)
    if not choices:
        return None
    body: dict[str, Any] = {
        "object": "chat.completion" if endpoint == "chat" else "text_completion",
        "model": header.get("model", ""),
        "choices": [choices[index].build(endpoint) for index in sorted(choices)],
    }
    if raw_usage is None and usage is not None:
        raw_usage = usage_body(usage)
    if raw_usage is not None:
        body["usage"] = raw_usage
    for name in ("system_fingerprint", "service_tier"):
        if name in header:
            body[name] = header[name]
    return body


def usage_body(usage: Usage) -> dict[str, Any]:
    """A Usage in OpenAI's shape (when the client did not ask for the usage chunk, only the
    parsed usage is left)."""
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_prompt_tokens or usage.cache_write_tokens:
        details = {"cached_tokens": usage.cached_prompt_tokens}
        if usage.cache_write_tokens:
            details["cache_creation_tokens"] = usage.cache_write_tokens
        body["prompt_tokens_details"] = details
    if usage.reasoning_tokens:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


class _Choice:
    """What the deltas of one choice index add up to."""

    __slots__ = ("annotations", "content", "finish_reason", "function_call", "index", "logprobs", "reasoning",
                 "refusal", "role", "tool_calls")  # fmt: skip

    def __init__(self, index: int) -> None:
        self.index = index
        self.role = "assistant"
        self.content: list[str] | None = None
        self.refusal: list[str] = []
        self.reasoning: list[str] = []
        self.annotations: list[Any] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, Any] | None = None
        self.logprobs: dict[str, Any] | None = None
        self.finish_reason: Any = None

    def add(self, choice: Mapping[str, Any], endpoint: Endpoint) -> None:
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping):
            merged = self.logprobs if self.logprobs is not None else {}
            self.logprobs = merged
            for name, values in logprobs.items():
                if isinstance(values, list):
                    known = merged.get(name)
                    if isinstance(known, list):
                        known.extend(values)  # ours: copied from the first chunk
                    else:
                        merged[name] = list(values)
                else:
                    merged.setdefault(name, values)
        if endpoint == "completions":
            text = choice.get("text")
            if isinstance(text, str):
                (self.content if self.content is not None else self._start_content()).append(text)
            return
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        content = delta.get("content")
        if isinstance(content, str):
            (self.content if self.content is not None else self._start_content()).append(content)
        for name, into in (("refusal", self.refusal), ("reasoning_content", self.reasoning)):
            text = delta.get(name)
            if isinstance(text, str):
                into.append(text)
        annotations = delta.get("annotations")
        if isinstance(annotations, list):
            self.annotations.extend(annotations)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, Mapping):
                self._tool_call(call)
        function_call = delta.get("function_call")
        if isinstance(function_call, Mapping):
            if self.function_call is None:
                self.function_call = {"name": function_call.get("name") or "", "arguments": ""}
            self.function_call["arguments"] += function_call.get("arguments") or ""

    def _start_content(self) -> list[str]:
        self.content = []
        return self.content

    def _tool_call(self, call: Mapping[str, Any]) -> None:
        position = call.get("index")
        call_id = call.get("id")
        if not isinstance(position, int) or isinstance(position, bool):
            # Index-less deltas (some OpenAI-compatible servers): a new id starts a new call.
            known = [k for k, v in self.tool_calls.items() if call_id and v["id"] == call_id]
            position = (
                known[0] if known else (len(self.tool_calls) if call_id else max(self.tool_calls, default=0))
            )
        entry = self.tool_calls.get(position)
        if entry is None:
            entry = self.tool_calls[position] = {"id": "", "type": "function", "name": "", "arguments": []}
        if isinstance(call_id, str) and call_id and not entry["id"]:
            entry["id"] = call_id
        if isinstance(call.get("type"), str):
            entry["type"] = call["type"]
        function = call.get("function")
        if isinstance(function, Mapping):
            name = function.get("name")
            # The name comes whole in the call's first delta; later deltas may repeat it.
            if isinstance(name, str) and name and not entry["name"]:
                entry["name"] = name
            arguments = function.get("arguments")
            if isinstance(arguments, Mapping):  # a few servers send the arguments already parsed
                arguments = orjson.dumps(arguments).decode()
            if isinstance(arguments, str):
                entry["arguments"].append(arguments)

    def build(self, endpoint: Endpoint) -> dict[str, Any]:
        logprobs = self.logprobs or None
        if endpoint == "completions":
            text = "".join(self.content or ())
            return {
                "text": text,
                "index": self.index,
                "logprobs": logprobs,
                "finish_reason": self.finish_reason,
            }
        message: dict[str, Any] = {
            "role": self.role,
            "content": None if self.content is None else "".join(self.content),
            "refusal": "".join(self.refusal) if self.refusal else None,
            "annotations": self.annotations,
        }
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call["id"], "type": call["type"],
                 "function": {"name": call["name"], "arguments": "".join(call["arguments"])}}
                for _, call in sorted(self.tool_calls.items())
            ]  # fmt: skip
        if self.function_call is not None:
            message["function_call"] = self.function_call
        return {
            "index": self.index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": self.finish_reason,
        }
