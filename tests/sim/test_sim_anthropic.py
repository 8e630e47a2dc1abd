"""The simulator's Anthropic Messages wire through the official anthropic SDK."""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest
import tiktoken

MODEL = "sim/claude-3-5-haiku-latest"
CL100K = tiktoken.get_encoding("cl100k_base")
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location"],
}
TOOLS: list[Any] = [{"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_SCHEMA}]


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_message_shape_and_usage(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=1024, messages=ask("Tell me about owls."))
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.stop_reason == "end_turn" and message.stop_sequence is None
    block = message.content[0]
    assert block.type == "text" and block.text
    assert message.usage.output_tokens == len(CL100K.encode(block.text))
    assert message.usage.input_tokens > 0
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0
    again = claude.messages.create(model=MODEL, max_tokens=1024, messages=ask("Tell me about owls."))
    assert again.content == message.content


def test_same_conversation_same_answer_on_both_wires(
    claude: anthropic.Anthropic, client: openai.OpenAI
) -> None:
    message = claude.messages.create(
        model=MODEL, max_tokens=1024, system="Be brief.", messages=ask("Why is the sky blue?")
    )
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, *ask("Why is the sky blue?")]
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == chat.choices[0].message.content


def test_stream_events_follow_the_documented_order(claude: anthropic.Anthropic, sim_url: str) -> None:
    question = ask("Describe a forest at dawn.")
    body = {"model": MODEL, "max_tokens": 1024, "messages": question, "stream": True}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", f"{sim_url}/v1/messages", json=body, headers=headers) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        names = [line.removeprefix("event: ") for line in raw.iter_lines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    whole = claude.messages.create(model=MODEL, max_tokens=1024, messages=question)
    events = list(claude.messages.create(model=MODEL, max_tokens=1024, messages=question, stream=True))
    start = events[0]
    assert start.type == "message_start" and start.message.content == [] and start.message.stop_reason is None
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert whole.content[0].type == "text" and text == whole.content[0].text
    delta = events[-2]
    assert delta.type == "message_delta" and delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == whole.usage.output_tokens


def test_stream_helper_gives_the_final_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MODEL, max_tokens=20, messages=ask("Write a poem about rain.")
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens <= 20
    assert final.content[0].type == "text" and final.content[0].text == streamed


def test_stop_sequences(claude: anthropic.Anthropic) -> None:
    full = claude.messages.create(model=MODEL, max_tokens=1024, messages=ask("Talk about bridges."))
    assert full.content[0].type == "text"
    text = full.content[0].text
    stop = " " + text.split()[5] + " "
    cut = claude.messages.create(
        model=MODEL, max_tokens=1024, messages=ask("Talk about bridges."), stop_sequences=[stop]
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].type == "text" and cut.content[0].text == text[: text.index(stop)]


def test_tool_use_and_the_follow_up(claude: anthropic.Anthropic) -> None:
    question = ask("Please get_weather for Madrid")
    message = claude.messages.create(model=MODEL, max_tokens=512, tools=TOOLS, messages=question)
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    jsonschema.validate(block.input, WEATHER_SCHEMA)
    with claude.messages.stream(model=MODEL, max_tokens=512, tools=TOOLS, messages=question) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == block.input
    follow_up: list[Any] = [
        *question,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "18C and sunny"}],
        },
    ]
    answer = claude.messages.create(model=MODEL, max_tokens=512, tools=TOOLS, messages=follow_up)
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"


def test_tool_choice(claude: anthropic.Anthropic) -> None:
    def first_block(**options: Any) -> str:
        message = claude.messages.create(
            model=MODEL, max_tokens=256, tools=TOOLS, messages=ask("Hello"), **options
        )
        return message.content[0].type

    assert first_block() == "text"
    assert first_block(tool_choice={"type": "any"}) == "tool_use"
    assert first_block(tool_choice={"type": "tool", "name": "get_weather"}) == "tool_use"
    assert first_block(tool_choice={"type": "none"}) == "text"


def test_explicit_cache_control_writes_then_reads(claude: anthropic.Anthropic) -> None:
    policy = f"Policy {uuid.uuid4().hex}. " + "Refunds are issued within thirty days of purchase. " * 150
    system: Any = [{"type": "text", "text": policy, "cache_control": {"type": "ephemeral"}}]
    first = claude.messages.create(
        model=MODEL, max_tokens=64, system=system, messages=ask("Can I get a refund?")
    )
    second = claude.messages.create(
        model=MODEL, max_tokens=64, system=system, messages=ask("Can I get a refund?")
    )
    written = first.usage.cache_creation_input_tokens or 0
    read = second.usage.cache_read_input_tokens or 0
    assert written >= 1024 and first.usage.cache_read_input_tokens == 0
    assert read == written and second.usage.cache_creation_input_tokens == 0
    assert first.usage.input_tokens + written == second.usage.input_tokens + read
    plain = claude.messages.create(
        model=MODEL, max_tokens=64, system=policy, messages=ask("Can I get a refund?")
    )
    assert plain.usage.cache_read_input_tokens == 0  # without a breakpoint Anthropic caches nothing


def test_validation_errors_read_like_anthropic(claude: anthropic.Anthropic, sim_url: str) -> None:
    # The SDK itself refuses to send a request without max_tokens, so this one goes out raw.
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    raw = httpx.post(f"{sim_url}/v1/messages", json={"model": MODEL, "messages": ask("hi")}, headers=headers)
    assert raw.status_code == 400
    assert raw.json()["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    assert raw.json()["request_id"] == raw.headers["request-id"]
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"model": MODEL, "max_tokens": 0, "messages": ask("hi")},
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
            "messages.0.role: Input should be",
        ),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages: at least one message is required"),
    ]
    for body, message in cases:
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude.messages.create(**body)
        assert caught.value.status_code == 400
        assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "error"
        assert caught.value.body["error"] == {
            "type": "invalid_request_error",
            "message": caught.value.body["error"]["message"],
        }
        assert message in caught.value.body["error"]["message"]


def test_missing_key_gets_the_real_401(sim_url: str) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": ask("hi")}
    answer = httpx.post(f"{sim_url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert answer.status_code == 401
    assert answer.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }
    openai_answer = httpx.post(f"{sim_url}/v1/chat/completions", json={"model": MODEL, "messages": ask("hi")})
    assert openai_answer.status_code == 401
    assert openai_answer.json()["error"]["message"].startswith("You didn't provide an API key.")


def test_a_configured_key_must_match(start_sim: Any) -> None:
    with start_sim(api_key="sk-right") as url:
        with openai.OpenAI(
            base_url=f"{url}/v1", api_key="sk-wrong-key-123", max_retries=0, timeout=5
        ) as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                wrong.models.list()
        assert caught.value.code == "invalid_api_key"
        with anthropic.Anthropic(base_url=url, api_key="sk-wrong", max_retries=0, timeout=5) as bad:
            with pytest.raises(anthropic.AuthenticationError):
                bad.messages.create(model=MODEL, max_tokens=5, messages=ask("hi"))
        with anthropic.Anthropic(base_url=url, api_key="sk-right", max_retries=0, timeout=5) as good:
            assert good.messages.create(model=MODEL, max_tokens=5, messages=ask("hi")).content
