"""Usage normalised from every shape it arrives in, and rendered back as Anthropic's."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.providers.base import Usage
from gateway.providers.litellm_adapter import _clean_completion
from gateway.wire.anthropic import usage_for
from gateway.wire.anthropic_stream import AnthropicStream

# Anthropic's own usage block: `input_tokens` excludes the cache reads and writes.
ANTHROPIC = {
    "input_tokens": 100,
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 500,
    "output_tokens": 50,
}
NORMALISED = Usage(
    prompt_tokens=2600, completion_tokens=50, cached_prompt_tokens=2000, cache_write_tokens=500
)

# What litellm 1.103 makes of that block in OpenAI shape (model_dump of its Usage).
LITELLM_SHAPED = {
    "completion_tokens": 50,
    "prompt_tokens": 2600,
    "total_tokens": 2650,
    "completion_tokens_details": {"reasoning_tokens": 0, "text_tokens": 50, "audio_tokens": None},
    "prompt_tokens_details": {
        "audio_tokens": None,
        "cache_write_tokens": 500,
        "cached_tokens": 2000,
        "text_tokens": 100,
        "image_tokens": None,
        "cache_creation_tokens": 500,
    },
    "cache_creation_input_tokens": 500,
    "cache_read_input_tokens": 2000,
    "iterations": None,
}  # fmt: skip


def test_openai_usage_is_taken_as_it_is() -> None:
    usage = Usage.from_openai(
        {
            "prompt_tokens": 3000,
            "completion_tokens": 900,
            "total_tokens": 3900,
            "prompt_tokens_details": {"cached_tokens": 2048, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 640},
        }
    )
    assert usage == Usage(3000, 900, cached_prompt_tokens=2048, reasoning_tokens=640)
    assert usage is not None and usage.total_tokens == 3900 and not usage.estimated


@pytest.mark.parametrize("raw", [None, {}])
def test_no_usage_is_none(raw: dict[str, Any] | None) -> None:
    assert Usage.from_openai(raw) is None
    assert Usage.from_anthropic(raw) is None


def test_null_details_and_counts_read_as_zero() -> None:
    raw = {"prompt_tokens": None, "completion_tokens": 5, "prompt_tokens_details": None}
    assert Usage.from_openai(raw) == Usage(0, 5)


def test_anthropic_usage_adds_cache_reads_and_writes_back_into_the_prompt() -> None:
    assert Usage.from_anthropic(ANTHROPIC) == NORMALISED
    # An Anthropic-shaped block handed to from_openai is recognised as such.
    assert Usage.from_openai(ANTHROPIC) == NORMALISED
    assert Usage.from_anthropic({"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": None}) == (
        Usage(7, 3)
    )


def test_litellms_openai_shape_of_anthropic_usage_normalises_the_same() -> None:
    assert Usage.from_openai(LITELLM_SHAPED) == NORMALISED


def test_the_litellm_adapter_passes_cache_writes_through_to_its_clients() -> None:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [], "usage": LITELLM_SHAPED}
    usage = _clean_completion(body, chunk=False)["usage"]
    # OpenAI's keys only, plus the cache writes OpenAI has no field for.
    assert usage == {
        "prompt_tokens": 2600,
        "completion_tokens": 50,
        "total_tokens": 2650,
        "prompt_tokens_details": {"cached_tokens": 2000, "cache_creation_tokens": 500},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert Usage.from_openai(usage) == NORMALISED


def test_litellms_own_translation_of_anthropic_usage_reaches_accounting_whole() -> None:
    litellm = importlib.import_module("litellm")
    config = litellm.llms.anthropic.chat.transformation.AnthropicConfig()
    translated = config.calculate_usage(ANTHROPIC, None).model_dump()
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [], "usage": translated}
    assert Usage.from_openai(_clean_completion(body, chunk=False)["usage"]) == NORMALISED


def test_anthropic_usage_is_rendered_with_reads_and_writes_apart() -> None:
    assert usage_for(NORMALISED) == ANTHROPIC
    assert Usage.from_anthropic(usage_for(NORMALISED)) == NORMALISED


def test_openai_usage_renders_with_no_cache_writes() -> None:
    usage = Usage(prompt_tokens=25, completion_tokens=15, cached_prompt_tokens=5, reasoning_tokens=3)
    assert usage_for(usage) == {
        "input_tokens": 20,
        "output_tokens": 15,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 0,
    }


def test_over_reported_cache_counts_never_render_a_negative_input() -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=1, cached_prompt_tokens=80, cache_write_tokens=70)
    assert usage_for(usage) == {
        "input_tokens": 0,
        "output_tokens": 1,
        "cache_read_input_tokens": 80,
        "cache_creation_input_tokens": 20,
    }
    assert usage_for(None) == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _openai_stream() -> AsyncIterator[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "claude-haiku-4-5"}
    yield _event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]})
    yield _event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {k: v for k, v in LITELLM_SHAPED.items() if k in ("prompt_tokens", "completion_tokens")}
    usage["prompt_tokens_details"] = {"cached_tokens": 2000, "cache_creation_tokens": 500}
    yield _event({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


@pytest.mark.anyio
async def test_an_anthropic_stream_reports_cache_writes_in_its_message_delta() -> None:
    stream = AnthropicStream(_openai_stream(), model="claude-haiku-4-5")
    events = [
        orjson.loads(line[6:])
        async for data in stream
        for line in data.split(b"\n")
        if line.startswith(b"data: ")
    ]
    deltas = [e for e in events if e["type"] == "message_delta"]
    assert [d["usage"] for d in deltas] == [ANTHROPIC]
    assert stream.usage == NORMALISED
