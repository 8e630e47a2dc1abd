"""OpenAI chat-completion chunks (SSE) → an Anthropic Messages event stream (SSE).

Each OpenAI event is parsed as it arrives and what it implies is emitted at once:

    message_start, ping                      the first chunk
    content_block_start/_delta/_stop         text (`text_delta`) or one tool call each
                                             (`input_json_delta` of its argument fragments)
    message_delta                            finish_reason + usage: usage comes in the
                                             usage-only chunk after the finish, so this
                                             waits for it (or for [DONE])
    message_stop                             [DONE]

`message_start` reports the input tokens as 0 when they are not known yet; the
`message_delta` carries the final counts, input included, which the SDKs take over.
A `TollgateError` from the source becomes an Anthropic `error` event that ends the stream.

Anthropic never interleaves content blocks. OpenAI upstreams send one tool call's
arguments after another's; should one interleave anyway, a late fragment still goes to its
own block index (the SDKs accumulate by index) rather than being held back.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import orjson

from gateway.errors import TollgateError, UpstreamError
from gateway.providers.base import Usage, sse_payloads
from gateway.wire.anthropic import message_id_for, stop_reason_for, tool_use_id, usage_for


def _event(name: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class AnthropicStream:
    """Async iterable of Anthropic SSE bytes translated from a source of OpenAI SSE bytes.

    Each item from `source` holds one or more whole `data: ...` events; one output item is
    yielded per input item that produces events. `usage` holds the latest usage seen.
    """

    __slots__ = (
        "_closed",
        "_done",
        "_finish_reason",
        "_finished",
        "_matched_stop",
        "_message_id",
        "_model",
        "_next_index",
        "_open_block",
        "_open_is_text",
        "_refused",
        "_reported_usage",
        "_source",
        "_started",
        "_tool_blocks",
        "_tool_positions",
        "usage",
    )

    def __init__(self, source: AsyncIterable[bytes], *, model: str, message_id: str | None = None) -> None:
        self._source = source
        self._model = model
        self._message_id = message_id
        self.usage: Usage | None = None
        self._closed = False
        self._started = False
        self._done = False
        self._next_index = 0
        self._open_block: int | None = None
        self._open_is_text = False
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_calls[].index → content block index
        self._tool_positions: dict[str, int] = {}  # tool call id → OpenAI index, for index-less deltas
        self._finished = False
        self._finish_reason: object = None
        self._matched_stop: object = None
        self._refused = False
        self._reported_usage: dict[str, int] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        out: list[bytes] = []
        try:
            async for data in self._source:
                self._translate(data, out)
                if out:
                    yield b"".join(out)
                    out.clear()
                if self._done:
                    break
            if not self._done:
                self._end_of_source(out)
                yield b"".join(out)
        except TollgateError as err:
            # Events already built from the failing input still go out, then the error.
            yield b"".join(out) + _event("error", err.to_anthropic())
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()

    # ---- OpenAI input ------------------------------------------------------------------

    def _translate(self, data: bytes, out: list[bytes]) -> None:
        for payload in sse_payloads((data,)):
            if payload.strip() == b"[DONE]":
                self._complete(out)
                return
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise UpstreamError("The upstream stream sent an event that is not JSON") from None
            if not isinstance(chunk, dict):
                raise UpstreamError("The upstream stream sent an event that is not a JSON object")
            self._chunk(chunk, out)

    def _chunk(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        error = chunk.get("error")
        if error:
            # An in-band OpenAI error event, from an upstream whose bytes passed through as is.
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamError(str(message or "The upstream reported an error mid-stream"))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage.from_openai(usage) or self.usage
        if not self._started:
            self._start(chunk, out)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        # The final usage normally arrives after the finish, in a chunk with no choices.
        if self._finished and self.usage is not None and usage_for(self.usage) != self._reported_usage:
            self._message_delta(out)

    def _choice(self, choice: Mapping[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "refusal"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self._refused = self._refused or key == "refusal"
                    self._text(text, out)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool_call(call, out)
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None and not self._finished:
            self._finished = True
            self._finish_reason = finish_reason
            # vLLM-style servers name the stop sequence that matched.
            self._matched_stop = choice.get("stop_reason")
            self._close_block(out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open_block is None or not self._open_is_text:
            self._open(out, {"type": "text", "text": ""}, is_text=True)
        delta = {"type": "text_delta", "text": text}
        out.append(
            _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._open_block, "delta": delta},
            )
        )

    def _tool_call(self, call: Mapping[str, Any], out: list[bytes]) -> None:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        position = call.get("index")
        if not isinstance(position, int) or isinstance(position, bool):
            # Index-less deltas (some OpenAI-compatible servers): a new id starts a new call.
            if call_id is not None:
                position = self._tool_positions.get(call_id, len(self._tool_blocks))
            else:
                position = max(self._tool_blocks, default=0)
        block = self._tool_blocks.get(position)
        if block is None:
            name = function.get("name")
            block = self._open(
                out,
                {
                    "type": "tool_use",
                    "id": call_id or tool_use_id(),
                    "name": name if isinstance(name, str) else "",
                    "input": {},
                },
                is_text=False,
            )
            self._tool_blocks[position] = block
            if call_id is not None:
                self._tool_positions[call_id] = position
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers send the arguments already parsed
            arguments = orjson.dumps(arguments).decode()
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(
                _event("content_block_delta", {"type": "content_block_delta", "index": block, "delta": delta})
            )

    # ---- Anthropic output --------------------------------------------------------------

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        self._started = True
        message: dict[str, Any] = {
            "id": self._message_id or message_id_for(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_for(self.usage),
        }
        out.append(_event("message_start", {"type": "message_start", "message": message}))
        out.append(_event("ping", {"type": "ping"}))

    def _open(self, out: list[bytes], content_block: dict[str, Any], *, is_text: bool) -> int:
        self._close_block(out)
        index = self._next_index
        self._next_index += 1
        self._open_block, self._open_is_text = index, is_text
        out.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": content_block},
            )
        )
        return index

    def _close_block(self, out: list[bytes]) -> None:
        if self._open_block is not None:
            out.append(
                _event("content_block_stop", {"type": "content_block_stop", "index": self._open_block})
            )
            self._open_block = None

    def _message_delta(self, out: list[bytes]) -> None:
        stop_reason, stop_sequence = stop_reason_for(
            self._finish_reason,
            used_tools=bool(self._tool_blocks),
            matched_stop=self._matched_stop,
            refused=self._refused,
        )
        self._reported_usage = usage_for(self.usage)
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        out.append(
            _event("message_delta", {"type": "message_delta", "delta": delta, "usage": self._reported_usage})
        )

    def _complete(self, out: list[bytes]) -> None:
        """[DONE]: close whatever is open and end the message."""
        if not self._started:
            self._start({}, out)
        self._close_block(out)
        if self._reported_usage is None:
            self._message_delta(out)
        out.append(_event("message_stop", {"type": "message_stop"}))
        self._done = True

    def _end_of_source(self, out: list[bytes]) -> None:
        # No [DONE]: a stream that at least finished its choice is complete enough to end
        # normally; one cut off before that must not pass for a whole answer.
        if not self._finished:
            raise UpstreamError("The upstream stream ended before the response was complete")
        self._complete(out)
