"""Stored answers: recorded from real simulated streams, replayed as JSON and as SSE.

The simulated provider runs in process (the real one, behind the Provider protocol); a
streamed answer must assemble into exactly the JSON answer the same request gets unstreamed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.cache import AnswerRecorder, CachedAnswer, assemble, keep_answer
from gateway.config import Deployment
from gateway.errors import UpstreamError
from gateway.providers.base import DONE_EVENT, Endpoint, ProviderCall, ProviderResponse, StreamWrapper, Usage
from gateway.sim.transport import SimProvider
from gateway.wire.anthropic_stream import AnthropicStream

pytestmark = pytest.mark.anyio

DEPLOYMENT = Deployment(provider="sim", model="*", timeout_s=5)
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}}}},
]  # fmt: skip
CHAT_BODIES: dict[str, dict[str, Any]] = {
    "text": {"messages": [{"role": "user", "content": "Tell me about caches."}], "max_tokens": 120},
    "length": {"messages": [{"role": "user", "content": "Tell me about queues."}], "max_tokens": 7},
    "tools": {"messages": [{"role": "user", "content": "get_weather and get_time for Paris?"}], "tools": TOOLS},
    "n2-logprobs": {"messages": [{"role": "user", "content": "Two takes."}], "n": 2, "max_tokens": 20,
                    "logprobs": True, "top_logprobs": 2},
}  # fmt: skip


async def _ask(
    endpoint: Endpoint, body: dict[str, Any], *, stream: bool, headers: dict[str, str] | None = None
) -> ProviderResponse:
    full = {"model": "sim/gpt-4o", "seed": 5, **body}
    if stream:
        full["stream"] = True
    return await SimProvider().send(
        ProviderCall(endpoint, full, stream=stream, headers=headers or {}), DEPLOYMENT
    )


async def _record(endpoint: Endpoint, response: ProviderResponse) -> tuple[list[bytes], list[CachedAnswer]]:
    assert response.stream is not None
    answers: list[CachedAnswer] = []
    recorder = AnswerRecorder(response.stream, endpoint, answers.append)
    pieces = [piece async for piece in recorder]
    await asyncio.sleep(0)  # the answer is handed on after the last piece has gone
    return pieces, answers


def _without_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("id", "created")}


@pytest.mark.parametrize("case", sorted(CHAT_BODIES))
@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_recorded_stream_assembles_into_the_json_answer(case: str, include_usage: bool) -> None:
    body = CHAT_BODIES[case]
    expected = (await _ask("chat", body, stream=False)).json()
    streamed = {**body, "stream_options": {"include_usage": include_usage}}
    _, answers = await _record("chat", await _ask("chat", streamed, stream=True))
    assert len(answers) == 1
    got = answers[0].body
    assert len(got["choices"]) == body.get("n", 1)
    if not include_usage:
        # The client did not ask for the usage chunk: only the parsed counts are left.
        assert {k: got["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == (
            {k: expected["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        )
        got, expected = {**got, "usage": None}, {**expected, "usage": None}
    assert got == _without_ids(expected)
    ChatCompletion.model_validate({"id": "x", "created": 0, **answers[0].body})


async def test_a_recorded_completion_stream_assembles_into_the_json_answer() -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 30, "stream_options": {"include_usage": True}}
    expected = (
        await _ask("completions", {k: v for k, v in body.items() if k != "stream_options"}, stream=False)
    ).json()
    _, answers = await _record("completions", await _ask("completions", body, stream=True))
    assert answers[0].body == _without_ids(expected)
    Completion.model_validate({"id": "x", "created": 0, **answers[0].body})


async def test_the_recorder_forwards_each_piece_as_it_comes_and_unchanged() -> None:
    produced: list[int] = []

    class Source:
        def __init__(self) -> None:
            self.usage: Usage | None = None
            self.seen: list[bytes] = []

        def __aiter__(self) -> AsyncIterator[bytes]:
            return self._gen()

        async def _gen(self) -> AsyncIterator[bytes]:
            for i in range(3):
                produced.append(i)
                yield b'data: {"choices":[{"index":0,"delta":{"content":"%d"}}]}\n\n' % i

        async def aclose(self) -> None:
            pass

    recorder = AnswerRecorder(Source(), "chat", lambda answer: None)
    iterator = aiter(recorder)
    assert produced == []
    first = await anext(iterator)
    assert produced == [0] and first == b'data: {"choices":[{"index":0,"delta":{"content":"0"}}]}\n\n'
    await recorder.aclose()


async def test_a_stream_broken_midway_is_not_an_answer() -> None:
    response = await _ask("chat", CHAT_BODIES["text"], stream=True, headers={"x-sim-fault": "malformed"})
    answers: list[CachedAnswer] = []
    recorder = AnswerRecorder(response.stream, "chat", answers.append)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError):
        async for _ in recorder:
            pass
    await asyncio.sleep(0)
    assert answers == []


async def test_a_client_that_stops_reading_early_leaves_nothing_stored() -> None:
    response = await _ask("chat", {**CHAT_BODIES["text"], "max_tokens": 200}, stream=True)
    answers: list[CachedAnswer] = []
    recorder = AnswerRecorder(response.stream, "chat", answers.append)  # type: ignore[arg-type]
    async for _ in recorder:
        break
    await recorder.aclose()  # as the server does when the client hangs up
    await asyncio.sleep(0)
    assert answers == []


async def test_a_reader_that_stops_at_done_still_has_a_whole_answer() -> None:
    """The Anthropic translation stops reading at [DONE] and closes its source."""
    response = await _ask("chat", CHAT_BODIES["text"], stream=True)
    answers: list[CachedAnswer] = []
    recorder = AnswerRecorder(response.stream, "chat", answers.append)  # type: ignore[arg-type]
    events = [piece async for piece in AnthropicStream(recorder, model="claude")]
    await asyncio.sleep(0)
    assert b"message_stop" in events[-1]
    expected = (await _ask("chat", CHAT_BODIES["text"], stream=False)).json()
    assert len(answers) == 1 and answers[0].body["choices"] == expected["choices"]


async def test_a_stream_whose_choice_never_finished_is_not_an_answer() -> None:
    unfinished = [b'data: {"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\n\n',
                  DONE_EVENT]  # fmt: skip
    body = assemble("chat", unfinished)
    assert body is not None and CachedAnswer.from_body("chat", body) is None
    assert assemble("chat", [b'data: {"error":{"message":"boom"}}\n\n']) is None
    assert assemble("chat", [b"data: {not json\n\n"]) is None


async def test_a_stream_with_crlf_line_ends_and_multi_line_data_assembles_the_same() -> None:
    response = await _ask("chat", CHAT_BODIES["text"], stream=True)
    assert response.stream is not None
    pieces = [piece async for piece in response.stream]
    expected = assemble("chat", pieces)
    # The same events, as a server with CRLF line ends and JSON split over data lines may send them.
    rewritten = [
        piece.replace(b'{"id"', b'{\r\ndata: "id"').replace(b"\n\n", b"\r\n\r\n") for piece in pieces
    ]
    assert expected is not None and assemble("chat", rewritten) == expected


# --- several caches keeping one response --------------------------------------------


async def test_caches_keeping_one_stream_share_one_recording_and_one_answer() -> None:
    response = await _ask("chat", CHAT_BODIES["text"], stream=True)
    first: list[CachedAnswer] = []
    second: list[CachedAnswer] = []
    keep_answer(response, "chat", first.append)
    recorder = response.stream
    assert isinstance(recorder, AnswerRecorder)
    # A wrapper that passes pieces on unchanged in between (as another stage may add).
    response.stream = _PassThrough(recorder)
    keep_answer(response, "chat", second.append)
    assert isinstance(response.stream, _PassThrough)  # not wrapped a second time
    async for _ in response.stream:
        pass
    await response.stream.aclose()
    await asyncio.sleep(0)
    assert len(first) == 1 and second == first and second[0] is first[0]


async def test_caches_keeping_one_json_response_get_one_answer_built_once() -> None:
    response = await _ask("chat", CHAT_BODIES["text"], stream=False)
    first: list[CachedAnswer] = []
    second: list[CachedAnswer] = []
    keep_answer(response, "chat", first.append)
    keep_answer(response, "chat", second.append)
    assert first == []  # built once the response is on its way, not before
    await asyncio.sleep(0)
    assert len(first) == 1 and second[0] is first[0]
    await asyncio.sleep(0)
    assert len(first) == 1  # and once only


class _PassThrough(StreamWrapper):
    async def _iterate(self) -> AsyncIterator[bytes]:
        async for piece in self._source:
            yield piece


# --- replay --------------------------------------------------------------------------


def _chunks(response: ProviderResponse) -> tuple[bytes, list[dict[str, Any]]]:
    assert response.stream is not None
    raw = b"".join(response.stream.seen)  # type: ignore[attr-defined]
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    return raw, [orjson.loads(e) for e in events[:-1]]


@pytest.mark.parametrize("case", sorted(CHAT_BODIES))
async def test_a_json_answer_replays_as_a_stream_that_assembles_back(case: str) -> None:
    answer = CachedAnswer.from_response("chat", await _ask("chat", CHAT_BODIES[case], stream=False))
    assert answer is not None
    replay = answer.stream_response(include_usage=True, request_id="abc", created=123)
    raw, chunks = _chunks(replay)
    for chunk in chunks:
        parsed = ChatCompletionChunk.model_validate(chunk)
        assert (parsed.id, parsed.created, parsed.object) == ("chatcmpl-abc", 123, "chat.completion.chunk")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == answer.body["usage"]
    assert assemble("chat", [raw]) == answer.body
    assert replay.usage == answer.usage and replay.usage is not None
    # Everything arrives in one piece, [DONE] last, for the server to send at once.
    assert [piece async for piece in replay.stream] == [raw]  # type: ignore[union-attr]
    without_usage = _chunks(answer.stream_response(include_usage=False))[1]
    assert all(chunk["choices"] and "usage" not in chunk for chunk in without_usage)


async def test_long_content_replays_in_a_few_pieces() -> None:
    text = "word " * 300
    answer = CachedAnswer.from_body("chat", {"object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})  # fmt: skip
    assert answer is not None
    _, chunks = _chunks(answer.stream_response(include_usage=False))
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert 3 <= len([p for p in pieces if p]) <= 10 and "".join(p or "" for p in pieces) == text


async def test_a_completion_replays_as_a_stream_that_assembles_back() -> None:
    answer = CachedAnswer.from_response(
        "completions", await _ask("completions", {"prompt": "Once", "max_tokens": 9}, stream=False)
    )
    assert answer is not None
    raw, chunks = _chunks(answer.stream_response(include_usage=True))
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert assemble("completions", [raw]) == answer.body


async def test_a_streamed_answer_replays_as_json_with_a_fresh_id() -> None:
    _, answers = await _record(
        "chat",
        await _ask("chat", {**CHAT_BODIES["tools"], "stream_options": {"include_usage": True}}, stream=True),
    )
    replay = answers[0].json_response("req123", created=456)
    body = replay.json()
    assert (body["id"], body["object"], body["created"]) == ("chatcmpl-req123", "chat.completion", 456)
    assert list(body)[:4] == ["id", "object", "created", "model"]
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.tool_calls and parsed.choices[0].finish_reason == "tool_calls"
    assert replay.usage == answers[0].usage


async def test_a_replayed_stream_translates_to_anthropic_events() -> None:
    answer = CachedAnswer.from_response("chat", await _ask("chat", CHAT_BODIES["text"], stream=False))
    assert answer is not None
    replay = answer.stream_response(True).stream
    assert replay is not None
    raw = b"".join([piece async for piece in AnthropicStream(replay, model="claude-x")])
    names = [line[7:] for line in raw.decode().split("\n") if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop" and "message_delta" in names
    texts = [orjson.loads(line[6:]) for line in raw.decode().split("\n") if line.startswith("data: ")]
    text = "".join(e["delta"]["text"] for e in texts if e["type"] == "content_block_delta")
    assert text == answer.body["choices"][0]["message"]["content"]
    delta = next(e for e in texts if e["type"] == "message_delta")
    assert delta["usage"]["output_tokens"] == answer.body["usage"]["completion_tokens"]


async def test_embeddings_replay_as_json_only() -> None:
    response = await SimProvider().send(
        ProviderCall("embeddings", {"model": "sim/text-embedding-3-small", "input": ["a", "b"]}), DEPLOYMENT
    )
    answer = CachedAnswer.from_response("embeddings", response)
    assert answer is not None
    assert answer.json_response("r").json() == response.json()
    with pytest.raises(ValueError):
        answer.stream_response(include_usage=False)


# --- storing -------------------------------------------------------------------------


async def test_bytes_round_trip_and_refuse_what_is_not_an_answer() -> None:
    answer = CachedAnswer.from_response("chat", await _ask("chat", CHAT_BODIES["tools"], stream=False))
    assert answer is not None
    assert CachedAnswer.from_bytes(answer.to_bytes()) == answer
    for bad in (b"", b"{}", b"[1]", b'{"v":99,"e":"chat","t":0,"b":{}}', b"\xff"):
        with pytest.raises(ValueError):
            CachedAnswer.from_bytes(bad)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "no"}},
        {"object": "chat.completion", "choices": []},
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": None}],
        },
        {"object": "list", "data": []},
    ],
)
async def test_errors_and_unfinished_answers_are_never_kept(body: dict[str, Any]) -> None:
    endpoint: Endpoint = "embeddings" if body.get("object") == "list" else "chat"
    assert CachedAnswer.from_body(endpoint, body) is None


async def test_only_200_json_answers_are_kept() -> None:
    body = {
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}],
    }
    assert CachedAnswer.from_response("chat", ProviderResponse.from_json(body)) is not None
    assert CachedAnswer.from_response("chat", ProviderResponse.from_json(body, status=202)) is None
