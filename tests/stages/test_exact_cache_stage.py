"""The exact-cache stage in process: a real dispatcher and the in-process simulated provider.

What the end-to-end suite cannot easily show: a store that is down, a team's bad settings, a
config change that retires old entries, and another stage's short-circuit never stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.config import Config, parse_config
from gateway.dispatch import Dispatcher
from gateway.errors import CacheMiss, ModelNotFound
from gateway.pipeline import CallNext, Principal, Request, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.sim.transport import SimProvider
from gateway.stages.exact_cache import ExactCacheStage
from gateway.store.base import Store
from gateway.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

MODELS: dict[str, Any] = {"sim/*": {"deployments": [{"provider": "sim", "model": "*", "api_key": "one"}]}}
BODY: dict[str, Any] = {"model": "sim/gpt-4o", "temperature": 0, "max_tokens": 30,
                        "messages": [{"role": "user", "content": "What is an exact cache?"}]}  # fmt: skip


def _config(models: dict[str, Any] = MODELS, **exact_cache: Any) -> Config:
    return parse_config({"models": models, "stages": {"exact_cache": exact_cache}})


def _stage(store: Store, config: Config | None = None) -> tuple[ExactCacheStage, CallNext]:
    config = config or _config()
    dispatcher = Dispatcher(config, {"sim": SimProvider()})
    return ExactCacheStage(config, store, dispatcher), dispatcher


def _ctx(body: dict[str, Any] = BODY, *, headers: dict[str, str] | None = None, team: str = "t1",
         settings: dict[str, Any] | None = None) -> RequestContext:  # fmt: skip
    request = Request(endpoint="chat", model=body["model"], body=body, stream=bool(body.get("stream")))
    ctx = RequestContext(request_id="r1", original=request, request=request, principal=Principal(team, "k1"))
    if headers:
        ctx.request_headers = headers
    if settings is not None:
        ctx.stage_settings = {"exact_cache": settings}
    return ctx


async def _settle(stage: ExactCacheStage) -> None:
    await asyncio.sleep(0)  # the JSON answer is kept once the response is on its way
    for storage in list(stage._storages.values()):
        await storage.flush()


async def _ask(
    stage: ExactCacheStage, downstream: CallNext, ctx: RequestContext | None = None
) -> tuple[RequestContext, ProviderResponse]:
    ctx = ctx or _ctx()
    response = await stage(ctx, downstream)
    if response.stream is not None:
        async for _ in response.stream:
            pass
        await response.stream.aclose()
    await _settle(stage)
    return ctx, response


async def test_a_miss_is_stored_and_the_repeat_is_a_hit_that_owns_the_saving() -> None:
    stage, downstream = _stage(MemoryStore())
    miss, _ = await _ask(stage, downstream)
    assert miss.response_headers["x-tollgate-cache"] == "miss" and miss.deployment is not None
    assert [(r.stage, r.owns_remainder) for r in miss.records] == [("exact_cache", False)]
    hit, response = await _ask(stage, downstream)
    assert hit.response_headers["x-tollgate-cache"] == "hit" and hit.deployment is None
    assert [(r.stage, r.owns_remainder, r.detail["status"]) for r in hit.records] == [
        ("exact_cache", True, "hit")
    ]
    assert response.usage is not None and response.usage.completion_tokens > 0
    await stage.aclose()


async def test_a_streamed_miss_is_stored_once_the_stream_has_ended() -> None:
    stage, downstream = _stage(MemoryStore())
    streamed = {**BODY, "stream": True}
    response = await stage(_ctx(streamed), downstream)
    await _settle(stage)
    with pytest.raises(CacheMiss):  # nothing yet: the stream has not been read
        await _ask(stage, downstream, _ctx(headers={"x-tollgate-cache": "only-if-cached"}))
    assert response.stream is not None
    pieces = [piece async for piece in response.stream]
    await _settle(stage)
    hit, replay = await _ask(stage, downstream, _ctx(streamed))
    assert hit.response_headers["x-tollgate-cache"] == "hit" and pieces
    assert replay.stream is not None and replay.stream.usage is not None
    await stage.aclose()


async def test_a_store_that_is_down_is_a_miss_never_a_failed_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    await store.aclose()
    stage, downstream = _stage(store)
    with caplog.at_level(logging.WARNING, logger="tollgate.exact_cache"):
        for _ in range(3):
            ctx, response = await _ask(stage, downstream)
            assert response.status == 200 and ctx.response_headers["x-tollgate-cache"] == "miss"
    assert [r.message for r in caplog.records if r.name == "tollgate.exact_cache"] == [
        "the cache's store is unavailable; answering without it"
    ]  # once, not once a request
    await stage.aclose()


async def test_a_teams_bad_settings_are_logged_once_and_the_gateways_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage, downstream = _stage(MemoryStore())
    bad = {"ttl_s": -1, "colour": "blue"}
    with caplog.at_level(logging.WARNING, logger="tollgate.exact_cache"):
        for _ in range(2):
            ctx, _ = await _ask(stage, downstream, _ctx(settings=bad))
    warnings = [r for r in caplog.records if r.name == "tollgate.exact_cache"]
    assert len(warnings) == 1 and warnings[0].team == "t1"  # type: ignore[attr-defined]
    assert "ttl_s" in warnings[0].error and "colour" in warnings[0].error  # type: ignore[attr-defined]
    assert ctx.response_headers["x-tollgate-cache"] == "hit"
    await stage.aclose()


async def test_a_team_can_opt_in_to_sampled_requests_or_out_of_the_cache() -> None:
    stage, downstream = _stage(MemoryStore())
    sampled = {**BODY, "temperature": 0.7}
    assert (await _ask(stage, downstream, _ctx(sampled)))[0].response_headers["x-tollgate-cache"] == "bypass"
    opted_in = {"cache_nondeterministic": True}
    await _ask(stage, downstream, _ctx(sampled, settings=opted_in))
    ctx, _ = await _ask(stage, downstream, _ctx(sampled, settings=opted_in))
    assert ctx.response_headers["x-tollgate-cache"] == "hit"
    ctx, _ = await _ask(stage, downstream, _ctx(settings={"enabled": False}))
    assert ctx.response_headers["x-tollgate-cache"] == "bypass" and ctx.records == []
    await stage.aclose()


async def test_a_changed_deployment_never_serves_an_old_answer_but_a_new_api_key_does() -> None:
    store = MemoryStore()
    stage, downstream = _stage(store)
    await _ask(stage, downstream)
    rotated = {
        "sim/*": {"deployments": [{"provider": "sim", "model": "*", "api_key": "two", "timeout_s": 9}]}
    }
    same, downstream = _stage(store, _config(rotated))
    assert (await _ask(same, downstream))[0].response_headers["x-tollgate-cache"] == "hit"
    extra = {"sim/*": {"deployments": [{"provider": "sim", "model": "*", "extra_body": {"top_p": 0.9}}]}}
    changed, downstream = _stage(store, _config(extra))
    assert (await _ask(changed, downstream))[0].response_headers["x-tollgate-cache"] == "miss"
    for each in (stage, same, changed):
        await each.aclose()


async def test_another_stages_short_circuit_is_never_stored() -> None:
    stage, dispatcher = _stage(MemoryStore())

    async def answers_itself(ctx: RequestContext) -> ProviderResponse:
        return ProviderResponse.from_json({"object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "near enough"}, "finish_reason": "stop"}]})  # fmt: skip

    await _ask(stage, answers_itself)
    # Nothing stored, so only-if-cached reaches the dispatcher, which calls no model.
    with pytest.raises(CacheMiss):
        await _ask(stage, dispatcher, _ctx(headers={"x-tollgate-cache": "only-if-cached"}))
    await stage.aclose()


async def test_an_unknown_model_passes_through_to_be_refused() -> None:
    stage, downstream = _stage(MemoryStore(), _config({}))
    with pytest.raises(ModelNotFound):
        await _ask(stage, downstream)
    await stage.aclose()


async def test_the_key_holds_the_forwarded_switches_but_not_the_trace_context() -> None:
    stage, downstream = _stage(MemoryStore())

    def asking(**client_headers: str) -> RequestContext:
        ctx = _ctx()
        ctx.client_headers = {name.replace("_", "-"): value for name, value in client_headers.items()}
        return ctx

    await _ask(stage, downstream, asking(traceparent="00-aaaa-01", x_sim_ttft_ms="1"))
    again, _ = await _ask(
        stage, downstream, asking(traceparent="00-bbbb-01", tracestate="k=v", x_sim_ttft_ms="1")
    )
    assert again.response_headers["x-tollgate-cache"] == "hit"
    other, _ = await _ask(stage, downstream, asking(traceparent="00-cccc-01", x_sim_ttft_ms="2"))
    assert other.response_headers["x-tollgate-cache"] == "miss"
    await stage.aclose()
