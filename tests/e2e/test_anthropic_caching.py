"""Anthropic prompt caching through the gateway, with the official `anthropic` SDK.

A client that marks its long system prompt with `cache_control` must get Anthropic's
prompt cache behind the gateway just as it would calling Anthropic directly: the first
request writes the prefix, the next reads it at a tenth of the price. The same marked
request to an OpenAI-wire upstream must still succeed, since OpenAI rejects the key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.support.procs import Proc

pytestmark = pytest.mark.e2e

# Well past Anthropic's 1,024-token minimum for a cacheable prefix.
LEDGER = "The ledger is the product's proof. " * 200
QUESTION: list[Any] = [{"role": "user", "content": "Which record proves a charge?"}]


@pytest.fixture(scope="module")
def client(gateway: Proc, api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0, timeout=60.0) as sdk:
        yield sdk


def _system(*, marked: bool) -> list[Any]:
    # A fresh prefix per test: the simulator's cache lives as long as the test session.
    text = f"{uuid.uuid4()} {LEDGER}"
    block: dict[str, Any] = {"type": "text", "text": text}
    if marked:
        block["cache_control"] = {"type": "ephemeral"}
    return [block]


def _twice(client: anthropic.Anthropic, model: str, system: list[Any]) -> tuple[Any, Any]:
    first = client.messages.create(model=model, max_tokens=32, system=system, messages=QUESTION)
    second = client.messages.create(model=model, max_tokens=32, system=system, messages=QUESTION)
    return first.usage, second.usage


def test_a_marked_system_prompt_is_cached_at_anthropic(client: anthropic.Anthropic) -> None:
    first, second = _twice(client, "claude-3-5-haiku", _system(marked=True))

    assert first.cache_creation_input_tokens > 1024
    assert not first.cache_read_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert not second.cache_creation_input_tokens
    # The same prompt either way; only its split between fresh, written and read changes.
    assert (
        first.input_tokens + first.cache_creation_input_tokens
        == second.input_tokens + second.cache_read_input_tokens
    )


def test_a_marked_prompt_read_back_in_a_stream(client: anthropic.Anthropic) -> None:
    request: dict[str, Any] = {"max_tokens": 32, "system": _system(marked=True), "messages": QUESTION}
    written = client.messages.create(model="claude-3-5-haiku", **request)
    with client.messages.stream(model="claude-3-5-haiku", **request) as stream:
        final = stream.get_final_message()

    assert written.usage.cache_creation_input_tokens > 1024
    assert final.usage.cache_read_input_tokens == written.usage.cache_creation_input_tokens


def test_without_a_breakpoint_anthropic_caches_nothing(client: anthropic.Anthropic) -> None:
    first, second = _twice(client, "claude-3-5-haiku", _system(marked=False))

    assert not first.cache_creation_input_tokens and not first.cache_read_input_tokens
    assert not second.cache_creation_input_tokens and not second.cache_read_input_tokens


@pytest.mark.parametrize("model", ["gpt-4o", "sim/claude-3-5-haiku-latest"])
def test_an_openai_format_upstream_takes_the_marked_request(client: anthropic.Anthropic, model: str) -> None:
    # gpt-4o is reached over HTTP, the `sim/` model in process; both cache implicitly,
    # reading a repeated prefix and never billing a write.
    first, second = _twice(client, model, _system(marked=True))

    assert first.input_tokens > 1024
    assert not first.cache_creation_input_tokens and not second.cache_creation_input_tokens
    assert second.cache_read_input_tokens > 1024
