"""Injected faults and timing, as the official SDKs surface them to a user."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway.config import SimConfig

StartSim = Callable[..., AbstractContextManager[str]]

MODEL = "sim/gpt-4o"


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def fault(kind: str, **more: str) -> dict[str, str]:
    return {"x-sim-fault": kind, **more}


@pytest.mark.parametrize(
    ("kind", "error", "status", "error_type"),
    [
        ("429", openai.RateLimitError, 429, "requests"),
        ("500", openai.InternalServerError, 500, "server_error"),
        ("503", openai.InternalServerError, 503, "server_error"),
        ("400", openai.BadRequestError, 400, "invalid_request_error"),
    ],
)
def test_error_faults_by_header_and_by_marker(
    client: openai.OpenAI, kind: str, error: type[openai.APIStatusError], status: int, error_type: str
) -> None:
    with pytest.raises(error) as by_header:
        client.chat.completions.create(model=MODEL, messages=ask("hi"), extra_headers=fault(kind))
    with pytest.raises(error) as by_marker:
        client.chat.completions.create(model=MODEL, messages=ask(f"hi [[sim:fault={kind}]]"))
    for caught in (by_header.value, by_marker.value):
        assert caught.status_code == status
        assert caught.type == error_type and caught.message
        body = caught.response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}


def test_rate_limit_carries_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as default:
        client.chat.completions.create(model=MODEL, messages=ask("hi"), extra_headers=fault("429"))
    assert default.value.response.headers["retry-after"] == "1"
    assert default.value.code == "rate_limit_exceeded"
    assert default.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as by_header:
        client.chat.completions.create(
            model=MODEL, messages=ask("hi"), extra_headers=fault("429", **{"x-sim-retry-after": "2"})
        )
    assert by_header.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.RateLimitError) as by_marker:
        client.chat.completions.create(
            model=MODEL, messages=ask("hi [[sim:fault=429]] [[sim:retry_after=3]]")
        )
    assert by_marker.value.response.headers["retry-after"] == "3"
    assert "Please try again in 3s" in by_marker.value.message


def test_reset_drops_the_connection(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=ask("hi"), extra_headers=fault("reset"))


def test_reset_mid_stream_raises_after_some_chunks(client: openai.OpenAI) -> None:
    received: list[str] = []
    stream = client.with_options(timeout=5).chat.completions.create(
        model=MODEL, messages=ask("A long story [[sim:fault=reset]]"), stream=True
    )
    started = time.monotonic()
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert time.monotonic() - started < 4
    assert "".join(received)  # some content arrived before the connection dropped


def test_malformed_answers(client: openai.OpenAI, sim_url: str) -> None:
    raw = httpx.post(
        f"{sim_url}/v1/chat/completions",
        json={"model": MODEL, "messages": ask("hi")},
        headers={"authorization": "Bearer sk-test", **fault("malformed")},
    )
    assert raw.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.content)
    with pytest.raises((json.JSONDecodeError, openai.APIError)):
        client.chat.completions.create(model=MODEL, messages=ask("hi"), extra_headers=fault("malformed"))
    received: list[str] = []
    with pytest.raises((json.JSONDecodeError, openai.APIError)):
        for chunk in client.chat.completions.create(
            model=MODEL, messages=ask("hi"), stream=True, extra_headers=fault("malformed")
        ):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received)


def test_timeout_never_answers(client: openai.OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(
            model=MODEL, messages=ask("hi"), extra_headers=fault("timeout")
        )
    assert 0.45 <= time.monotonic() - started < 3


def test_unknown_fault_kind_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown simulator fault 'boom'"):
        client.chat.completions.create(model=MODEL, messages=ask("hi"), extra_headers=fault("boom"))


def test_anthropic_error_shapes(claude: anthropic.Anthropic) -> None:
    request: dict[str, Any] = {
        "model": "sim/claude-3-5-haiku-latest",
        "max_tokens": 64,
        "messages": ask("hi"),
    }
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(**request, extra_headers=fault("429", **{"x-sim-retry-after": "2"}))
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": limited.value.body["error"]["message"]},  # type: ignore[index]
    }
    assert limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        claude.messages.create(**request, extra_headers=fault("503"))
    assert overloaded.value.status_code == 503
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as broken:
        claude.messages.create(**{**request, "messages": ask("hi [[sim:fault=500]]")})
    assert broken.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.APIConnectionError):
        claude.messages.create(**request, extra_headers=fault("reset"))


def test_anthropic_stream_reset_raises(claude: anthropic.Anthropic) -> None:
    text: list[str] = []
    with (
        pytest.raises(Exception) as caught,
        claude.messages.stream(
            model="sim/claude-3-5-haiku-latest",
            max_tokens=300,
            messages=ask("A long story [[sim:fault=reset]]"),
        ) as stream,
    ):
        for piece in stream.text_stream:
            text.append(piece)
    assert (
        isinstance(caught.value, anthropic.APIError) or type(caught.value).__name__ == "RemoteProtocolError"
    )
    assert "".join(text)


def test_latency_header_delays_the_answer(client: openai.OpenAI) -> None:
    started = time.monotonic()
    client.chat.completions.create(model=MODEL, messages=ask("hi"), extra_headers={"x-sim-latency-ms": "300"})
    assert 0.3 <= time.monotonic() - started < 2.5


def stream_timings(
    client: openai.OpenAI, headers: dict[str, str], **options: Any
) -> tuple[float, float, float, int]:
    """(role chunk at, first content at, last content at, content chunks) in seconds from the request."""
    started = time.monotonic()
    times: list[float] = []
    role_at = 0.0
    for chunk in client.chat.completions.create(
        model=MODEL, messages=ask("Timing test"), stream=True, extra_headers=headers, **options
    ):
        if chunk.choices and chunk.choices[0].delta.role:
            role_at = time.monotonic() - started
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic() - started)
    return role_at, times[0], times[-1], len(times)


def test_ttft_and_tokens_per_second(client: openai.OpenAI) -> None:
    role_at, first, _, _ = stream_timings(client, {"x-sim-ttft-ms": "400"})
    assert role_at < first and 0.4 <= first < 2.5
    _, first, last, _ = stream_timings(client, {"x-sim-tokens-per-s": "100"}, max_tokens=30)
    # 30 tokens at 100/s: the last delta comes ~0.3s after the first (minus the first delta's own tokens).
    assert 0.25 <= last - first < 2.5


def statuses(base_url: str, count: int) -> list[int]:
    with httpx.Client(base_url=base_url, headers={"authorization": "Bearer k"}, timeout=5) as http:
        body = {"model": MODEL, "messages": ask("hi")}
        return [http.post("/v1/chat/completions", json=body).status_code for _ in range(count)]


def test_configured_latency_and_seeded_fault_rate(start_sim: StartSim) -> None:
    with start_sim(SimConfig(latency_ms=100, fault="503", fault_rate=0.5), fault_seed=3) as url:
        started = time.monotonic()
        first = statuses(url, 8)
        assert time.monotonic() - started >= 8 * 0.1
    assert set(first) == {200, 503}
    with start_sim(SimConfig(fault="503", fault_rate=0.5), fault_seed=3) as url:
        assert statuses(url, 8) == first  # a seeded generator: the same run fails the same requests
    with start_sim(SimConfig(fault_rate=1.0)) as url:
        assert set(statuses(url, 6)) <= {429, 500, 503}  # no kind configured: the transient ones
