"""The semantic cache stage on its own: a real embedder, the simulated provider, a real store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.cache.versions import AnswerVersions
from gateway.config import Config, parse_config
from gateway.dispatch import Dispatcher
from gateway.errors import CacheMiss
from gateway.pipeline import CallNext, Principal, Request, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.semantic.embedder import Embedder, load_embedder
from gateway.sim.transport import SimProvider
from gateway.stages.semantic_cache import SemanticCacheStage
from gateway.store.base import Store
from gateway.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

MODELS: dict[str, Any] = {"sim/*": {"deployments": [{"provider": "sim", "model": "*"}]}}
SYSTEM = {"role": "system", "content": "You answer questions about our product."}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


def _config(**semantic_cache: Any) -> Config:
    return parse_config({"models": MODELS, "stages": {"semantic_cache": semantic_cache}})


def _stage(store: Store, embedder: Embedder, config: Config | None = None) -> tuple[SemanticCacheStage, CallNext]:
    config = config or _config()
    dispatcher = Dispatcher(config, {"sim": SimProvider()})
    versions = AnswerVersions(config, dispatcher, stage="semantic_cache")
    return SemanticCacheStage(config.stages.semantic_cache, store, versions, embedder), dispatcher


def _ctx(
    question: str,
    *,
    history: list[dict[str, str]] | None = None,
    team: str = "t1",
    stream: bool = False,
    headers: dict[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    **params: Any,
) -> RequestContext:
    messages = [SYSTEM, *(history or []), {"role": "user", "content": question}]
    body: dict[str, Any] = {"model": "sim/gpt-4o", "temperature": 0, "max_tokens": 20, "messages": messages}
    body.update(params)
    if stream:
        body["stream"] = True
    request = Request(endpoint="chat", model="sim/gpt-4o", body=body, stream=stream)
    ctx = RequestContext(request_id="r1", original=request, request=request, principal=Principal(team, "k1"))
    if headers:
        ctx.request_headers = headers
    if settings is not None:
        ctx.stage_settings = {"semantic_cache": settings}
    return ctx


async def _ask(stage: SemanticCacheStage, downstream: CallNext, ctx: RequestContext) -> tuple[RequestContext, ProviderResponse]:
    response = await stage(ctx, downstream)
    if response.stream is not None:
        async for _ in response.stream:
            pass
        await response.stream.aclose()
    # Answers are stored after the client has them: wait for that here.
    for _ in range(3):
        await asyncio.sleep(0)
    while stage._pending:
        await asyncio.gather(*stage._pending)
    return ctx, response


def _status(ctx: RequestContext) -> str | None:
    if ctx.response_headers.get("x-tollgate-cache-source") == "semantic":
        return "hit"
    return "miss" if ctx.deployment is not None else None


async def test_a_paraphrase_is_a_hit_that_owns_the_saving(embedder: Embedder) -> None:
    stage, downstream = _stage(MemoryStore(), embedder)
    first, answer = await _ask(stage, downstream, _ctx("How do I reset my password?"))
    assert _status(first) == "miss"
    hit, replay = await _ask(stage, downstream, _ctx("How can I reset my password?"))
    assert _status(hit) == "hit" and hit.deployment is None
    assert hit.response_headers["x-tollgate-cache"] == "hit"
    assert 0.8 <= float(hit.response_headers["x-tollgate-cache-similarity"]) <= 1
    assert [(r.stage, r.owns_remainder) for r in hit.records] == [("semantic_cache", True)]
    assert replay.json()["choices"][0]["message"] == answer.json()["choices"][0]["message"]
    assert replay.usage == answer.usage
    await stage.aclose()


async def test_a_question_whose_numbers_or_polarity_differ_is_not_served(embedder: Embedder) -> None:
    stage, downstream = _stage(MemoryStore(), embedder)
    await _ask(stage, downstream, _ctx("What is 15% of 240?"))
    await _ask(stage, downstream, _ctx("What are the advantages of remote work?"))
    numbers, _ = await _ask(stage, downstream, _ctx("What is 25% of 240?"))
    polarity, _ = await _ask(stage, downstream, _ctx("What are the disadvantages of remote work?"))
    assert _status(numbers) == "miss" and _status(polarity) == "miss"
    await stage.aclose()


async def test_a_follow_up_never_matches_another_conversations_follow_up(embedder: Embedder) -> None:
    stage, downstream = _stage(MemoryStore(), embedder)
    paris = [{"role": "user", "content": "Tell me about Paris."}, {"role": "assistant", "content": "Paris is..."}]
    rome = [{"role": "user", "content": "Tell me about Rome."}, {"role": "assistant", "content": "Rome is..."}]
    await _ask(stage, downstream, _ctx("Can you expand on that?", history=paris))
    other, _ = await _ask(stage, downstream, _ctx("Can you expand on that?", history=rome))
    assert _status(other) == "miss"
    same, _ = await _ask(stage, downstream, _ctx("Could you expand on that?", history=paris))
    assert _status(same) == "hit"
    await stage.aclose()


async def test_teams_models_and_parameters_never_share_entries(embedder: Embedder) -> None:
    stage, downstream = _stage(MemoryStore(), embedder)
    await _ask(stage, downstream, _ctx("How do I export invoices?"))
    for ctx in (
        _ctx("How do I export invoices?", team="t2"),
        _ctx("How do I export invoices?", max_tokens=21),
        _ctx("How do I export invoices?", seed=3),
    ):
        asked, _ = await _ask(stage, downstream, ctx)
        assert _status(asked) == "miss", ctx.request.body
    await stage.aclose()


async def test_a_streamed_question_hits_a_json_answer_and_replays_as_a_stream(embedder: Embedder) -> None:
    stage, downstream = _stage(MemoryStore(), embedder)
    _, answer = await _ask(stage, downstream, _ctx("Which plans include single sign-on?"))
    ctx = _ctx("Which of your plans include single sign-on?", stream=True, stream_options={"include_usage": True})
    response = await stage(ctx, downstream)
    assert response.stream is not None and _status(ctx) == "hit"
    data = b"".join([piece async for piece in response.stream])
    assert data.endswith(b"data: [DONE]\n\n") and b'"usage":{' in data
    assert answer.json()["choices"][0]["message"]["content"][:10].encode() in data
    await stage.aclose()


async def test_sampled_requests_are_cached_only_when_the_team_opts_in(embedder: Embedder) -> None:
    stage, downstream = _stage(MemoryStore(), embedder)
    await _ask(stage, downstream, _ctx("What is a webhook?", temperature=0.7))
    sampled, _ = await _ask(stage, downstream, _ctx("What's a webhook?", temperature=0.7))
    assert _status(sampled) == "miss"
    opted = {"cache_nondeterministic": True}
    await _ask(stage, downstream, _ctx("What is a webhook?", temperature=0.7, settings=opted))
    hit, _ = await _ask(stage, downstream, _ctx("What's a webhook?", temperature=0.7, settings=opted))
    assert _status(hit) == "hit"
    await stage.aclose()


async def test_a_teams_threshold_and_the_clients_controls_are_honoured(embedder: Embedder) -> None:
    stage, downstream = _stage(MemoryStore(), embedder)
    await _ask(stage, downstream, _ctx("How do I rotate an API key?"))
    strict, _ = await _ask(stage, downstream, _ctx("How can I rotate an API key?", settings={"threshold": 0.999}))
    assert _status(strict) == "miss"
    bypassed, _ = await _ask(stage, downstream, _ctx("How can I rotate my API key?", headers={"x-tollgate-cache": "bypass"}))
    assert _status(bypassed) == "miss"
    only, _ = await _ask(stage, downstream, _ctx("How would I rotate an API key?", headers={"x-tollgate-cache": "only-if-cached"}))
    assert _status(only) == "hit"
    with pytest.raises(CacheMiss):  # nothing similar: the dispatcher refuses to call a model
        await _ask(stage, downstream, _ctx("What is the capital of Peru?", headers={"x-tollgate-cache": "only-if-cached"}))
    await stage.aclose()


async def test_two_instances_on_one_store_share_entries(embedder: Embedder) -> None:
    store = MemoryStore()
    one, downstream = _stage(store, embedder)
    two, _ = _stage(store, embedder)
    await two.start()
    await _ask(one, downstream, _ctx("How long are invoices kept?"))
    await two.catalog.sync()
    hit, _ = await _ask(two, downstream, _ctx("How long are the invoices kept?"))
    assert _status(hit) == "hit"
    # A third instance started later reads every entry before its first request.
    three, _ = _stage(store, embedder)
    await three.start()
    later, _ = await _ask(three, downstream, _ctx("How long are invoices kept for?"))
    assert _status(later) == "hit"
    for stage in (one, two, three):
        await stage.aclose()


async def test_an_entry_whose_answer_is_gone_is_forgotten_and_missed(embedder: Embedder) -> None:
    store = MemoryStore()
    stage, downstream = _stage(store, embedder)
    await _ask(stage, downstream, _ctx("Can I pay by bank transfer?"))
    assert len(stage.catalog) == 1
    for key, _ in await store.scan("sc:t1:"):
        await store.delete(key)
    gone, _ = await _ask(stage, downstream, _ctx("Is paying by bank transfer possible?"))
    assert _status(gone) == "miss"
    # The miss was answered and stored again.
    assert len(stage.catalog) == 1
    await stage.aclose()


async def test_an_answer_the_storage_drops_is_never_announced(embedder: Embedder) -> None:
    # Every answer is larger than this bound: the storage refuses it, so no entry may point to it.
    stage, downstream = _stage(MemoryStore(), embedder, _config(max_bytes=64))
    await _ask(stage, downstream, _ctx("Can I pay by bank transfer?"))
    assert len(stage.catalog) == 0
    again, _ = await _ask(stage, downstream, _ctx("Can I pay by bank transfer?"))
    assert _status(again) == "miss"
    await stage.aclose()
