"""The Anthropic Messages request and (non-streaming) response translation."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import anthropic
import pytest

from gateway.errors import InvalidRequest, UpstreamError
from gateway.wire.anthropic import UNPARSED_ARGUMENTS_KEY, chat_to_message, messages_to_chat

if TYPE_CHECKING:
    from tests.wire.conftest import MessagesServer

MODEL = "claude-sonnet-4-5"
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}
        },
        "required": ["location"],
    },
}
WEATHER_FUNCTION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": WEATHER_TOOL["input_schema"],
    },
}


def request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }
    body.update(overrides)
    return body


# ---- request: translation rules ------------------------------------------------------------


def test_minimal_request() -> None:
    assert messages_to_chat(request()) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
        "max_completion_tokens": 1024,
    }


def test_system_string_becomes_a_leading_system_message() -> None:
    chat = messages_to_chat(request(system="You are a pirate."))
    assert chat["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert chat["messages"][1]["role"] == "user"


def test_system_text_blocks_are_joined() -> None:
    system = [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": "Be brief."}]
    chat = messages_to_chat(request(system=system))
    assert chat["messages"][0] == {"role": "system", "content": "You are Claude Code.\n\nBe brief."}


def test_empty_system_adds_no_message() -> None:
    assert messages_to_chat(request(system=""))["messages"] == [{"role": "user", "content": "Hello, Claude"}]


def test_system_role_message_in_the_list() -> None:
    messages = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}]
    assert messages_to_chat(request(messages=messages))["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
    ]


def test_user_text_and_images() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is in these images?", "cache_control": {"type": "ephemeral"}},
    ]
    chat = messages_to_chat(request(messages=[{"role": "user", "content": content}]))
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "What is in these images?", "cache_control": {"type": "ephemeral"}},
            ],
        }
    ]


def test_multi_turn_conversation_and_prefill() -> None:
    messages = [
        {"role": "user", "content": "What's the Greek name for Sun? (A) Sol (B) Helios (C) Sun"},
        {"role": "assistant", "content": [{"type": "text", "text": "The best answer is ("}]},
    ]
    assert messages_to_chat(request(messages=messages))["messages"] == [
        {"role": "user", "content": "What's the Greek name for Sun? (A) Sol (B) Helios (C) Sun"},
        {"role": "assistant", "content": "The best answer is ("},
    ]


def test_an_empty_final_assistant_message_is_dropped() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]
    assert messages_to_chat(request(messages=messages))["messages"] == [{"role": "user", "content": "Hi"}]


def test_sampling_stop_metadata_and_stream() -> None:
    chat = messages_to_chat(
        request(
            stop_sequences=["\n\nHuman:", "END"],
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            metadata={"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
            stream=True,
        )
    )
    assert chat == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
        "max_completion_tokens": 1024,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\nHuman:", "END"],
        "user": "13803d75-b4b5-4c3e-b2a2-6f21399b021b",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_stream_false_and_null_user_id_add_nothing() -> None:
    assert messages_to_chat(
        request(stream=False, metadata={"user_id": None}, stop_sequences=[])
    ) == messages_to_chat(request())


def test_documented_parameters_without_an_openai_equivalent_are_dropped() -> None:
    chat = messages_to_chat(
        request(
            thinking={"type": "enabled", "budget_tokens": 2048},
            service_tier="auto",
            container="container_011CZ",
            cache_control={"type": "ephemeral"},
            inference_geo=None,
            speed="standard",
            mcp_servers=[],
            context_management=None,
            diagnostics={"previous_message_id": "msg_01"},
        )
    )
    assert chat == messages_to_chat(request())


def test_tools_become_function_tools() -> None:
    strict_tool = {**WEATHER_TOOL, "name": "get_time", "strict": True, "cache_control": {"type": "ephemeral"}}
    chat = messages_to_chat(request(tools=[WEATHER_TOOL, strict_tool]))
    assert chat["tools"] == [
        WEATHER_FUNCTION,
        {
            "type": "function",
            "function": {**WEATHER_FUNCTION["function"], "name": "get_time", "strict": True},
            "cache_control": {"type": "ephemeral"},
        },
    ]
    assert "tool_choice" not in chat


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(tool_choice: dict[str, Any], expected: object) -> None:
    chat = messages_to_chat(request(tools=[WEATHER_TOOL], tool_choice=tool_choice))
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


@pytest.mark.parametrize("kind", ["auto", "any", "tool"])
def test_disable_parallel_tool_use(kind: str) -> None:
    choice = {"type": kind, "name": "get_weather", "disable_parallel_tool_use": True}
    if kind != "tool":
        del choice["name"]
    assert messages_to_chat(request(tools=[WEATHER_TOOL], tool_choice=choice))["parallel_tool_calls"] is False


def test_tool_choice_without_tools_is_dropped_when_it_changes_nothing() -> None:
    for kind in ("auto", "none"):
        assert messages_to_chat(request(tool_choice={"type": kind})) == messages_to_chat(request())


def test_structured_output_becomes_a_strict_json_schema() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    expected = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    config = {"effort": "low", "format": {"type": "json_schema", "schema": schema}}
    assert messages_to_chat(request(output_config=config))["response_format"] == expected
    beta = {"type": "json_schema", "schema": schema}
    assert messages_to_chat(request(output_format=beta))["response_format"] == expected
    assert "response_format" not in messages_to_chat(request(output_config={"effort": "high"}))


def test_tool_use_round_trip() -> None:
    """Assistant tool_use + user tool_result → assistant tool_calls, then tool messages, in order."""
    messages = [
        {"role": "user", "content": "What's the weather like in San Francisco and Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two cities, two calls.", "signature": "EqQBCgIYAhIM"},
                {"type": "text", "text": "I'll check both cities."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_01B2",
                    "name": "get_weather",
                    "input": {"location": "Paris, France"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "15 degrees",
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01B2",
                    "content": [
                        {"type": "text", "text": "Service unavailable"},
                        {"type": "text", "text": "retry"},
                    ],
                    "is_error": True,
                },
                {"type": "text", "text": "Use Celsius."},
            ],
        },
    ]
    chat = messages_to_chat(request(tools=[WEATHER_TOOL], messages=messages))
    assert chat["messages"] == [
        {"role": "user", "content": "What's the weather like in San Francisco and Paris?"},
        {
            "role": "assistant",
            "content": "I'll check both cities.",
            "tool_calls": [
                {
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA"}'},
                },
                {
                    "id": "toolu_01B2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
        {"role": "tool", "tool_call_id": "toolu_01B2", "content": "Error: Service unavailable\n\nretry"},
        {"role": "user", "content": [{"type": "text", "text": "Use Celsius."}]},
    ]


def test_tool_only_turns_and_results_split_over_consecutive_user_messages() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        {"role": "user", "content": "Thanks"},
    ]
    assert messages_to_chat(request(messages=messages))["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": ""},
        {"role": "user", "content": "Thanks"},
    ]


def test_result_is_a_fresh_dict() -> None:
    body = request(tools=[copy.deepcopy(WEATHER_TOOL)], stop_sequences=["END"])
    original = copy.deepcopy(body)
    chat = messages_to_chat(body)
    chat["tools"][0]["function"]["parameters"]["properties"].clear()
    chat["stop"].append("more")
    chat["messages"][0]["content"] = "changed"
    assert body == original


# ---- request: every 400, with the exact param and message --------------------------------

TOOL_CALL: dict[str, Any] = {
    "type": "tool_use",
    "id": "toolu_1",
    "name": "get_weather",
    "input": {"location": "Paris"},
}
CALLED: dict[str, Any] = {"role": "assistant", "content": [TOOL_CALL]}
ANSWERED: dict[str, Any] = {
    "role": "user",
    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "15"}],
}


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


BAD_REQUESTS: list[tuple[str, dict[str, Any], str, str]] = [
    # (test id, overrides, param, message after "<param>: ")
    ("model missing", {"model": None}, "model", "Field required"),
    ("model not a string", {"model": 3}, "model", "Input should be a valid string"),
    ("model empty", {"model": ""}, "model", "String should have at least 1 character"),
    ("max_tokens missing", {"max_tokens": None}, "max_tokens", "Field required"),
    ("max_tokens a string", {"max_tokens": "1024"}, "max_tokens", "Input should be a valid integer"),
    ("max_tokens a bool", {"max_tokens": True}, "max_tokens", "Input should be a valid integer"),
    ("max_tokens zero", {"max_tokens": 0}, "max_tokens", "Input should be greater than or equal to 1"),
    ("messages missing", {"messages": None}, "messages", "Field required"),
    ("messages not a list", {"messages": "hi"}, "messages", "Input should be a valid list"),
    ("messages empty", {"messages": []}, "messages", "at least one message is required"),
    ("message not an object", {"messages": ["hi"]}, "messages[0]", "Input should be an object"),
    ("role missing", {"messages": [{"content": "hi"}]}, "messages[0].role", "Field required"),
    (
        "role unknown",
        {"messages": [{"role": "human", "content": "hi"}]},
        "messages[0].role",
        "Input should be 'user', 'assistant' or 'system'",
    ),
    ("content missing", {"messages": [{"role": "user"}]}, "messages[0].content", "Field required"),
    (
        "content empty",
        {"messages": [{"role": "user", "content": ""}]},
        "messages[0].content",
        "all messages must have non-empty content except for the optional final assistant message",
    ),
    (
        "content a number",
        {"messages": [{"role": "user", "content": 7}]},
        "messages[0].content",
        "Input should be a valid string or a list of content blocks",
    ),
    (
        "block not an object",
        {"messages": [{"role": "user", "content": ["hi"]}]},
        "messages[0].content[0]",
        "Input should be an object",
    ),
    (
        "block type missing",
        {"messages": [user({"text": "hi"})]},
        "messages[0].content[0].type",
        "Field required",
    ),
    (
        "text block empty",
        {"messages": [user({"type": "text", "text": ""})]},
        "messages[0].content[0].text",
        "text content blocks must be non-empty",
    ),
    (
        "document block",
        {
            "messages": [
                user(
                    {"type": "text", "text": "Summarise"},
                    {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
                )
            ]
        },
        "messages[0].content[1].type",
        "'document' blocks are not supported in user messages; supported: text, image, tool_result",
    ),
    (
        "server tool block in assistant",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "server_tool_use"}]},
            ]
        },
        "messages[1].content[0].type",
        "'server_tool_use' blocks are not supported in assistant messages; "
        "supported: text, tool_use, thinking, redacted_thinking",
    ),
    (
        "image from the files api",
        {"messages": [user({"type": "image", "source": {"type": "file", "file_id": "file_011"}})]},
        "messages[0].content[0].source.type",
        "'file' image sources are not supported; supported: base64, url",
    ),
    (
        "image media type",
        {
            "messages": [
                user(
                    {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="}}
                )
            ]
        },
        "messages[0].content[0].source.media_type",
        "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
    ),
    (
        "image data missing",
        {"messages": [user({"type": "image", "source": {"type": "base64", "media_type": "image/png"}})]},
        "messages[0].content[0].source.data",
        "Field required",
    ),
    (
        "tool_use in a user message",
        {"messages": [user(TOOL_CALL)]},
        "messages[0].content[0].type",
        "'tool_use' blocks can only appear in assistant messages",
    ),
    (
        "tool_result in an assistant message",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": ANSWERED["content"]},
            ]
        },
        "messages[1].content[0].type",
        "'tool_result' blocks can only appear in user messages",
    ),
    (
        "tool_use input not an object",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{**TOOL_CALL, "input": "x"}]},
            ]
        },
        "messages[1].content[0].input",
        "Input should be an object",
    ),
    (
        "tool_use id missing",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{**TOOL_CALL, "id": ""}]},
            ]
        },
        "messages[1].content[0].id",
        "String should have at least 1 character",
    ),
    (
        "tool_use ids repeated",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [TOOL_CALL, TOOL_CALL]},
            ]
        },
        "messages[1].content[1].id",
        "`tool_use` ids must be unique: toolu_1",
    ),
    (
        "tool_use never answered",
        {"messages": [{"role": "user", "content": "hi"}, CALLED, {"role": "user", "content": "go on"}]},
        "messages[1]",
        "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    (
        "tool_use is the last message",
        {"messages": [{"role": "user", "content": "hi"}, CALLED]},
        "messages[1]",
        "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    (
        "tool_result answering nothing",
        {"messages": [ANSWERED]},
        "messages[0].content[0].tool_use_id",
        "unexpected `tool_use_id` found in `tool_result` blocks: toolu_1. "
        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
    ),
    (
        "tool_result twice",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                CALLED,
                user(*ANSWERED["content"], *ANSWERED["content"]),
            ]
        },
        "messages[2].content[1].tool_use_id",
        "duplicate `tool_result` for `tool_use_id`: toolu_1",
    ),
    (
        "text before tool_result",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                CALLED,
                user({"type": "text", "text": "here"}, *ANSWERED["content"]),
            ]
        },
        "messages[2].content[1]",
        "`tool_result` blocks must come before any other content in a user turn",
    ),
    (
        "tool_result with an image",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                CALLED,
                user(
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "image", "source": {}}],
                    }
                ),
            ]
        },
        "messages[2].content[0].content[0].type",
        "'image' blocks are not supported in tool results; supported: text",
    ),
    (
        "tool_result is_error not a bool",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                CALLED,
                user({**ANSWERED["content"][0], "is_error": "yes"}),
            ]
        },
        "messages[2].content[0].is_error",
        "Input should be a valid boolean",
    ),
    ("system a number", {"system": 1}, "system", "Input should be a valid string or a list of text blocks"),
    (
        "system image block",
        {"system": [{"type": "image", "source": {}}]},
        "system[0].type",
        "Input should be 'text'",
    ),
    (
        "unknown parameter",
        {"max_tokens_to_sample": 10},
        "max_tokens_to_sample",
        "Extra inputs are not permitted",
    ),
    ("thinking not an object", {"thinking": "enabled"}, "thinking", "Input should be an object"),
    ("service_tier not a string", {"service_tier": 1}, "service_tier", "Input should be a valid string"),
    ("temperature above 1", {"temperature": 1.5}, "temperature", "Input should be less than or equal to 1"),
    ("temperature a string", {"temperature": "hot"}, "temperature", "Input should be a valid number"),
    ("top_p negative", {"top_p": -0.1}, "top_p", "Input should be greater than or equal to 0"),
    ("top_k negative", {"top_k": -1}, "top_k", "Input should be greater than or equal to 0"),
    ("top_k a float", {"top_k": 1.5}, "top_k", "Input should be a valid integer"),
    ("stop_sequences a string", {"stop_sequences": "END"}, "stop_sequences", "Input should be a valid list"),
    (
        "stop sequence not a string",
        {"stop_sequences": ["END", 5]},
        "stop_sequences[1]",
        "Input should be a valid string",
    ),
    ("metadata not an object", {"metadata": "me"}, "metadata", "Input should be an object"),
    (
        "metadata user_id a number",
        {"metadata": {"user_id": 7}},
        "metadata.user_id",
        "Input should be a valid string",
    ),
    ("stream a string", {"stream": "true"}, "stream", "Input should be a valid boolean"),
    ("tools not a list", {"tools": WEATHER_TOOL}, "tools", "Input should be a valid list"),
    (
        "server tool",
        {"tools": [WEATHER_TOOL, {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]},
        "tools[1].type",
        "'web_search_20250305' is an Anthropic-defined tool and cannot be translated; "
        "only custom tools (name, description, input_schema) are supported",
    ),
    (
        "tool name pattern",
        {"tools": [{**WEATHER_TOOL, "name": "get weather"}]},
        "tools[0].name",
        "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
    ),
    (
        "tool names repeated",
        {"tools": [WEATHER_TOOL, WEATHER_TOOL]},
        "tools[1].name",
        "Tool names must be unique",
    ),
    ("tool schema missing", {"tools": [{"name": "noop"}]}, "tools[0].input_schema", "Field required"),
    (
        "tool description a list",
        {"tools": [{**WEATHER_TOOL, "description": ["x"]}]},
        "tools[0].description",
        "Input should be a valid string",
    ),
    (
        "tool_choice type unknown",
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "required"}},
        "tool_choice.type",
        "Input should be 'auto', 'any', 'tool' or 'none'",
    ),
    (
        "tool_choice a string",
        {"tools": [WEATHER_TOOL], "tool_choice": "auto"},
        "tool_choice",
        "Input should be an object",
    ),
    (
        "tool_choice tool without name",
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool"}},
        "tool_choice.name",
        "Field required",
    ),
    (
        "tool_choice names an unknown tool",
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool", "name": "get_time"}},
        "tool_choice.name",
        "tool 'get_time' is not defined in `tools`",
    ),
    (
        "tool_choice any without tools",
        {"tool_choice": {"type": "any"}},
        "tool_choice.type",
        "'any' requires at least one tool in `tools`",
    ),
    (
        "disable_parallel_tool_use not a bool",
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": 1}},
        "tool_choice.disable_parallel_tool_use",
        "Input should be a valid boolean",
    ),
    (
        "output format type",
        {"output_config": {"format": {"type": "json_object"}}},
        "output_config.format.type",
        "Input should be 'json_schema'",
    ),
    (
        "two output formats",
        {
            "output_config": {"format": {"type": "json_schema", "schema": {}}},
            "output_format": {"type": "json_schema", "schema": {}},
        },
        "output_format",
        "cannot be combined with `output_config.format`",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "param", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request(overrides: dict[str, Any], param: str, message: str) -> None:
    body = request(**overrides)
    for key in [key for key, value in overrides.items() if value is None]:
        del body[key]
    with pytest.raises(InvalidRequest) as caught:
        messages_to_chat(body)
    assert (caught.value.param, caught.value.message) == (param, f"{param}: {message}")
    assert caught.value.to_anthropic() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"{param}: {message}"},
    }


def test_body_that_is_not_an_object() -> None:
    with pytest.raises(InvalidRequest) as caught:
        messages_to_chat([request()])
    assert (caught.value.param, caught.value.message) == (None, "request body: Input should be a JSON object")


# ---- response ---------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish_reason: str | None = "stop", **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason, **choice}
        ],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "default",
    }


def test_text_response() -> None:
    resp = completion(
        {"role": "assistant", "content": "Hello! How can I help?", "refusal": None, "annotations": []}
    )
    assert chat_to_message(resp, model=MODEL) == {
        "id": "msg_B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello! How can I help?"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 15,
            "output_tokens": 10,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 0,
        },
    }


def test_tool_call_response() -> None:
    message = {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ],
    }
    translated = chat_to_message(completion(message, "tool_calls"), model=MODEL)
    assert translated["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
    ]
    assert translated["stop_reason"] == "tool_use"


@pytest.mark.parametrize("arguments", ['{"location": "Par', '["Paris"]'])
def test_tool_arguments_that_are_not_a_json_object_are_kept_raw(arguments: str) -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
        ],
    }
    block = chat_to_message(completion(message, "tool_calls"), model=MODEL)["content"][0]
    assert block["input"] == {UNPARSED_ARGUMENTS_KEY: arguments}


def test_legacy_function_call_response() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "get_weather", "arguments": '{"location":"Oslo"}'},
    }
    translated = chat_to_message(completion(message, "function_call"), model=MODEL)
    [block] = translated["content"]
    assert (block["type"], block["name"], block["input"], translated["stop_reason"]) == (
        "tool_use",
        "get_weather",
        {"location": "Oslo"},
        "tool_use",
    )
    assert block["id"].startswith("toolu_")


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stop_reasons(finish_reason: str | None, stop_reason: str) -> None:
    translated = chat_to_message(
        completion({"role": "assistant", "content": "Hi"}, finish_reason), model=MODEL
    )
    assert (translated["stop_reason"], translated["stop_sequence"]) == (stop_reason, None)


def test_stop_sequence_when_the_upstream_names_it() -> None:
    resp = completion({"role": "assistant", "content": "1, 2, 3"}, "stop", stop_reason="END")
    translated = chat_to_message(resp, model=MODEL)
    assert (translated["stop_reason"], translated["stop_sequence"]) == ("stop_sequence", "END")


def test_a_turn_that_called_tools_is_tool_use_even_when_finished_with_stop() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert chat_to_message(completion(message, "stop"), model=MODEL)["stop_reason"] == "tool_use"


def test_refusal() -> None:
    resp = completion({"role": "assistant", "content": None, "refusal": "I can't help with that."})
    translated = chat_to_message(resp, model=MODEL)
    assert translated["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert translated["stop_reason"] == "refusal"


def test_missing_usage_and_id() -> None:
    resp = completion({"role": "assistant", "content": ""})
    del resp["usage"], resp["id"]
    translated = chat_to_message(resp, model=MODEL)
    assert translated["content"] == []
    assert translated["id"].startswith("msg_")
    assert translated["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.parametrize("choices", [[], None, ["x"]])
def test_response_without_choices_is_an_upstream_error(choices: object) -> None:
    resp = completion({"role": "assistant", "content": "Hi"})
    resp["choices"] = choices
    with pytest.raises(UpstreamError, match="no choices"):
        chat_to_message(resp, model=MODEL)


# ---- the official SDK against a real server -------------------------------------------------


def test_sdk_accepts_the_translated_message(messages_server: MessagesServer) -> None:
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
            }
        ],
    }
    messages_server.completion = completion(message, "tool_calls")
    client = anthropic.Anthropic(base_url=messages_server.base_url, api_key="x", max_retries=0)
    result = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[cast("anthropic.types.ToolParam", WEATHER_TOOL)],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        metadata={"user_id": "u-1"},
    )
    assert isinstance(result, anthropic.types.Message)
    assert result.id == "msg_B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert [block.type for block in result.content] == ["text", "tool_use"]
    tool_use = result.content[1]
    assert isinstance(tool_use, anthropic.types.ToolUseBlock)
    assert (tool_use.id, tool_use.name, tool_use.input) == ("call_1", "get_weather", {"location": "Paris"})
    assert result.stop_reason == "tool_use"
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cache_read_input_tokens) == (
        15,
        10,
        4,
    )
    [chat] = messages_server.chat_requests
    assert chat["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    }
    assert (chat["tool_choice"], chat["parallel_tool_calls"], chat["user"]) == ("auto", False, "u-1")


def test_sdk_sees_the_exact_400(messages_server: MessagesServer) -> None:
    client = anthropic.Anthropic(base_url=messages_server.base_url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=MODEL,
            max_tokens=256,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "hi"},
                        }
                    ],
                }
            ],
        )
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "messages[0].content[0].type: 'document' blocks are not supported in user messages; "
            "supported: text, image, tool_result",
        },
    }
