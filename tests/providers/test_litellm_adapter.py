"""The litellm adapter against a real upstream: the simulated provider over loopback.

The Anthropic deployment exercises litellm's translation both ways (OpenAI request ->
/v1/messages -> OpenAI response and chunks); the `litellm` deployment with an `openai/`
model covers the OpenAI wire through litellm. Faults are injected with the simulator's
`x-sim-*` headers and `[[sim:...]]` prompt markers.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from gateway.config import Deployment
from gateway.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import ProviderCall, ProviderResponse, Usage
from gateway.providers.litellm_adapter import LitellmProvider

pytestmark = pytest.mark.anyio

QUESTION = [{"role": "user", "content": "Tell me about the weather in Paris."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# Keys litellm adds that OpenAI never sends: none may reach a client.
LITELLM_ONLY = ("provider_specific_fields", "citations", "thinking_blocks", "cache_read_input_tokens", "cost")


def anthropic(sim_url: str, **changes: Any) -> Deployment:
    fields: dict[str, Any] = {
        "provider": "anthropic",
        "model": "claude-3-5-haiku-latest",
        "api_base": sim_url,
        "api_key": "sk-ant-test",
        "timeout_s": 10,
    }
    return Deployment(**{**fields, **changes})


def openai_via_litellm(sim_url: str, model: str = "openai/sim/gpt-4o", **changes: Any) -> Deployment:
    fields: dict[str, Any] = {
        "provider": "litellm",
        "model": model,
        "api_base": f"{sim_url}/v1",
        "api_key": "sk-test",
        "timeout_s": 10,
    }
    return Deployment(**{**fields, **changes})


def chat(stream: bool = False, headers: Mapping[str, str] | None = None, **body: Any) -> ProviderCall:
    return ProviderCall(
        endpoint="chat",
        body={"model": "ignored-by-a-named-deployment", "messages": QUESTION, **body},
        stream=stream,
        headers=dict(headers or {}),
    )


async def events(response: ProviderResponse) -> list[dict[str, Any]]:
    """Every SSE event of a streamed response, parsed; asserts the stream ends in [DONE]."""
    assert response.stream is not None
    raw = b"".join([data async for data in response.stream])
    frames = [frame for frame in raw.split(b"\n\n") if frame]
    assert all(frame.startswith(b"data: ") for frame in frames)
    assert frames[-1] == b"data: [DONE]"
    return [orjson.loads(frame[6:]) for frame in frames[:-1]]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def assert_clean(body: Any) -> None:
    text = orjson.dumps(body).decode()
    for key in LITELLM_ONLY:
        assert f'"{key}"' not in text, key


# --- Anthropic through litellm's translation ------------------------------------------------


async def test_anthropic_chat_answers_in_openai_format(sim_url: str) -> None:
    response = await LitellmProvider().send(chat(max_tokens=64), anthropic(sim_url))
    body = response.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    assert "logprobs" in choice
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.usage == Usage.from_openai(usage)
    assert_clean(body)


async def test_anthropic_tool_call_comes_back_as_openai_tool_calls(sim_url: str) -> None:
    call = chat(tools=[WEATHER_TOOL], tool_choice="required")
    body = (await LitellmProvider().send(call, anthropic(sim_url))).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["type"] == "function"
    assert tool_call["id"]
    assert tool_call["function"]["name"] == "get_weather"
    assert isinstance(orjson.loads(tool_call["function"]["arguments"])["city"], str)
    assert_clean(body)


async def test_anthropic_stream_reassembles_into_the_same_answer(sim_url: str) -> None:
    provider = LitellmProvider()
    whole = (await provider.send(chat(max_tokens=64), anthropic(sim_url))).json()
    response = await provider.send(chat(stream=True, max_tokens=64), anthropic(sim_url))
    chunks = await events(response)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert text_of(chunks) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    # The gateway asked for usage although the client did not: counted, then not forwarded.
    assert all("usage" not in c for c in chunks)
    assert response.usage is not None
    assert response.usage.completion_tokens == whole["usage"]["completion_tokens"]
    assert response.usage.prompt_tokens > 0
    assert_clean(chunks)


async def test_anthropic_stream_sends_usage_last_when_the_client_asks(sim_url: str) -> None:
    call = chat(stream=True, max_tokens=32, stream_options={"include_usage": True})
    response = await LitellmProvider().send(call, anthropic(sim_url))
    chunks = await events(response)
    *content, last = chunks
    # OpenAI's usage chunk: no choices, just usage.
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] > 0
    assert all("usage" not in c for c in content)
    assert response.usage == Usage.from_openai(last["usage"])


async def test_anthropic_stream_tool_call_arguments_reassemble(sim_url: str) -> None:
    call = chat(stream=True, tools=[WEATHER_TOOL], tool_choice="required")
    chunks = await events(await LitellmProvider().send(call, anthropic(sim_url)))
    deltas = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0]["function"]["name"] == "get_weather"
    assert deltas[0]["id"]
    arguments = "".join(d["function"].get("arguments") or "" for d in deltas)
    assert isinstance(orjson.loads(arguments)["city"], str)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_anthropic_prompt_cache_reads_arrive_as_openai_cached_tokens(sim_url: str) -> None:
    # Anthropic caches only up to an explicit cache_control breakpoint, and only long prefixes.
    document = " ".join(f"Clause {i}: the tenant keeps the garden tidy." for i in range(200))
    system = {"type": "text", "text": document, "cache_control": {"type": "ephemeral"}}
    messages = [{"role": "system", "content": [system]}, {"role": "user", "content": "Summarise."}]
    provider = LitellmProvider()
    first = await provider.send(chat(messages=messages, max_tokens=8), anthropic(sim_url))
    second = await provider.send(chat(messages=messages, max_tokens=8), anthropic(sim_url))
    assert first.usage is not None and second.usage is not None
    assert first.usage.cached_prompt_tokens == 0
    # OpenAI's accounting: prompt_tokens includes the cached ones, which are also counted apart.
    assert 1024 <= second.usage.cached_prompt_tokens < second.usage.prompt_tokens
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert (
        second.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == second.usage.cached_prompt_tokens
    )


async def test_text_completions_are_translated_too(sim_url: str) -> None:
    call = ProviderCall(endpoint="completions", body={"model": "x", "prompt": "Say hello.", "max_tokens": 16})
    body = (await LitellmProvider().send(call, anthropic(sim_url))).json()
    assert body["object"] == "text_completion"
    assert isinstance(body["choices"][0]["text"], str) and body["choices"][0]["text"]
    assert body["usage"]["completion_tokens"] > 0


async def test_openai_parameters_the_provider_lacks_are_dropped_not_fatal(sim_url: str) -> None:
    call = chat(max_tokens=16, seed=7, logit_bias={"50256": -100}, presence_penalty=0.5, temperature=0.2)
    body = (await LitellmProvider().send(call, anthropic(sim_url))).json()
    assert body["choices"][0]["message"]["content"]


async def test_max_tokens_and_stop_reach_the_provider(sim_url: str) -> None:
    body = (await LitellmProvider().send(chat(max_tokens=3), anthropic(sim_url))).json()
    assert body["usage"]["completion_tokens"] <= 3
    assert body["choices"][0]["finish_reason"] == "length"


async def test_the_deployments_extra_body_is_applied(sim_url: str) -> None:
    body = (await LitellmProvider().send(chat(), anthropic(sim_url, extra_body={"max_tokens": 2}))).json()
    assert body["usage"]["completion_tokens"] <= 2


async def test_a_wildcard_deployment_sends_the_model_named_in_the_body(sim_url: str) -> None:
    call = ProviderCall(
        endpoint="chat", body={"model": "claude-sonnet-4-0", "messages": QUESTION, "max_tokens": 8}
    )
    body = (await LitellmProvider().send(call, anthropic(sim_url, model="*"))).json()
    assert body["model"] == "claude-sonnet-4-0"


async def test_a_client_cannot_steer_litellm_through_the_request_body(sim_url: str) -> None:
    # As keyword arguments these would be litellm instructions (send elsewhere, answer without
    # asking the provider); from a client they are not OpenAI parameters and are not forwarded.
    hijack = chat(max_tokens=8, api_base="http://127.0.0.1:9", mock_response="hijacked", api_key="stolen")
    body = (await LitellmProvider().send(hijack, anthropic(sim_url))).json()
    assert body["choices"][0]["message"]["content"] not in ("", "hijacked")
    assert body["usage"]["completion_tokens"] > 0


# --- the OpenAI wire through litellm --------------------------------------------------------


async def test_openai_model_through_litellm_chat(sim_url: str) -> None:
    response = await LitellmProvider().send(chat(max_tokens=16, n=2, seed=1), openai_via_litellm(sim_url))
    body = response.json()
    assert body["object"] == "chat.completion"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(c["message"]["content"] for c in body["choices"])
    assert response.usage is not None and response.usage.completion_tokens > 0
    assert_clean(body)


async def test_openai_model_through_litellm_stream(sim_url: str) -> None:
    provider = LitellmProvider()
    whole = (await provider.send(chat(max_tokens=24, seed=3), openai_via_litellm(sim_url))).json()
    response = await provider.send(chat(stream=True, max_tokens=24, seed=3), openai_via_litellm(sim_url))
    chunks = await events(response)
    assert text_of(chunks) == whole["choices"][0]["message"]["content"]
    assert response.usage is not None
    assert response.usage.completion_tokens == whole["usage"]["completion_tokens"]
    assert all("usage" not in c for c in chunks)


async def test_openai_embeddings_through_litellm(sim_url: str) -> None:
    call = ProviderCall(
        endpoint="embeddings", body={"model": "x", "input": ["first", "second"], "dimensions": 8}
    )
    response = await LitellmProvider().send(
        call, openai_via_litellm(sim_url, "openai/sim/text-embedding-3-small")
    )
    body = response.json()
    assert body["object"] == "list"
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert all(len(item["embedding"]) == 8 for item in body["data"])
    # OpenAI's embeddings usage has exactly these two counts (litellm adds completion_tokens: 0).
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    assert response.usage is not None and response.usage.prompt_tokens > 0


async def test_openai_text_completion_stream_through_litellm(sim_url: str) -> None:
    provider = LitellmProvider()
    body = {"model": "x", "prompt": "Say hello.", "max_tokens": 12, "seed": 5}
    whole = (
        await provider.send(ProviderCall(endpoint="completions", body=body), openai_via_litellm(sim_url))
    ).json()
    call = ProviderCall(endpoint="completions", body=body, stream=True)
    response = await provider.send(call, openai_via_litellm(sim_url))
    chunks = await events(response)
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == whole["choices"][0]["text"]
    assert all("usage" not in c for c in chunks)
    assert response.usage is not None
    assert response.usage.completion_tokens == whole["usage"]["completion_tokens"]


# --- errors: each litellm failure becomes one gateway error -----------------------------------

DEPLOYMENTS = [
    pytest.param(anthropic, "anthropic/claude-3-5-haiku-latest", id="anthropic"),
    pytest.param(openai_via_litellm, "litellm/openai/sim/gpt-4o", id="openai"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("deployment", "name"), DEPLOYMENTS)
async def test_429_becomes_rate_limited_with_the_providers_retry_after(
    sim_url: str, deployment: Any, name: str, stream: bool
) -> None:
    headers = {"x-sim-fault": "429", "x-sim-retry-after": "7"}
    with pytest.raises(UpstreamRateLimited) as caught:
        await LitellmProvider().send(chat(stream, headers), deployment(sim_url))
    err = caught.value
    assert err.status == 429
    assert err.retry_after_s == 7
    assert err.headers["retry-after"] == "7"
    assert err.message.startswith(f"{name}: ")
    assert "rate limit" in err.message.lower()
    assert "litellm" not in err.message.removeprefix(name)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("deployment", "name"), DEPLOYMENTS)
async def test_400_becomes_rejected_with_the_providers_message(
    sim_url: str, deployment: Any, name: str, stream: bool
) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        await LitellmProvider().send(chat(stream, {"x-sim-fault": "400"}), deployment(sim_url))
    err = caught.value
    assert (err.status, err.upstream_status, err.type) == (400, 400, "invalid_request_error")
    assert err.message == f"{name}: Invalid request: rejected by the simulator's injected 400 fault."


@pytest.mark.parametrize(("deployment", "name"), DEPLOYMENTS)
async def test_500_becomes_upstream_error(sim_url: str, deployment: Any, name: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        await LitellmProvider().send(chat(headers={"x-sim-fault": "500"}), deployment(sim_url))
    err = caught.value
    assert type(err) is UpstreamError
    assert (err.status, err.upstream_status) == (502, 500)
    assert err.message.startswith(f"{name}: ")
    assert "Handle with" not in err.message and "Exception" not in err.message


@pytest.mark.parametrize(("deployment", "name"), DEPLOYMENTS)
async def test_503_overloaded_becomes_unavailable(sim_url: str, deployment: Any, name: str) -> None:
    with pytest.raises(UpstreamUnavailable) as caught:
        await LitellmProvider().send(chat(headers={"x-sim-fault": "503"}), deployment(sim_url))
    assert caught.value.upstream_status == 503
    assert caught.value.message.startswith(f"{name}: ")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("deployment", "name"), DEPLOYMENTS)
async def test_no_answer_within_the_deployments_timeout_becomes_timeout(
    sim_url: str, deployment: Any, name: str, stream: bool
) -> None:
    with pytest.raises(UpstreamTimeout) as caught:
        await LitellmProvider().send(
            chat(stream, {"x-sim-fault": "timeout"}), deployment(sim_url, timeout_s=0.3)
        )
    assert caught.value.status == 504
    assert caught.value.message == f"{name}: no response within 0.3s"


@pytest.mark.parametrize(("deployment", "name"), DEPLOYMENTS)
async def test_a_stream_that_stalls_midway_becomes_timeout(sim_url: str, deployment: Any, name: str) -> None:
    # The first chunk comes at once, the next 0.5 s or more later: twice the 0.25 s timeout.
    # (The simulator notices the client has gone at its next write, within 3 s.)
    headers = {"x-sim-tokens-per-s": "2"}
    call = chat(True, headers, max_tokens=6)
    response = await LitellmProvider().send(call, deployment(sim_url, timeout_s=0.25))
    assert response.stream is not None
    received: list[bytes] = []
    with pytest.raises(UpstreamTimeout) as caught:
        async for data in response.stream:
            received.append(data)
    assert received, "the stall should come after the first chunk"
    assert caught.value.message == f"{name}: no response within 0.25s"


@pytest.mark.parametrize(("deployment", "name"), DEPLOYMENTS)
async def test_nothing_listening_becomes_unavailable(deployment: Any, name: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed again: connecting to it is refused.
    with pytest.raises(UpstreamUnavailable) as caught:
        await LitellmProvider().send(chat(), deployment(f"http://127.0.0.1:{port}"))
    err = caught.value
    assert err.status == 503
    assert err.message.startswith(f"{name}: cannot connect to http://127.0.0.1:{port}")


@pytest.mark.parametrize(("deployment", "name"), DEPLOYMENTS)
async def test_a_connection_dropped_mid_stream_becomes_unavailable(
    sim_url: str, deployment: Any, name: str
) -> None:
    response = await LitellmProvider().send(chat(True, {"x-sim-fault": "reset"}), deployment(sim_url))
    with pytest.raises(UpstreamUnavailable) as caught:
        await events(response)
    assert caught.value.message.startswith(f"{name}: connection to ")


async def test_a_fault_marker_in_the_prompt_works_through_the_translation(sim_url: str) -> None:
    call = chat(messages=[{"role": "user", "content": "hi [[sim:fault=429]] [[sim:retry_after=3]]"}])
    with pytest.raises(UpstreamRateLimited) as caught:
        await LitellmProvider().send(call, anthropic(sim_url))
    assert caught.value.retry_after_s == 3


async def test_an_upstream_authentication_failure_is_rejected_with_its_status(sim_url: str) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        await LitellmProvider().send(chat(), anthropic(sim_url, api_key=None))
    assert caught.value.upstream_status == 401
    assert caught.value.message.startswith("anthropic/claude-3-5-haiku-latest: ")


@pytest.mark.parametrize(
    "deployment",
    [
        pytest.param(lambda url: anthropic(url), id="anthropic"),
        pytest.param(lambda url: openai_via_litellm(url, model="openai/sim/gpt-4"), id="openai"),
    ],
)
async def test_a_prompt_past_the_context_window_is_classified_as_context_length_exceeded(
    sim_url: str, deployment: Any
) -> None:
    # The asked-for completion alone outgrows both models' windows (200,000 and 8,192 tokens).
    with pytest.raises(UpstreamRejected) as caught:
        await LitellmProvider().send(chat(max_tokens=300_000), deployment(sim_url))
    assert (caught.value.upstream_status, caught.value.code) == (400, "context_length_exceeded")


async def test_other_rejections_carry_no_context_length_code(sim_url: str) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        await LitellmProvider().send(chat(headers={"x-sim-fault": "400"}), anthropic(sim_url))
    assert caught.value.code == "upstream_error"
