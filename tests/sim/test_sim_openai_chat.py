"""The simulator through the official openai SDK: what a user of /v1/chat/completions sees."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jsonschema
import openai
import pytest
import tiktoken
from pydantic import BaseModel

O200K = tiktoken.get_encoding("o200k_base")
MODEL = "sim/gpt-4o"


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def expected_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """OpenAI's published accounting: 3 per message, the text of every field, 3 to prime the reply."""
    return sum(3 + len(O200K.encode(m["role"])) + len(O200K.encode(m["content"])) for m in messages) + 3


def test_answer_is_readable_prose_with_realistic_usage(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        *ask("Tell me about lighthouses and harbours."),
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    content = reply.choices[0].message.content
    assert content and content[0].isupper() and content.rstrip().endswith(".")
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == MODEL and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == len(O200K.encode(content))
    assert 20 <= reply.usage.completion_tokens <= 260
    assert reply.usage.prompt_tokens == expected_prompt_tokens(messages)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert (
        reply.usage.prompt_tokens_details is not None and reply.usage.prompt_tokens_details.cached_tokens == 0
    )
    assert reply.usage.completion_tokens_details is not None


def test_same_prompt_same_answer_different_prompt_different_answer(client: openai.OpenAI) -> None:
    def answer(text: str, **extra: Any) -> str:
        reply = client.chat.completions.create(model=MODEL, messages=ask(text), **extra)  # type: ignore[arg-type]
        return reply.choices[0].message.content or ""

    first = answer("How do tides work?")
    assert answer("How do tides work?") == first
    assert answer("How do volcanoes work?") != first
    assert answer("How do tides work?", seed=7) == answer("How do tides work?", seed=7) != first
    lengths = {len(answer(f"Question number {i} about gardening")) for i in range(6)}
    assert len(lengths) > 3  # answer length varies with the prompt


def test_cached_tokens_on_a_repeated_long_prompt(client: openai.OpenAI) -> None:
    nonce = uuid.uuid4().hex
    long_context = (
        f"Document {nonce}. " + "The harbour master logs every arriving ship by name and tonnage. " * 120
    )
    messages = [{"role": "system", "content": long_context}, *ask("Summarise the log.")]
    first = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    second = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert first.usage and first.usage.prompt_tokens >= 1024
    assert first.usage.prompt_tokens_details and first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage and second.usage.prompt_tokens_details
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and cached >= 1024 and cached % 128 == 0
    assert 0 <= second.usage.prompt_tokens - cached < 128 + 10
    # Same prefix, different question: the shared part is still cached.
    other = client.chat.completions.create(model=MODEL, messages=[messages[0], *ask("List the ships.")])  # type: ignore[arg-type]
    assert other.usage and other.usage.prompt_tokens_details
    assert 1024 <= (other.usage.prompt_tokens_details.cached_tokens or 0) <= cached


def test_short_prompts_are_never_cached(client: openai.OpenAI) -> None:
    for _ in range(2):
        reply = client.chat.completions.create(model=MODEL, messages=ask("short and repeated"))
        assert reply.usage and reply.usage.prompt_tokens_details
        assert reply.usage.prompt_tokens_details.cached_tokens == 0


def test_n_choices_differ_and_usage_sums_them(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ask("Name a colour."), n=3)
    contents = [c.message.content or "" for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len(set(contents)) == 3
    assert reply.usage and reply.usage.completion_tokens == sum(len(O200K.encode(c)) for c in contents)


def test_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=ask("Explain compound interest."))
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        cut = client.chat.completions.create(model=MODEL, messages=ask("Explain compound interest."), **limit)  # type: ignore[call-overload]
        text = cut.choices[0].message.content or ""
        assert cut.choices[0].finish_reason == "length"
        assert full.choices[0].message.content and full.choices[0].message.content.startswith(text)
        assert cut.usage and cut.usage.completion_tokens == len(O200K.encode(text)) <= 5


def test_stop_sequence_cuts_the_answer(client: openai.OpenAI) -> None:
    question = ask("Describe a quiet morning in the city.")
    full = client.chat.completions.create(model=MODEL, messages=question).choices[0].message.content or ""
    stop = " " + full.split()[6] + " "
    reply = client.chat.completions.create(model=MODEL, messages=question, stop=[stop, "@@never@@"])
    assert reply.choices[0].message.content == full[: full.index(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Say something."), logprobs=True, top_logprobs=3
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert reply.usage and len(entries) == reply.usage.completion_tokens
    for entry in entries:
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )


def test_json_object_mode(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Reply in JSON about rivers."), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


class Ingredient(BaseModel):
    name: str
    grams: int


class Recipe(BaseModel):
    title: str
    servings: int
    vegetarian: bool
    difficulty: str
    ingredients: list[Ingredient]


def test_json_schema_through_the_sdk_parse_helper(client: openai.OpenAI) -> None:
    reply = client.chat.completions.parse(model=MODEL, messages=ask("A soup recipe."), response_format=Recipe)
    recipe = reply.choices[0].message.parsed
    assert isinstance(recipe, Recipe) and recipe.ingredients


def test_json_schema_honours_enums_bounds_and_required(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "mood": {"type": "string", "enum": ["calm", "busy"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "when": {"type": "string", "format": "date"},
        },
        "required": ["city", "rating", "mood", "tags", "when"],
        "additionalProperties": False,
    }
    for i in range(5):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=ask(f"Review number {i}"),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "review", "schema": schema, "strict": True},
            },
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content or ""), schema)


def test_validation_errors_name_the_param(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str | None, str]] = [
        (
            {"messages": [{"role": "user", "content": "hi"}, {"content": "no role"}]},
            "messages[1].role",
            "Missing required",
        ),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role", "Invalid value: 'bot'"),
        ({"messages": []}, "messages", "empty array"),
        ({"messages": ask("hi"), "max_tokens": 0}, "max_tokens", "Expected a value >= 1"),
        ({"messages": ask("hi"), "n": 0}, "n", "Expected a value >= 1"),
        ({"messages": ask("hi"), "temperature": 3}, "temperature", "decimal above maximum"),
        (
            {"messages": ask("hi"), "response_format": {"type": "json_object"}},
            "messages",
            "must contain the word 'json'",
        ),
        ({"messages": ask("hi"), "tool_choice": "required"}, "tool_choice", "only allowed when 'tools'"),
        (
            {"messages": [{"role": "tool", "content": "42", "tool_call_id": "x"}]},
            "messages.[0].role",
            "role 'tool'",
        ),
    ]
    for body, param, fragment in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=MODEL, **body)
        assert caught.value.status_code == 400
        assert caught.value.param == param, body
        assert fragment in caught.value.message
    with pytest.raises(
        openai.BadRequestError, match="Unrecognized request argument supplied: tollgate_secret"
    ):
        client.chat.completions.create(model=MODEL, messages=ask("hi"), extra_body={"tollgate_secret": 1})
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages="hello")  # type: ignore[arg-type]
    assert caught.value.param == "messages" and caught.value.code == "invalid_type"


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"sim/gpt-4o", "sim/gpt-4o-mini", "sim/gpt-4.1-nano", "sim/claude-3-5-haiku-latest"} <= ids
    assert {"sim/claude-3-5-sonnet-latest", "sim/text-embedding-3-small"} <= ids


def test_model_name_is_echoed_with_or_without_prefix(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=ask("Hello"))
    prefixed = client.chat.completions.create(model="sim/gpt-4o-mini", messages=ask("Hello"))
    assert (plain.model, prefixed.model) == ("gpt-4o-mini", "sim/gpt-4o-mini")
    assert plain.choices[0].message.content == prefixed.choices[0].message.content
