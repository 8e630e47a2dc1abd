"""`SimProvider`: the simulator in process, behind the gateway's Provider protocol."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from gateway.config import Deployment, SimConfig
from gateway.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import ProviderCall, ProviderResponse, Usage
from gateway.sim.transport import SimProvider

pytestmark = pytest.mark.anyio

DEPLOYMENT = Deployment(provider="sim", model="*", timeout_s=5)
MODEL = "sim/gpt-4o-mini"


def chat(
    text: str, *, stream: bool = False, headers: dict[str, str] | None = None, **extra: Any
) -> ProviderCall:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    if stream:
        body["stream"] = True
    return ProviderCall(endpoint="chat", body=body, stream=stream, headers=headers or {})


async def drain(response: ProviderResponse) -> list[dict[str, Any]]:
    assert response.stream is not None
    raw = b"".join([data async for data in response.stream])
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(e) for e in events[:-1]]


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_kind_and_a_plain_answer() -> None:
    provider = SimProvider()
    assert provider.kind == "sim"
    response = await provider.send(chat("Hello there"), DEPLOYMENT)
    body = response.json()
    assert response.status == 200 and body["object"] == "chat.completion" and body["model"] == MODEL
    assert isinstance(response.usage, Usage) and response.usage.completion_tokens > 0
    assert orjson.loads(response.body_bytes()) == body
    await provider.aclose()


async def test_stream_is_sse_bytes_with_usage_even_when_the_client_did_not_ask() -> None:
    provider = SimProvider()
    whole = (await provider.send(chat("Stream me"), DEPLOYMENT)).json()
    quiet = await provider.send(chat("Stream me", stream=True), DEPLOYMENT)
    chunks = await drain(quiet)
    assert content_of(chunks) == whole["choices"][0]["message"]["content"]
    assert all(c["choices"] for c in chunks)  # the usage chunk was not forwarded ...
    assert quiet.usage == Usage.from_openai(whole["usage"])  # ... but accounting still has it
    loud = await provider.send(
        chat("Stream me", stream=True, stream_options={"include_usage": True}), DEPLOYMENT
    )
    chunks = await drain(loud)
    assert (
        chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == whole["usage"]["total_tokens"]
    )


async def test_completions_and_embeddings() -> None:
    provider = SimProvider()
    call = ProviderCall(
        endpoint="completions", body={"model": MODEL, "prompt": "Roses are red", "max_tokens": 8}
    )
    completion = (await provider.send(call, DEPLOYMENT)).json()
    assert completion["object"] == "text_completion" and completion["usage"]["completion_tokens"] <= 8
    call = ProviderCall(
        endpoint="embeddings", body={"model": "sim/text-embedding-3-small", "input": ["a", "b"]}
    )
    embeddings = (await provider.send(call, DEPLOYMENT)).json()
    assert [len(d["embedding"]) for d in embeddings["data"]] == [1536, 1536]


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [("500", UpstreamError, 500), ("503", UpstreamUnavailable, 503), ("400", UpstreamRejected, 400)],
)
async def test_error_faults_become_gateway_errors(kind: str, error: type[UpstreamError], status: int) -> None:
    with pytest.raises(error) as caught:
        await SimProvider().send(chat("hi", headers={"x-sim-fault": kind}), DEPLOYMENT)
    assert type(caught.value) is error and caught.value.upstream_status == status
    assert caught.value.message.startswith(f"{MODEL}: ")


async def test_rate_limit_keeps_retry_after() -> None:
    call = chat("hi [[sim:fault=429]]", headers={"X-Sim-Retry-After": "2"})
    with pytest.raises(UpstreamRateLimited) as caught:
        await SimProvider().send(call, DEPLOYMENT)
    assert caught.value.retry_after_s == 2 and caught.value.headers["retry-after"] == "2"
    assert "Rate limit reached" in caught.value.message


async def test_timeout_is_bounded_by_the_deployment() -> None:
    quick = Deployment(provider="sim", model="*", timeout_s=0.2)
    for call in (chat("hi", headers={"x-sim-fault": "timeout"}), chat("hi [[sim:latency_ms=5000]]")):
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await SimProvider().send(call, quick)
        assert 0.18 <= time.monotonic() - started < 2


@pytest.mark.parametrize("kind", ["reset", "malformed"])
async def test_broken_streams_raise_after_the_chunks_already_sent(kind: str) -> None:
    response = await SimProvider().send(
        chat("A long answer", stream=True, headers={"x-sim-fault": kind}), DEPLOYMENT
    )
    assert response.stream is not None
    received: list[bytes] = []
    with pytest.raises(UpstreamError) as caught:
        async for data in response.stream:
            received.append(data)
    assert type(caught.value) is UpstreamError
    assert content_of([orjson.loads(d[6:]) for d in received])  # some content came first
    with pytest.raises(UpstreamError):
        await SimProvider().send(chat("hi", headers={"x-sim-fault": kind}), DEPLOYMENT)


async def test_invalid_requests_are_rejected_with_the_param() -> None:
    call = ProviderCall(endpoint="chat", body={"model": MODEL, "messages": [{"content": "no role"}]})
    with pytest.raises(UpstreamRejected) as caught:
        await SimProvider().send(call, DEPLOYMENT)
    assert caught.value.status == 400 and caught.value.param == "messages[0].role"
    assert caught.value.to_openai()["error"]["code"] == "missing_required_parameter"


async def test_configured_faults_and_timing() -> None:
    with pytest.raises(UpstreamUnavailable):
        await SimProvider(SimConfig(fault="503", fault_rate=1.0)).send(chat("hi"), DEPLOYMENT)
    with pytest.raises(ValueError, match="unknown fault 'teapot'"):
        SimProvider(SimConfig(fault="teapot"))
    paced = SimProvider(SimConfig(ttft_ms=150))
    started = time.monotonic()
    await paced.send(chat("hi", max_tokens=5), DEPLOYMENT)
    assert time.monotonic() - started >= 0.15


async def test_extra_body_is_merged_like_a_network_provider() -> None:
    deployment = Deployment(provider="sim", model="*", extra_body={"seed": 11})
    with_seed = (await SimProvider().send(chat("Seeded"), deployment)).json()
    explicit = (await SimProvider().send(chat("Seeded", seed=11), DEPLOYMENT)).json()
    unseeded = (await SimProvider().send(chat("Seeded"), DEPLOYMENT)).json()
    assert with_seed["choices"][0]["message"] == explicit["choices"][0]["message"]
    assert with_seed["choices"][0]["message"] != unseeded["choices"][0]["message"]
