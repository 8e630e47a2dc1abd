"""Which fields make two requests the same question, and which never do."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache.keys import context_fingerprint, deterministic, exact_key, last_user_text
from gateway.pipeline import Request
from gateway.providers.base import Endpoint

BASE: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a cache?"},
    ],
    "temperature": 0,
}
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


def _request(body: dict[str, Any], endpoint: Endpoint = "chat") -> Request:
    return Request(endpoint=endpoint, model=body["model"], body=body, stream=bool(body.get("stream")))


def _key(body: dict[str, Any], namespace: str = "team-a", version: str = "v1", **kwargs: Any) -> str:
    return exact_key(_request(body), namespace, version, **kwargs)


# Every field that can change the answer changes the key.
ANSWER_FIELDS: list[tuple[str, Any]] = [
    ("model", "gpt-4o-mini"),
    ("messages", [{"role": "user", "content": "What is a cache?"}]),
    (
        "messages",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a queue?"}],
    ),
    (
        "messages",
        [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "What is a cache?"}],
    ),
    ("tools", [TOOL]),
    ("tool_choice", "required"),
    ("parallel_tool_calls", False),
    ("response_format", {"type": "json_object"}),
    ("temperature", 0.7),
    ("top_p", 0.5),
    ("n", 2),
    ("seed", 7),
    ("stop", ["\n"]),
    ("max_tokens", 20),
    ("max_completion_tokens", 20),
    ("presence_penalty", 0.5),
    ("frequency_penalty", 0.5),
    ("logit_bias", {"50256": -100}),
    ("logprobs", True),
    ("top_logprobs", 2),
    ("reasoning_effort", "low"),
    ("modalities", ["text", "audio"]),
    # A field the gateway does not know might change the answer: precision first.
    ("some_new_provider_field", 1),
]

# Fields that never change the answer leave the key alone, as do stated defaults.
SAME_QUESTION: list[tuple[str, Any]] = [
    ("stream", True),
    ("stream_options", {"include_usage": True}),
    ("user", "end-user-42"),
    ("metadata", {"trace": "x"}),
    ("store", True),
    ("service_tier", "flex"),
    ("prompt_cache_key", "abc"),
    ("safety_identifier", "hashed-user"),
    ("top_p", 1),
    ("top_p", 1.0),
    ("n", 1),
    ("presence_penalty", 0),
    ("frequency_penalty", 0.0),
    ("logprobs", False),
    ("parallel_tool_calls", True),
    ("seed", None),
    ("stop", None),
]


@pytest.mark.parametrize(("field", "value"), ANSWER_FIELDS)
def test_every_field_that_determines_the_answer_changes_the_key(field: str, value: Any) -> None:
    assert _key({**BASE, field: value}) != _key(BASE)


@pytest.mark.parametrize(("field", "value"), SAME_QUESTION)
def test_fields_that_cannot_change_the_answer_leave_the_key_alone(field: str, value: Any) -> None:
    assert _key({**BASE, field: value}) == _key(BASE)


def test_numbers_and_key_order_do_not_matter_but_a_missing_temperature_is_one() -> None:
    reordered = {"temperature": 0.0, "messages": BASE["messages"], "model": "gpt-4o"}
    assert _key(reordered) == _key(BASE)
    without = {k: v for k, v in BASE.items() if k != "temperature"}
    assert _key(without) == _key({**BASE, "temperature": 1}) == _key({**BASE, "temperature": 1.0})
    assert _key(without) != _key(BASE)


def test_namespace_version_endpoint_and_forwarded_headers_separate_entries() -> None:
    key = _key(BASE)
    assert key.startswith("xc:team-a:")
    assert _key(BASE, namespace="team-b") != key and _key(BASE, namespace="team-b").startswith("xc:team-b:")
    assert _key(BASE, version="v2") != key
    assert _key(BASE, forwarded={"x-sim-fault": "500"}) != key
    assert _key(BASE, forwarded={}) == key
    completion = {"model": "gpt-4o", "prompt": "What is a cache?", "temperature": 0}
    assert exact_key(_request(completion, "completions"), "team-a", "v1") != key


def test_a_stage_rewritten_body_keys_like_the_same_dict() -> None:
    request = _request(dict(BASE)).replace(body={**BASE, "user": "someone"})
    assert exact_key(request, "team-a", "v1") == _key(BASE)


@pytest.mark.parametrize(
    ("body", "endpoint", "expected"),
    [
        ({"temperature": 0}, "chat", True),
        ({"temperature": 0.0}, "chat", True),
        ({"seed": 3, "temperature": 0.9}, "chat", True),
        ({"temperature": 0, "n": 3}, "chat", True),
        ({}, "chat", False),
        ({"temperature": 0.2}, "chat", False),
        ({"temperature": False}, "chat", False),
        ({"seed": None}, "chat", False),
        ({"temperature": 0}, "completions", True),
        ({}, "embeddings", True),
    ],
)
def test_deterministic(body: dict[str, Any], endpoint: Endpoint, expected: bool) -> None:
    assert deterministic(_request({"model": "m", **body}, endpoint)) is expected


def _chat(*messages: dict[str, Any], **extra: Any) -> Request:
    return _request({"model": "gpt-4o", "messages": list(messages), **extra})


SYSTEM = {"role": "system", "content": "You translate."}


def test_the_fingerprint_ignores_only_the_last_question() -> None:
    first = _chat(SYSTEM, {"role": "user", "content": "Translate 'cat'."})
    second = _chat(SYSTEM, {"role": "user", "content": "Translate 'dog'."})
    assert context_fingerprint(first) == context_fingerprint(second)
    assert context_fingerprint(
        _chat({"role": "system", "content": "Be rude."}, {"role": "user", "content": "x"})
    ) != (context_fingerprint(first))
    assert context_fingerprint(_chat(SYSTEM, {"role": "user", "content": "x"}, temperature=0.5)) != (
        context_fingerprint(first)
    )
    assert context_fingerprint(_chat(SYSTEM, {"role": "user", "content": "x"}, tools=[TOOL])) != (
        context_fingerprint(first)
    )


def test_a_follow_up_never_matches_another_conversation() -> None:
    def conversation(topic: str) -> Request:
        return _chat(
            SYSTEM,
            {"role": "user", "content": f"Explain {topic}."},
            {"role": "assistant", "content": f"{topic} is ..."},
            {"role": "user", "content": "And in French?"},
        )

    assert context_fingerprint(conversation("caching")) != context_fingerprint(conversation("routing"))
    assert (
        last_user_text(conversation("caching")) == last_user_text(conversation("routing")) == "And in French?"
    )
    with_tool = _chat(
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    )
    rainy = _chat(
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "rainy"},
        {"role": "user", "content": "thanks"},
    )
    assert context_fingerprint(with_tool) != context_fingerprint(rainy)


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ({"role": "user", "content": "plain"}, "plain"),
        ({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, "a\nb"),
        (
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}],
            },
            None,
        ),
        (
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            },
            None,
        ),
        ({"role": "tool", "tool_call_id": "c1", "content": "result"}, None),
        ({"role": "assistant", "content": "hi"}, None),
    ],
)
def test_last_user_text(last: dict[str, Any], expected: str | None) -> None:
    assert last_user_text(_chat(SYSTEM, last)) == expected


def test_last_user_text_of_other_endpoints() -> None:
    assert last_user_text(_request({"model": "m", "prompt": "Once"}, "completions")) == "Once"
    assert last_user_text(_request({"model": "m", "prompt": [1, 2]}, "completions")) is None
    assert last_user_text(_request({"model": "m", "input": "x"}, "embeddings")) is None
