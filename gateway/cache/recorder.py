"""Recording an answer for the caches without holding the client's response back.

`keep_answer` is how a cache asks for the answer of a response: every cache that keeps the
same response shares one recording, and the answer is built once for all of them.

`AnswerRecorder` wraps a ResponseStream and forwards every piece the moment it arrives. The
pieces are kept anyway (`SSEStream.seen`, by reference), so nothing is copied. Only when
the stream has ended complete (its `[DONE]` passed, or its source ran out, with no error)
is the answer assembled from the chunks, after the last piece has gone, and handed to the
callbacks; a stream broken off by an error, a client that hangs up, or a choice that never
finished is not an answer, and nothing is handed on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson

from gateway.cache.answer import CachedAnswer
from gateway.providers.base import (
    Endpoint,
    ProviderResponse,
    ResponseStream,
    StreamWrapper,
    Usage,
    sse_payloads,
)

log = logging.getLogger("tollgate.cache")

# Given the answer once the client has it; what it returns is ignored.
OnAnswer = Callable[[CachedAnswer], object]


class AnswerRecorder(StreamWrapper):
    """A ResponseStream: the source's pieces unchanged; every callback gets the whole answer."""

    __slots__ = ("_complete", "_endpoint", "_failed", "_on_answer")

    def __init__(self, source: ResponseStream, endpoint: Endpoint, on_answer: OnAnswer) -> None:
        super().__init__(source)
        self._endpoint = endpoint
        self._on_answer = [on_answer]
        self._complete = False
        self._failed = False

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    def also(self, on_answer: OnAnswer) -> None:
        """Hand the same answer to another callback: one recording, one assembly."""
        self._on_answer.append(on_answer)

    async def _iterate(self) -> AsyncIterator[bytes]:
        own = self._own_seen
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
        try:
            await super().aclose()
        finally:
            if self._complete and not self._failed:
                # After the last piece has left: assembling is not the client's wait.
                asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        try:
            body = assemble(self._endpoint, self.seen, self._source.usage)
            answer = None if body is None else CachedAnswer.from_body(self._endpoint, body)
        except Exception:
            log.exception("recording a streamed answer failed")
            return
        if answer is not None:
            _hand_on(answer, self._on_answer)


def keep_answer(response: ProviderResponse, endpoint: Endpoint, on_answer: OnAnswer) -> None:
    """Hand `on_answer` the answer once the client has it: a stream once it has ended
    complete, a JSON body once it is on its way; never an error. Caches that keep the same
    response share one recording, and the answer is built once for all of them."""
    stream = response.stream
    if stream is not None:
        recorder = _recorder_in(stream)
        if recorder is not None and recorder.endpoint == endpoint:
            recorder.also(on_answer)
        else:
            response.stream = AnswerRecorder(stream, endpoint, on_answer)
        return
    waiting = _json_waiting.get((id(response), endpoint))
    if waiting is not None:
        waiting[1].append(on_answer)
        return
    _json_waiting[(id(response), endpoint)] = (response, [on_answer])
    # Runs when the response is being sent: its body is parsed by then for accounting.
    asyncio.get_running_loop().call_soon(_keep_json, response, endpoint)


# JSON responses whose answer is built on the next turn of the loop, by id and endpoint; each
# entry holds its response, so the id stays its own until the entry is gone.
_json_waiting: dict[tuple[int, Endpoint], tuple[ProviderResponse, list[OnAnswer]]] = {}


def _keep_json(response: ProviderResponse, endpoint: Endpoint) -> None:
    waiting = _json_waiting.pop((id(response), endpoint), None)
    if waiting is None:
        return
    callbacks = waiting[1]
    try:
        answer = CachedAnswer.from_response(endpoint, response)
    except Exception:
        log.exception("recording an answer failed")
        return
    if answer is not None:
        _hand_on(answer, callbacks)


def _recorder_in(stream: ResponseStream) -> AnswerRecorder | None:
    """The recorder already on this stream, under wrappers that pass pieces on unchanged."""
    while isinstance(stream, StreamWrapper):
        if isinstance(stream, AnswerRecorder):
            return stream
        stream = stream.source
    return None


def _hand_on(answer: CachedAnswer, callbacks: list[OnAnswer]) -> None:
    for on_answer in callbacks:
        try:
            on_answer(answer)
        except Exception:
            log.exception("keeping an answer failed")


def assemble(endpoint: Endpoint, pieces: list[bytes], usage: Usage | None = None) -> dict[str, Any] | None:
    """The chat.completion / text_completion a stream of chunks adds up to; None when the
    stream holds an error event or a chunk that is not JSON."""
    if endpoint == "embeddings":
        return None
    header: dict[str, Any] = {}
    raw_usage: Any = None
    choices: dict[int, _Choice] = {}
    for payload in sse_payloads(pieces):
        if payload.strip() == b"[DONE]":
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
