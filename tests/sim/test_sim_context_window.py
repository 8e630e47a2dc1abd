"""A prompt longer than its model's context window, refused as OpenAI and Anthropic refuse it."""

from __future__ import annotations

import anthropic
import openai
import pytest

from gateway.config import Deployment
from gateway.errors import UpstreamRejected
from gateway.providers.base import ProviderCall
from gateway.sim.limits import context_window
from gateway.sim.transport import SimProvider

# ~9,000 tokens: past gpt-4's 8,192, well inside gpt-4-32k's 32,768.
LONG = "lorem " * 9000


def test_openai_refuses_a_prompt_past_the_window(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": LONG}])
    err = caught.value
    assert (err.status_code, err.code, err.param, err.type) == (
        400, "context_length_exceeded", "messages", "invalid_request_error",
    )  # fmt: skip
    assert err.body is not None
    assert str(err.body["message"]).startswith(  # type: ignore[index]
        "This model's maximum context length is 8192 tokens. However, your messages resulted in "
    )


def test_openai_counts_the_completion_asked_for(client: openai.OpenAI) -> None:
    prompt = "lorem " * 7000
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="sim/gpt-4", messages=[{"role": "user", "content": prompt}], max_tokens=2000
        )
    assert caught.value.code == "context_length_exceeded"
    assert "in the messages, 2000 in the completion)" in caught.value.message


def test_a_larger_window_serves_the_same_prompt(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="gpt-4-32k", messages=[{"role": "user", "content": LONG}])
    assert answer.usage is not None and answer.usage.prompt_tokens > 8192


def test_anthropic_says_prompt_is_too_long(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="gpt-4", max_tokens=10, messages=[{"role": "user", "content": LONG}])
    assert caught.value.status_code == 400
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: ") and error["message"].endswith(
        " > 8192 maximum"
    )


def test_names_outside_the_table_have_no_window() -> None:
    assert context_window("sim/gpt-4o") == 128000
    assert context_window("retry-good") is None


@pytest.mark.anyio
async def test_the_in_process_provider_raises_the_rejection_with_its_code() -> None:
    call = ProviderCall(
        endpoint="chat", body={"model": "gpt-4", "messages": [{"role": "user", "content": LONG}]}
    )
    with pytest.raises(UpstreamRejected) as caught:
        await SimProvider().send(call, Deployment(provider="sim", model="gpt-4"))
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "context_length_exceeded",
        "messages",
    )
