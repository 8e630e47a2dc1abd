"""The dispatcher with the balancer: in-flight counts on every exit, context-overflow fallbacks.

A scripted provider answers by the upstream model name, so each test says what every
deployment does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import pytest

from gateway.config import Config, Deployment, parse_config
from gateway.dispatch import Dispatcher, is_context_overflow
from gateway.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from gateway.pipeline import Request, RequestContext
from gateway.providers.base import Provider, ProviderCall, ProviderResponse, SSEStream
from gateway.providers.openai_compat import upstream_error

pytestmark = pytest.mark.anyio

OVERFLOW = (
    "openai_compat/small: This model's maximum context length is 8192 tokens. However, your messages "
    "resulted in 9001 tokens. Please reduce the length of the messages."
)


async def _chunks() -> AsyncIterator[bytes]:
    yield b'data: {"choices":[]}\n\n'
    yield b"data: [DONE]\n\n"


class Scripted:
    kind = "sim"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def send(self, call: ProviderCall, deployment: Deployment) -> ProviderResponse:
        model = deployment.model
        self.calls.append(model)
        if model.startswith("slow"):
            await self.release.wait()
        if model.startswith("fail"):
            raise UpstreamError(f"{model}: 500", upstream_status=500)
        if model.startswith("overflow"):
            raise UpstreamRejected(
                OVERFLOW, upstream_status=400, code="context_length_exceeded", param="messages"
            )
        if model.startswith("anthropic-overflow"):
            # As the litellm adapter classifies Anthropic's refusal.
            raise UpstreamRejected(
                "anthropic/claude: prompt is too long: 208310 tokens > 200000 maximum",
                upstream_status=400,
                code="context_length_exceeded",
            )
        if model.startswith("reject"):
            raise UpstreamRejected(f"{model}: bad temperature", upstream_status=400, param="temperature")
        if call.stream:
            return ProviderResponse(stream=SSEStream(_chunks()))
        return ProviderResponse.from_json({"model": model, "choices": []})


def config(models: dict[str, Any], **router: Any) -> Config:
    def deployment(model: str) -> dict[str, Any]:
        return {"provider": "sim", "model": model}

    return parse_config(
        {
            "router": {"backoff_base_s": 0, "backoff_max_s": 0, **router},
            "models": {
                alias: {**spec, "deployments": [deployment(m) for m in spec["deployments"]]}
                for alias, spec in models.items()
            },
        }
    )


def dispatcher(models: dict[str, Any], **router: Any) -> tuple[Dispatcher, Scripted]:
    provider = Scripted()
    return Dispatcher(
        config(models, **router), {"sim": cast(Provider, provider)}, rng=random.Random(3)
    ), provider


def context(model: str, stream: bool = False) -> RequestContext:
    request = Request(endpoint="chat", model=model, body={"model": model, "messages": []}, stream=stream)
    return RequestContext(request_id="r", original=request, request=request)


def in_flight(d: Dispatcher, alias: str) -> list[int]:
    return [d._balancer.state(dep).in_flight for dep in d._models[alias].deployments]


# -- in-flight counts ------------------------------------------------------------------------------


async def test_in_flight_is_released_after_an_answer_and_after_a_failure() -> None:
    d, _ = dispatcher(
        {"pair": {"deployments": ["fail-a", "ok-b"], "strategy": "least_outstanding"}},
        failures_before_cooldown=10,
    )
    for _ in range(5):
        ctx = context("pair")
        await d(ctx)
        assert ctx.served_model == "ok-b"
    assert in_flight(d, "pair") == [0, 0]


async def test_in_flight_is_released_when_the_request_is_cancelled() -> None:
    d, _ = dispatcher({"pair": {"deployments": ["slow-a", "slow-b"], "strategy": "least_outstanding"}})
    task = asyncio.ensure_future(d(context("pair")))
    await asyncio.sleep(0.01)
    assert sorted(in_flight(d, "pair")) == [0, 1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_flight(d, "pair") == [0, 0]


async def test_in_flight_lasts_as_long_as_the_stream() -> None:
    d, _ = dispatcher({"pair": {"deployments": ["ok-a", "ok-b"], "strategy": "least_outstanding"}})
    ctx = context("pair", stream=True)
    response = await d(ctx)
    assert response.stream is not None
    assert sum(in_flight(d, "pair")) == 1
    assert [chunk async for chunk in response.stream][-1] == b"data: [DONE]\n\n"
    assert in_flight(d, "pair") == [0, 0]
    await response.stream.aclose()
    assert in_flight(d, "pair") == [0, 0]


async def test_a_stream_closed_by_a_client_that_left_releases() -> None:
    d, _ = dispatcher({"pair": {"deployments": ["ok-a", "ok-b"], "strategy": "latency"}})
    response = await d(context("pair", stream=True))
    assert response.stream is not None
    await response.stream.aclose()
    assert in_flight(d, "pair") == [0, 0]


async def test_least_outstanding_sends_concurrent_requests_to_different_deployments() -> None:
    d, provider = dispatcher({"pair": {"deployments": ["slow-a", "slow-b"], "strategy": "least_outstanding"}})
    tasks = [asyncio.ensure_future(d(context("pair"))) for _ in range(6)]
    await asyncio.sleep(0.01)
    assert in_flight(d, "pair") == [3, 3]
    provider.release.set()
    await asyncio.gather(*tasks)
    assert in_flight(d, "pair") == [0, 0]


async def test_a_single_deployment_tracks_nothing() -> None:
    d, _ = dispatcher({"one": {"deployments": ["ok"]}})
    await d(context("one", stream=True))
    state = d._balancer.state(d._models["one"].deployments[0])
    assert (state.in_flight, state.first_byte_s, state.response_s) == (0, 0.0, 0.0)


async def test_the_weighted_strategy_tracks_nothing() -> None:
    d, _ = dispatcher({"pair": {"deployments": ["ok-a", "ok-b"]}})
    response = await d(context("pair", stream=True))
    assert response.stream is not None
    assert [chunk async for chunk in response.stream][-1] == b"data: [DONE]\n\n"
    for deployment in d._models["pair"].deployments:
        state = d._balancer.state(deployment)
        assert (state.in_flight, state.first_byte_s, state.response_s) == (0, 0.0, 0.0)


# -- context overflow --------------------------------------------------------------------------------


async def test_a_prompt_too_long_is_served_by_the_fallback() -> None:
    d, provider = dispatcher(
        {
            "small": {"deployments": ["overflow"], "fallbacks": ["large"]},
            "large": {"deployments": ["ok-large"]},
        }
    )
    ctx = context("small")
    await d(ctx)
    assert (ctx.served_model, ctx.served_by) == ("ok-large", "large#0")
    assert provider.calls == ["overflow", "ok-large"]  # not retried: another try cannot fit


async def test_anthropic_prompt_too_long_falls_back_too() -> None:
    d, _ = dispatcher(
        {
            "small": {"deployments": ["anthropic-overflow"], "fallbacks": ["large"]},
            "large": {"deployments": ["ok"]},
        }
    )
    ctx = context("small")
    await d(ctx)
    assert ctx.served_model == "ok"


async def test_an_overflow_does_not_cool_the_deployment_down() -> None:
    d, provider = dispatcher(
        {"small": {"deployments": ["overflow"], "fallbacks": ["large"]}, "large": {"deployments": ["ok"]}},
        failures_before_cooldown=1,
    )
    await d(context("small"))
    await d(context("small"))
    assert provider.calls == ["overflow", "ok", "overflow", "ok"]


async def test_when_no_fallback_fits_the_last_overflow_is_returned() -> None:
    d, _ = dispatcher(
        {
            "small": {"deployments": ["overflow"], "fallbacks": ["also"]},
            "also": {"deployments": ["overflow-2"]},
        }
    )
    with pytest.raises(UpstreamRejected) as caught:
        await d(context("small"))
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "context_length_exceeded",
        "messages",
    )


async def test_other_rejections_do_not_fall_back() -> None:
    d, provider = dispatcher(
        {"strict": {"deployments": ["reject"], "fallbacks": ["large"]}, "large": {"deployments": ["ok"]}}
    )
    with pytest.raises(UpstreamRejected):
        await d(context("strict"))
    assert provider.calls == ["reject"]


async def test_overflow_fallback_can_be_switched_off() -> None:
    d, provider = dispatcher(
        {"small": {"deployments": ["overflow"], "fallbacks": ["large"]}, "large": {"deployments": ["ok"]}},
        fallback_on_context_overflow=False,
    )
    with pytest.raises(UpstreamRejected):
        await d(context("small"))
    assert provider.calls == ["overflow"]


async def test_a_failing_fallback_after_an_overflow_reports_its_own_error() -> None:
    d, _ = dispatcher(
        {"small": {"deployments": ["overflow"], "fallbacks": ["down"]}, "down": {"deployments": ["fail"]}},
        retries=0,
    )
    with pytest.raises(UpstreamError) as caught:
        await d(context("small"))
    assert not isinstance(caught.value, UpstreamRejected | UpstreamUnavailable)


@pytest.mark.parametrize(
    ("message", "status", "code", "expected"),
    [
        ("x: This model's maximum context length is 4096 tokens.", 400, None, True),
        ("x: prompt is too long: 208310 tokens > 200000 maximum", 400, None, True),
        ("x: input length and `max_tokens` exceed context limit: 1 + 2 > 2", 400, None, True),
        ("x: whatever", 400, "context_length_exceeded", True),
        ("x: temperature must be at most 2", 400, None, False),
        ("x: The model `gpt-5` does not exist", 404, None, False),
    ],
)
def test_which_rejections_are_context_overflows(
    message: str, status: int, code: str | None, expected: bool
) -> None:
    # Classified where the upstream's answer is translated, as an OpenAI-compatible upstream sends it.
    where, _, text = message.partition(": ")
    body = orjson.dumps({"error": {"message": text, "type": "invalid_request_error", "code": code}})
    err = upstream_error(status, body, {}, where)
    assert isinstance(err, UpstreamRejected)
    assert is_context_overflow(err) is expected
