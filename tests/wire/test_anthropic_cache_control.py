"""Prompt-cache breakpoints (`cache_control`) through the Messages → chat translation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.wire.anthropic import messages_to_chat

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
TOOL = {"name": "lookup", "description": "Look a clause up.", "input_schema": {"type": "object"}}


def request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    body.update(overrides)
    return body


def conversation(mark: dict[str, Any] | None) -> dict[str, Any]:
    """Every kind of block that can carry a breakpoint, each carrying `mark`."""
    marked: dict[str, Any] = {} if mark is None else {"cache_control": mark}
    return request(
        system=[
            {"type": "text", "text": "You are a clerk."},
            {"type": "text", "text": "Be exact.", **marked},
        ],
        tools=[{**TOOL, **marked}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": PNG, **marked},
                    {"type": "text", "text": "Find clause 7.", **marked},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Looking.", **marked},
                    {"type": "text", "text": "One moment."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"n": 7}, **marked},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Clause 7: rent.", **marked},
                    {"type": "text", "text": "Summarise it."},
                ],
            },
        ],
    )


def test_breakpoints_stay_on_the_parts_calls_messages_and_tools_they_mark() -> None:
    chat = messages_to_chat(conversation(EPHEMERAL))

    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a clause up.",
                "parameters": {"type": "object"},
            },
            "cache_control": EPHEMERAL,
        }
    ]
    assert chat["messages"] == [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "You are a clerk."},
                {"type": "text", "text": "Be exact.", "cache_control": EPHEMERAL},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    "cache_control": EPHEMERAL,
                },
                {"type": "text", "text": "Find clause 7.", "cache_control": EPHEMERAL},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking.", "cache_control": EPHEMERAL},
                {"type": "text", "text": "One moment."},
            ],
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"n":7}'},
                    "cache_control": EPHEMERAL,
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Clause 7: rent.", "cache_control": EPHEMERAL},
        {"role": "user", "content": [{"type": "text", "text": "Summarise it."}]},
    ]


def test_without_breakpoints_the_translation_keeps_its_joined_shapes() -> None:
    chat = messages_to_chat(conversation(None))

    assert chat["messages"][0] == {"role": "system", "content": "You are a clerk.\n\nBe exact."}
    assert chat["messages"][2]["content"] == "Looking.\n\nOne moment."
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Clause 7: rent."}
    assert "cache_control" not in repr(chat)


def _nulls() -> dict[str, Any]:
    """`cache_control: null` everywhere, which Anthropic accepts as no breakpoint."""
    body = conversation(EPHEMERAL)
    for block in _marked_objects(body):
        block["cache_control"] = None
    return body


def _marked_objects(value: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if "cache_control" in value:
            found.append(value)
        for item in value.values():
            found.extend(_marked_objects(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_marked_objects(item))
    return found


def test_null_breakpoints_translate_exactly_as_absent_ones() -> None:
    assert messages_to_chat(_nulls()) == messages_to_chat(conversation(None))


def test_a_ttl_is_kept_and_the_breakpoint_is_a_copy() -> None:
    mark = dict(HOUR)
    chat = messages_to_chat(request(system=[{"type": "text", "text": "Be exact.", "cache_control": mark}]))
    part = chat["messages"][0]["content"][0]
    assert part == {"type": "text", "text": "Be exact.", "cache_control": HOUR}
    part["cache_control"]["ttl"] = "5m"
    assert mark == HOUR


def test_a_string_system_prompt_stays_a_string() -> None:
    chat = messages_to_chat(request(system="Be exact."))
    assert chat["messages"][0] == {"role": "system", "content": "Be exact."}


def test_empty_system_blocks_are_left_out_of_the_parts() -> None:
    system = [{"type": "text", "text": ""}, {"type": "text", "text": "Be exact.", "cache_control": EPHEMERAL}]
    chat = messages_to_chat(request(system=system))
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "Be exact.", "cache_control": EPHEMERAL}
    ]


def test_a_system_role_message_keeps_its_breakpoint() -> None:
    messages = [
        {
            "role": "system",
            "content": [{"type": "text", "text": "Answer in French.", "cache_control": EPHEMERAL}],
        },
        {"role": "user", "content": "Hi"},
    ]
    chat = messages_to_chat(request(messages=messages))
    assert chat["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Answer in French.", "cache_control": EPHEMERAL}],
    }


def test_a_breakpoint_inside_a_tool_result_marks_the_whole_result() -> None:
    result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "is_error": True,
        "content": [
            {"type": "text", "text": "Not found."},
            {"type": "text", "text": "Try 8.", "cache_control": HOUR},
        ],
    }
    messages = [
        {"role": "user", "content": "Find clause 7."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}],
        },
        {"role": "user", "content": [result]},
    ]
    chat = messages_to_chat(request(tools=[TOOL], messages=messages))
    assert chat["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": "Error: Not found.\n\nTry 8.",
        "cache_control": HOUR,
    }


# ---- errors: the exact path and words a client sees ------------------------------------------


def _user_block(**mark: Any) -> dict[str, Any]:
    return request(messages=[{"role": "user", "content": [{"type": "text", "text": "Hi", **mark}]}])


def _tool_turn(use: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return request(
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "Find clause 7."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}, **use}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", **result}]},
        ],
    )


@pytest.mark.parametrize(
    ("body", "param", "problem"),
    [
        (
            request(system=[{"type": "text", "text": "Hi", "cache_control": "ephemeral"}]),
            "system[0].cache_control",
            "Input should be an object or null",
        ),
        (
            request(system=[{"type": "text", "text": "", "cache_control": EPHEMERAL}]),
            "system[0].text",
            "cache_control cannot be set for empty text blocks",
        ),
        (_user_block(cache_control={}), "messages[0].content[0].cache_control.type", "Field required"),
        (
            _user_block(cache_control={"type": "persistent"}),
            "messages[0].content[0].cache_control.type",
            "Input should be 'ephemeral'",
        ),
        (
            _user_block(cache_control={"type": "ephemeral", "ttl": "2h"}),
            "messages[0].content[0].cache_control.ttl",
            "Input should be '5m' or '1h'",
        ),
        (
            _user_block(cache_control={"type": "ephemeral", "scope": "org"}),
            "messages[0].content[0].cache_control.scope",
            "Extra inputs are not permitted",
        ),
        (
            request(tools=[{**TOOL, "cache_control": ["ephemeral"]}]),
            "tools[0].cache_control",
            "Input should be an object or null",
        ),
        (
            _tool_turn({"cache_control": {"type": "lasting"}}, {}),
            "messages[1].content[0].cache_control.type",
            "Input should be 'ephemeral'",
        ),
        (
            _tool_turn({}, {"cache_control": 1}),
            "messages[2].content[0].cache_control",
            "Input should be an object or null",
        ),
        (
            _tool_turn({}, {"content": [{"type": "text", "text": "x", "cache_control": True}]}),
            "messages[2].content[0].content[0].cache_control",
            "Input should be an object or null",
        ),
    ],
)
def test_a_bad_breakpoint_names_its_path(body: dict[str, Any], param: str, problem: str) -> None:
    original = copy.deepcopy(body)
    with pytest.raises(InvalidRequest) as caught:
        messages_to_chat(body)
    assert (caught.value.message, caught.value.param) == (f"{param}: {problem}", param)
    assert body == original
