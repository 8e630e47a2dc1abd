"""Prompt tokens counted here when a provider reports none, checked against the simulator."""

from __future__ import annotations

from typing import Any

import pytest
import tiktoken

from gateway.accounting.tokens import (
    count_prompt,
    count_text,
    count_tools,
    encoding_for,
    encoding_name,
    message_tokens,
)
from gateway.sim.core import SimCore


@pytest.fixture(scope="module")
def sim() -> SimCore:
    return SimCore()


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o", "gpt-4o-mini", "openai/gpt-4o", "sim/gpt-4o-mini", "chatgpt-4o-latest", "gpt-4.1-nano",
        "gpt-4.5-preview", "gpt-5", "o1", "o1-mini", "o3-mini", "o4-mini", "azure/GPT-4o",
    ],
)  # fmt: skip
def test_the_gpt_4o_generation_and_later_use_o200k(model: str) -> None:
    assert encoding_name(model) == "o200k_base"
    assert encoding_for(model).name == "o200k_base"


@pytest.mark.parametrize(
    "model", ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "claude-haiku-4-5", "anthropic/claude-sonnet-4-5", ""]
)
def test_older_and_other_providers_models_use_cl100k(model: str) -> None:
    assert encoding_for(model).name == "cl100k_base"


def test_encodings_are_loaded_once() -> None:
    assert encoding_for("gpt-4o") is encoding_for("openai/o3-mini")
    assert encoding_for("gpt-4") is encoding_for("claude-haiku-4-5")


def test_text_counts_are_tiktokens() -> None:
    text = "Tollgate meters every token: naïve café, 東京, emoji 🚀."
    assert count_text("gpt-4o", text) == len(tiktoken.get_encoding("o200k_base").encode(text))
    assert count_text("gpt-4", text) == len(tiktoken.get_encoding("cl100k_base").encode(text))


def test_special_token_text_in_user_input_is_counted_as_plain_text() -> None:
    assert count_text("gpt-4o", "<|endoftext|>") > 1


def test_one_message_follows_openais_documented_accounting() -> None:
    enc = tiktoken.get_encoding("o200k_base")
    body = {"messages": [{"role": "user", "content": "Hello there", "name": "ada"}]}
    # 3 per message + role + content + 1 for the name + the name + 3 priming the reply
    expected = 3 + len(enc.encode("user")) + len(enc.encode("Hello there")) + 1 + len(enc.encode("ada")) + 3
    assert count_prompt("chat", "gpt-4o", body) == expected


_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

_CHATS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hello"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?", "name": "ada"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Japan? Answer in one word, please.\n\nThanks!"},
    ],
    [{"role": "developer", "content": ""}, {"role": "user", "content": "東京 and café <|endoftext|>"}],
    [
        {
            "role": "user",
            "content": [{"type": "text", "text": "First part."}, {"type": "text", "text": "Second."}],
        }
    ],
    [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 21}'},
    ],
]


@pytest.mark.parametrize("model", ["gpt-4o", "sim/gpt-4o-mini", "gpt-4", "claude-haiku-4-5"])
@pytest.mark.parametrize("messages", _CHATS)
@pytest.mark.parametrize("tools", [None, [_WEATHER_TOOL]])
def test_chat_prompts_count_exactly_as_the_simulator_bills_them(
    sim: SimCore, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> None:
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": 1}
    if tools is not None:
        body["tools"] = tools
    assert count_prompt("chat", model, body) == sim.chat_completion(body)["usage"]["prompt_tokens"]


@pytest.mark.parametrize("prompt", ["Once upon a time", ["Say this.", "And that, in 東京."]])
def test_completion_prompts_count_as_the_simulator_bills_them(sim: SimCore, prompt: str | list[str]) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "max_tokens": 1}
    assert (
        count_prompt("completions", "gpt-3.5-turbo-instruct", body)
        == (sim.text_completion(body)["usage"]["prompt_tokens"])
    )


def test_token_id_prompts_count_one_token_per_id() -> None:
    assert count_prompt("completions", "gpt-4o", {"prompt": [1, 2, 3]}) == 3
    assert count_prompt("completions", "gpt-4o", {"prompt": [[1, 2], [3, 4, 5], "hi"]}) == 6


@pytest.mark.parametrize(
    "value",
    ["The food was delicious.", ["one", "two, three", "東京"], [101, 2023, 999], [[1, 2, 3], [4, 5]]],
)
def test_embedding_inputs_count_as_the_simulator_bills_them(sim: SimCore, value: Any) -> None:
    body = {"model": "text-embedding-3-small", "input": value}
    assert (
        count_prompt("embeddings", "text-embedding-3-small", body)
        == (sim.embeddings(body)["usage"]["prompt_tokens"])
    )


def test_content_parts_that_are_not_text_are_left_out() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with_image = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}]}
    text_only = {"messages": [{"role": "user", "content": "What is it?"}]}
    assert count_prompt("chat", "gpt-4o", with_image) == count_prompt("chat", "gpt-4o", text_only)


def test_legacy_functions_and_function_call_are_counted() -> None:
    plain = {"messages": [{"role": "assistant", "content": None}]}
    legacy = {
        "messages": [
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}}
        ],
        "functions": [{"name": "f", "parameters": {"type": "object"}}],
    }
    assert count_prompt("chat", "gpt-4o", legacy) > count_prompt("chat", "gpt-4o", plain)


_ODD_BODIES: list[tuple[str, Any]] = [
    ("chat", {}),
    ("chat", {"messages": None}),
    ("chat", {"messages": "hello"}),
    ("chat", {"messages": [None, 3, "text", [], {"role": 7, "content": 12, "name": ["x"]}]}),
    ("chat", {"messages": [{"role": "user", "content": [None, 5, "bare string", {"type": "text", "text": 9}]}]}),
    ("chat", {"messages": [{"role": "user", "content": {"text": "an object"}}]}),
    ("chat", {"messages": [{"role": "assistant", "tool_calls": "nope", "function_call": "nope"}]}),
    ("chat", {"messages": [{"role": "assistant", "tool_calls": [None, {"function": None}, {"function": {}}]}]}),
    ("chat", {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 1, "arguments": {"a": 1}}}]}]}),
    ("chat", {"tools": "nope", "functions": {"a": 1}, "messages": []}),
    ("chat", {"tools": [None, "x", {"function": "x"}, {"function": {"name": None}}, {"type": "custom"}]}),
    ("chat", {"tools": [{"function": {"name": "huge", "parameters": {"max": 2**70}}}]}),
    ("completions", {}),
    ("completions", {"prompt": None}),
    ("completions", {"prompt": {"text": "object"}}),
    ("completions", {"prompt": [True, None, 1.5, [True, "x", 3], {"a": 1}, "ok"]}),
    ("embeddings", {"input": 42}),
    ("embeddings", {"input": [[["nested"]], [None], []]}),
]  # fmt: skip


@pytest.mark.parametrize(("endpoint", "body"), _ODD_BODIES)
def test_odd_shapes_never_raise_and_count_only_what_is_text(endpoint: Any, body: Any) -> None:
    count = count_prompt(endpoint, "gpt-4o", body)
    assert isinstance(count, int) and count >= 0


def test_odd_shapes_still_count_the_text_they_hold() -> None:
    enc = tiktoken.get_encoding("o200k_base")
    body = {"messages": [{"role": "user", "content": [None, 5, {"type": "text", "text": "kept"}]}]}
    assert count_prompt("chat", "gpt-4o", body) == 3 + len(enc.encode("user")) + len(enc.encode("kept")) + 3
    assert count_prompt("completions", "gpt-4o", {"prompt": [True, None, [True, "x", 3], "ok"]}) == 1 + len(
        enc.encode("ok")
    )
    assert count_prompt("chat", "gpt-4o", {}) == 3
    assert count_prompt("chat", "gpt-4o", "not a body") == 0  # type: ignore[arg-type]


def test_long_texts_counted_again_give_the_same_count_per_encoding() -> None:
    """A long text's count is remembered per encoding: the same text under another encoding
    is counted by that encoding, and a text one character apart is counted afresh."""
    text = "The history of the conversation, sent again on every turn. " * 40
    for _ in range(2):
        assert count_text("gpt-4o", text) == len(tiktoken.get_encoding("o200k_base").encode(text))
        assert count_text("gpt-4", text) == len(tiktoken.get_encoding("cl100k_base").encode(text))
        assert count_text("gpt-4o", text + "!") == len(tiktoken.get_encoding("o200k_base").encode(text + "!"))


def test_a_chat_prompt_is_its_base_its_tools_and_its_messages() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi " * 200, "name": "a"},
    ]
    whole = count_prompt("chat", "gpt-4o", {"tools": tools, "messages": messages})
    parts = count_prompt("chat", "gpt-4o", {}) + count_tools("gpt-4o", tools)
    assert whole == parts + sum(message_tokens("gpt-4o", m) for m in messages)
    assert count_tools("gpt-4o", []) == 0 and count_tools("gpt-4o", None) == 0
