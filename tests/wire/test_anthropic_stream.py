"""OpenAI chunk streams translated into Anthropic Messages streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import anthropic
import orjson
import pytest

from gateway.errors import TollgateError, UpstreamTimeout
from gateway.wire.anthropic_stream import AnthropicStream

if TYPE_CHECKING:
    from tests.wire.conftest import MessagesServer

MODEL = "claude-sonnet-4-5"
USAGE = {
    "prompt_tokens": 25,
    "completion_tokens": 15,
    "total_tokens": 40,
    "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
ANTHROPIC_USAGE = {
    "input_tokens": 20,
    "output_tokens": 15,
    "cache_read_input_tokens": 5,
    "cache_creation_input_tokens": 0,
}
ZERO_USAGE = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
}
DONE = b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, **choice: Any) -> bytes:
    """One OpenAI `chat.completion.chunk` event, as OpenAI sends it with include_usage."""
    body = {
        "id": "chatcmpl-AXZ5sKQ2bcJ1f",
        "object": "chat.completion.chunk",
        "created": 1732740000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0705bf87c0",
        "choices": [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason, **choice}
        ],
        "usage": None,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def usage_chunk(usage: dict[str, Any] = USAGE) -> bytes:
    body = {
        "id": "chatcmpl-AXZ5sKQ2bcJ1f",
        "object": "chat.completion.chunk",
        "created": 1732740000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def tool_delta(
    index: int, *, arguments: str, call_id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


TEXT_ONLY = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "Hello"}),
    chunk({"content": "!"}),
    chunk({}, "stop"),
    usage_chunk(),
    DONE,
]
TEXT_AND_TWO_TOOLS = [
    chunk({"role": "assistant", "content": "Checking both."}),
    chunk(tool_delta(0, arguments="", call_id="call_A", name="get_weather")),
    chunk(tool_delta(0, arguments='{"location": ')),
    chunk(tool_delta(0, arguments='"Paris"}')),
    chunk(tool_delta(1, arguments="", call_id="call_B", name="get_weather")),
    chunk(tool_delta(1, arguments='{"location": "Oslo"}')),
    chunk({}, "tool_calls"),
    usage_chunk(),
    DONE,
]


class Source:
    """An upstream stream: yields items, may then raise, and records how far it was read."""

    def __init__(self, items: Iterable[bytes], error: Exception | None = None) -> None:
        self.items = list(items)
        self.error = error
        self.read = 0
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        for item in self.items:
            self.read += 1
            yield item
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


def parse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic SSE bytes → [(event name, data)], checking each event's framing."""
    assert data.endswith(b"\n\n")
    events = []
    for event in data[:-2].split(b"\n\n"):
        name_line, data_line = event.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: "), event
        name, payload = name_line[7:].decode(), orjson.loads(data_line[6:])
        assert payload["type"] == name
        events.append((name, payload))
    return events


async def translate(source: Source, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    stream = AnthropicStream(source, model=MODEL, **kwargs)
    return parse(b"".join([item async for item in stream]))


def message_start(
    message_id: str = "msg_AXZ5sKQ2bcJ1f", usage: dict[str, int] = ZERO_USAGE
) -> tuple[str, dict[str, Any]]:
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return ("message_start", {"type": "message_start", "message": message})


PING = ("ping", {"type": "ping"})
MESSAGE_STOP = ("message_stop", {"type": "message_stop"})


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def text_delta(index: int, text: str) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}},
    )


def json_delta(index: int, partial_json: str) -> tuple[str, dict[str, Any]]:
    delta = {"type": "input_json_delta", "partial_json": partial_json}
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(
    stop_reason: str, usage: dict[str, int] = ANTHROPIC_USAGE, stop_sequence: str | None = None
) -> tuple[str, dict[str, Any]]:
    delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    return ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})


def error_event(kind: str, message: str) -> tuple[str, dict[str, Any]]:
    return ("error", {"type": "error", "error": {"type": kind, "message": message}})


# ---- exact event sequences -------------------------------------------------------------


@pytest.mark.anyio
async def test_text_only() -> None:
    source = Source(TEXT_ONLY)
    assert await translate(source) == [
        message_start(),
        PING,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hello"),
        text_delta(0, "!"),
        block_stop(0),
        message_delta("end_turn"),
        MESSAGE_STOP,
    ]
    assert source.closed


@pytest.mark.anyio
async def test_text_and_two_parallel_tool_calls() -> None:
    assert await translate(Source(TEXT_AND_TWO_TOOLS)) == [
        message_start(),
        PING,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Checking both."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "call_A", "name": "get_weather", "input": {}}),
        json_delta(1, '{"location": '),
        json_delta(1, '"Paris"}'),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "call_B", "name": "get_weather", "input": {}}),
        json_delta(2, '{"location": "Oslo"}'),
        block_stop(2),
        message_delta("tool_use"),
        MESSAGE_STOP,
    ]


@pytest.mark.anyio
async def test_error_mid_stream_ends_with_an_error_event() -> None:
    source = Source(TEXT_ONLY[:2], error=UpstreamTimeout("The upstream did not answer within 30s"))
    assert await translate(source) == [
        message_start(),
        PING,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hello"),
        error_event("api_error", "The upstream did not answer within 30s"),
    ]
    assert source.closed


@pytest.mark.anyio
async def test_each_event_is_emitted_as_soon_as_its_input_arrives() -> None:
    source = Source(TEXT_ONLY)
    seen: list[tuple[int, list[str]]] = []
    async for data in AnthropicStream(source, model=MODEL):
        seen.append((source.read, [name for name, _ in parse(data)]))
    assert seen == [
        (1, ["message_start", "ping"]),
        (2, ["content_block_start", "content_block_delta"]),
        (3, ["content_block_delta"]),
        (4, ["content_block_stop"]),
        (5, ["message_delta"]),
        (6, ["message_stop"]),
    ]


# ---- variations --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_several_events_per_item_comments_and_crlf() -> None:
    items = [b": keep-alive\n\n", b"".join(TEXT_ONLY[:3]).replace(b"\n", b"\r\n"), b"".join(TEXT_ONLY[3:])]
    events = await translate(Source(items))
    assert [name for name, _ in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip


@pytest.mark.anyio
async def test_usage_on_every_chunk_reports_once_at_the_finish() -> None:
    early = {**USAGE, "completion_tokens": 1}
    items = [
        chunk({"role": "assistant", "content": "Hi"}).replace(
            b'"usage":null', b'"usage":' + orjson.dumps(early)
        ),
        chunk({}, "stop").replace(b'"usage":null', b'"usage":' + orjson.dumps(USAGE)),
        usage_chunk(),
        DONE,
    ]
    events = await translate(Source(items))
    assert events[0] == message_start(usage={**ANTHROPIC_USAGE, "output_tokens": 1})
    assert events[-2:] == [message_delta("end_turn"), MESSAGE_STOP]
    assert [name for name, _ in events].count("message_delta") == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("finish", "extra", "expected"),
    [
        ("length", {}, message_delta("max_tokens")),
        ("content_filter", {}, message_delta("refusal")),
        ("stop", {"stop_reason": "END"}, message_delta("stop_sequence", stop_sequence="END")),
    ],
)
async def test_stop_reasons(finish: str, extra: dict[str, Any], expected: tuple[str, dict[str, Any]]) -> None:
    items = [chunk({"role": "assistant", "content": "1, 2"}), chunk({}, finish, **extra), usage_chunk(), DONE]
    assert (await translate(Source(items)))[-2] == expected


@pytest.mark.anyio
async def test_refusal_delta() -> None:
    items = [chunk({"role": "assistant", "refusal": "I can't help with that."}), chunk({}, "stop"), DONE]
    events = await translate(Source(items))
    assert events[3] == text_delta(0, "I can't help with that.")
    assert events[-2] == message_delta("refusal", usage=ZERO_USAGE)


@pytest.mark.anyio
async def test_without_usage_the_final_counts_are_zero() -> None:
    events = await translate(Source([chunk({"content": "Hi"}), chunk({}, "stop"), DONE]))
    assert events[-2:] == [message_delta("end_turn", usage=ZERO_USAGE), MESSAGE_STOP]


@pytest.mark.anyio
async def test_message_id_given_by_the_caller() -> None:
    events = await translate(Source(TEXT_ONLY), message_id="msg_01XFDUDYJgAACzvnptvVoYEL")
    assert events[0] == message_start("msg_01XFDUDYJgAACzvnptvVoYEL")


@pytest.mark.anyio
async def test_done_alone_is_an_empty_message() -> None:
    assert await translate(Source([DONE]), message_id="msg_1") == [
        message_start("msg_1"),
        PING,
        message_delta("end_turn", usage=ZERO_USAGE),
        MESSAGE_STOP,
    ]


@pytest.mark.anyio
async def test_a_finished_stream_without_done_still_completes() -> None:
    events = await translate(Source(TEXT_ONLY[:-1]))
    assert events[-2:] == [message_delta("end_turn"), MESSAGE_STOP]


@pytest.mark.anyio
async def test_a_stream_cut_off_before_its_finish_is_an_error() -> None:
    events = await translate(Source(TEXT_ONLY[:3]))
    assert events[-1] == error_event(
        "api_error", "The upstream stream ended before the response was complete"
    )
    assert "message_stop" not in [name for name, _ in events]


@pytest.mark.anyio
async def test_an_error_before_anything_arrived() -> None:
    source = Source([], error=UpstreamTimeout("The upstream did not answer within 30s"))
    assert await translate(source) == [error_event("api_error", "The upstream did not answer within 30s")]


@pytest.mark.anyio
async def test_an_in_band_openai_error_event() -> None:
    error = b'data: {"error":{"message":"The server had an error while processing your request.","type":"server_error"}}\n\n'
    events = await translate(Source([TEXT_ONLY[0], error]))
    assert events == [
        message_start(),
        PING,
        error_event("api_error", "The server had an error while processing your request."),
    ]


@pytest.mark.anyio
async def test_an_event_that_is_not_json() -> None:
    events = await translate(Source([TEXT_ONLY[1] + b"data: {oops\n\n"]))
    assert events == [
        message_start(),
        PING,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hello"),
        error_event("api_error", "The upstream stream sent an event that is not JSON"),
    ]


@pytest.mark.anyio
async def test_index_less_tool_call_deltas() -> None:
    def call(call_id: str, arguments: str) -> bytes:
        return chunk(
            {
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}
                ]
            }
        )

    events = await translate(
        Source([call("c1", '{"a":'), call("c1", "1}"), call("c2", "{}"), chunk({}, "tool_calls"), DONE])
    )
    assert events[2:9] == [
        block_start(0, {"type": "tool_use", "id": "c1", "name": "f", "input": {}}),
        json_delta(0, '{"a":'),
        json_delta(0, "1}"),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "c2", "name": "f", "input": {}}),
        json_delta(1, "{}"),
        block_stop(1),
    ]


@pytest.mark.anyio
async def test_closing_early_closes_the_source() -> None:
    source = Source(TEXT_ONLY)
    stream = AnthropicStream(source, model=MODEL)
    iterator = aiter(stream)
    await anext(iterator)
    await stream.aclose()
    assert source.closed
    await stream.aclose()  # idempotent


@pytest.mark.anyio
async def test_usage_is_kept_for_accounting() -> None:
    stream = AnthropicStream(Source(TEXT_ONLY), model=MODEL)
    assert [item async for item in stream]
    assert stream.usage is not None
    assert (
        stream.usage.prompt_tokens,
        stream.usage.completion_tokens,
        stream.usage.cached_prompt_tokens,
    ) == (25, 15, 5)


# ---- the official SDK reads the stream ------------------------------------------------


def replay(items: list[bytes], error: TollgateError | None = None) -> Any:
    return lambda: aiter(Source(items, error))


def test_sdk_accumulates_text_tool_calls_and_usage(messages_server: MessagesServer) -> None:
    messages_server.chunks = replay(TEXT_AND_TWO_TOOLS)
    client = anthropic.Anthropic(base_url=messages_server.base_url, api_key="x", max_retries=0)
    with client.messages.stream(
        model=MODEL,
        max_tokens=512,
        messages=[{"role": "user", "content": "Weather in Paris and Oslo?"}],
        tools=[
            {
                "name": "get_weather",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
            }
        ],
    ) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert texts == ["Checking both."]
    assert message.id == "msg_AXZ5sKQ2bcJ1f"
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    text, first, second = message.content
    assert isinstance(text, anthropic.types.TextBlock) and text.text == "Checking both."
    assert isinstance(first, anthropic.types.ToolUseBlock) and isinstance(
        second, anthropic.types.ToolUseBlock
    )
    assert [(first.id, first.name, first.input), (second.id, second.name, second.input)] == [
        ("call_A", "get_weather", {"location": "Paris"}),
        ("call_B", "get_weather", {"location": "Oslo"}),
    ]
    assert message.stop_reason == "tool_use"
    usage = message.usage
    assert (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
    ) == (20, 15, 5, 0)
    [chat] = messages_server.chat_requests
    assert (chat["stream"], chat["stream_options"]) == (True, {"include_usage": True})


def test_sdk_reads_a_text_stream(messages_server: MessagesServer) -> None:
    messages_server.chunks = replay(TEXT_ONLY)
    client = anthropic.Anthropic(base_url=messages_server.base_url, api_key="x", max_retries=0)
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        assert stream.get_final_text() == "Hello!"
        message = stream.get_final_message()
    assert (message.stop_reason, message.stop_sequence, message.usage.output_tokens) == ("end_turn", None, 15)


def test_sdk_raises_the_error_event(messages_server: MessagesServer) -> None:
    messages_server.chunks = replay(TEXT_ONLY[:2], UpstreamTimeout("The upstream did not answer within 30s"))
    client = anthropic.Anthropic(base_url=messages_server.base_url, api_key="x", max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
        ) as stream,
    ):
        stream.get_final_message()
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "The upstream did not answer within 30s"},
    }
