"""Streaming and tool calls through the official openai SDK, sync and async."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
import tiktoken

O200K = tiktoken.get_encoding("o200k_base")
MODEL = "sim/gpt-4o"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["location", "unit"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_PARAMS},
    },
    {
        "type": "function",
        "function": {
            "name": "search_flights",
            "parameters": {
                "type": "object",
                "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}},
                "required": ["origin", "destination"],
            },
        },
    },
]


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_stream_matches_the_non_streamed_answer(client: openai.OpenAI) -> None:
    question = ask("What makes a good cup of tea?")
    whole = client.chat.completions.create(model=MODEL, messages=question)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=question, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(contents) == whole.choices[0].message.content
    assert whole.usage is not None
    # Each content delta carries 1-3 tokens.
    assert whole.usage.completion_tokens / 3 <= len(contents) <= whole.usage.completion_tokens
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=ask("Hi"), stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_stream_with_n_interleaves_choices(client: openai.OpenAI) -> None:
    question = ask("Pick a fruit.")
    whole = client.chat.completions.create(model=MODEL, messages=question, n=2)
    texts = ["", ""]
    for chunk in client.chat.completions.create(model=MODEL, messages=question, n=2, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [c.message.content for c in whole.choices]


def test_tool_call_when_the_user_names_the_tool(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Use get_weather for Lisbon"), tools=TOOLS
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMS)
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_tool_choice_modes(client: openai.OpenAI) -> None:
    def calls(text: str, **options: Any) -> list[str]:
        reply = client.chat.completions.create(model=MODEL, messages=ask(text), tools=TOOLS, **options)
        return [c.function.name for c in reply.choices[0].message.tool_calls or []]

    assert calls("Tell me a story") == []
    assert calls("Use get_weather", tool_choice="none") == []
    assert len(calls("Tell me a story", tool_choice="required")) == 1
    forced = {"type": "function", "function": {"name": "search_flights"}}
    assert calls("Use get_weather", tool_choice=forced) == ["search_flights"]
    assert calls("get_weather and search flights please") == ["get_weather", "search_flights"]
    assert calls("get_weather and search flights please", parallel_tool_calls=False) == ["get_weather"]


def test_after_the_tool_result_the_model_answers_in_words(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=ask("Call get_weather for Oslo"), tools=TOOLS
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    follow_up: list[Any] = [
        *ask("Call get_weather for Oslo"),
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 4}'},
    ]
    second = client.chat.completions.create(model=MODEL, messages=follow_up, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    assert second.usage and first.usage and second.usage.prompt_tokens > first.usage.prompt_tokens


def test_streamed_tool_call_arrives_as_argument_deltas(client: openai.OpenAI) -> None:
    question = ask("get_weather in Kyoto please")
    whole = client.chat.completions.create(model=MODEL, messages=question, tools=TOOLS)
    expected = (whole.choices[0].message.tool_calls or [])[0]
    chunks = list(client.chat.completions.create(model=MODEL, messages=question, tools=TOOLS, stream=True))
    first = chunks[0].choices[0].delta.tool_calls
    assert (
        first and first[0].id == expected.id and first[0].function and first[0].function.name == "get_weather"
    )
    pieces = [
        d.function.arguments
        for c in chunks[1:]
        for d in (c.choices[0].delta.tool_calls or [])
        if d.function and d.function.arguments
    ]
    assert len(pieces) > 1 and "".join(pieces) == expected.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_helper_accumulates_tool_arguments(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=MODEL, messages=ask("search_flights from Rome"), tools=TOOLS
    ) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "search_flights"
    assert set(json.loads(call.function.arguments)) >= {"origin", "destination"}


@pytest.mark.anyio
async def test_async_client_chat_and_stream(sim_url: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{sim_url}/v1", api_key="sk-test", max_retries=0, timeout=10
    ) as sdk:
        whole = await sdk.chat.completions.create(model=MODEL, messages=ask("Async hello"))
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=ask("Async hello"), stream=True, stream_options={"include_usage": True}
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            usage = chunk.usage or usage
    assert text == whole.choices[0].message.content
    assert usage is not None and whole.usage is not None and usage.total_tokens == whole.usage.total_tokens


def test_legacy_completions(client: openai.OpenAI) -> None:
    default = client.completions.create(model="sim/gpt-3.5-turbo-instruct", prompt="Once upon a time")
    cl100k = tiktoken.get_encoding("cl100k_base")
    assert default.object == "text_completion"
    assert default.choices[0].finish_reason == "length"  # the endpoint's real default max_tokens is 16
    assert (
        default.usage and default.usage.completion_tokens == len(cl100k.encode(default.choices[0].text)) <= 16
    )
    assert default.usage.prompt_tokens == len(cl100k.encode("Once upon a time"))
    longer = client.completions.create(
        model="sim/gpt-3.5-turbo-instruct", prompt=["Once upon a time", "In a galaxy"], max_tokens=300, n=2
    )
    assert [c.index for c in longer.choices] == [0, 1, 2, 3]
    assert longer.choices[0].text.startswith(default.choices[0].text)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="sim/gpt-3.5-turbo-instruct", prompt="Once upon a time", stream=True
        )
        if c.choices
    )
    assert streamed == default.choices[0].text
