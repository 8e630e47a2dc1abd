"""One contract every registered stage keeps, whatever it does.

A new stage joins REGISTRY and gets an entry in ADMIT below: how to build it so that a
request passes through it. The suite then checks the pipeline's rules on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from gateway.accounting.prices import PriceTable
from gateway.config import Config, parse_config
from gateway.dispatch import Dispatcher
from gateway.errors import UpstreamError
from gateway.keys import KeyRing
from gateway.pipeline import CANONICAL_ORDER, Principal, Request, RequestContext, Stage, build_chain
from gateway.providers.base import ProviderResponse
from gateway.stages.policy_source import TEAM_PREFIX
from gateway.stages.registry import REGISTRY, StageDeps, build_stages
from gateway.store.base import Store
from gateway.store.memory import MemoryStore

Setup = Callable[[], Awaitable[tuple[Stage, Callable[[RequestContext], None]]]]


SIM_MODELS = {"sim/*": {"deployments": [{"provider": "sim", "model": "*"}]}}


def _deps(config: Config, store: Store, keys: KeyRing | None = None) -> StageDeps:
    return StageDeps(store=store, keys=keys or KeyRing(store), dispatcher=Dispatcher(config, {}), prices=PriceTable())


async def _admit_auth() -> tuple[Stage, Callable[[RequestContext], None]]:
    keys = KeyRing(MemoryStore())
    await keys.create_team("contract")
    plaintext, _ = await keys.create_key("contract")
    config = parse_config({"server": {"master_key": "tg-master"}, "models": SIM_MODELS})
    stage = REGISTRY["auth"](config, _deps(config, MemoryStore(), keys))
    assert stage is not None

    def prepare(ctx: RequestContext) -> None:
        ctx.api_key = plaintext

    return stage, prepare


async def _admit_policy() -> tuple[Stage, Callable[[RequestContext], None]]:
    store = MemoryStore()
    policy = {"budgets": [{"amount_usd": 100, "period": "day"}], "rate_limits": {"requests_per_minute": 100, "concurrent": 5}}
    await store.set(TEAM_PREFIX + "contract", orjson.dumps(policy))
    config = parse_config({"models": SIM_MODELS})
    stage = REGISTRY["policy"](config, _deps(config, store))
    assert stage is not None

    def prepare(ctx: RequestContext) -> None:
        ctx.principal = Principal(team="contract", key_id="k1")

    return stage, prepare


async def _admit_exact_cache() -> tuple[Stage, Callable[[RequestContext], None]]:
    config = parse_config({"models": SIM_MODELS})
    stage = REGISTRY["exact_cache"](config, _deps(config, MemoryStore()))
    assert stage is not None

    def prepare(ctx: RequestContext) -> None:
        # A deterministic request, so the stage looks it up (a miss) rather than passing it by.
        ctx.request = ctx.request.replace(body={**ctx.request.body, "temperature": 0})

    return stage, prepare


async def _admit_semantic_cache() -> tuple[Stage, Callable[[RequestContext], None]]:
    config = parse_config({"models": SIM_MODELS})
    stage = REGISTRY["semantic_cache"](config, _deps(config, MemoryStore()))
    assert stage is not None

    def prepare(ctx: RequestContext) -> None:
        ctx.request = ctx.request.replace(body={**ctx.request.body, "temperature": 0})

    return stage, prepare


async def _admit_route() -> tuple[Stage, Callable[[RequestContext], None]]:
    candidates = {name: {"deployments": [{"provider": "sim", "model": name}]} for name in ("gpt-4o", "gpt-4o-mini")}
    routed = {"smart": {"route": {"candidates": ["gpt-4o", "gpt-4o-mini"]}}}
    config = parse_config({"models": {**SIM_MODELS, **candidates, **routed}})
    stage = REGISTRY["route"](config, _deps(config, MemoryStore()))
    assert stage is not None

    def prepare(ctx: RequestContext) -> None:
        ctx.request = ctx.request.replace(body={**ctx.request.body, "model": "smart"})

    return stage, prepare


async def _admit_compress() -> tuple[Stage, Callable[[RequestContext], None]]:
    config = parse_config({"models": SIM_MODELS, "stages": {"compress": {"level": 0.5}}})
    stage = REGISTRY["compress"](config, _deps(config, MemoryStore()))
    assert stage is not None

    def prepare(ctx: RequestContext) -> None:
        pass

    return stage, prepare


async def _admit_context() -> tuple[Stage, Callable[[RequestContext], None]]:
    config = parse_config({"models": SIM_MODELS, "stages": {"context": {"tool_selection": {"embedder": "static"}}}})
    stage = REGISTRY["context"](config, _deps(config, MemoryStore()))
    assert stage is not None

    def prepare(ctx: RequestContext) -> None:
        pass

    return stage, prepare


async def _admit_defer() -> tuple[Stage, Callable[[RequestContext], None]]:
    # A request nobody marked deferrable passes through to the rest of the chain.
    config = parse_config({"models": SIM_MODELS})
    stage = REGISTRY["defer"](config, _deps(config, MemoryStore()))
    assert stage is not None

    def prepare(ctx: RequestContext) -> None:
        pass

    return stage, prepare


ADMIT: dict[str, Setup] = {
    "auth": _admit_auth,
    "policy": _admit_policy,
    "exact_cache": _admit_exact_cache,
    "context": _admit_context,
    "compress": _admit_compress,
    "semantic_cache": _admit_semantic_cache,
    "route": _admit_route,
    "defer": _admit_defer,
}


@pytest.fixture(params=sorted(REGISTRY))
async def admitted(request: pytest.FixtureRequest) -> tuple[Stage, Callable[[RequestContext], None]]:
    assert request.param in ADMIT, f"stage {request.param!r} has no contract setup in ADMIT"
    return await ADMIT[request.param]()


def _ctx() -> RequestContext:
    body = {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    req = Request(endpoint="chat", model="sim/gpt-4o", body=body)
    return RequestContext(request_id="r1", original=req, request=req)


def test_every_registered_stage_has_a_canonical_place() -> None:
    assert set(REGISTRY) <= set(CANONICAL_ORDER)


@pytest.mark.anyio
async def test_passes_the_same_context_and_returns_the_downstream_response(admitted: Any) -> None:
    stage, prepare = admitted
    ctx = _ctx()
    prepare(ctx)
    original = ctx.original
    answer = ProviderResponse.from_json({"ok": True})
    seen: list[RequestContext] = []

    async def downstream(c: RequestContext) -> ProviderResponse:
        seen.append(c)
        return answer

    result = await build_chain([stage], downstream)(ctx)
    assert seen == [ctx]
    assert result is answer
    assert ctx.original is original


@pytest.mark.anyio
async def test_downstream_errors_reach_the_caller_unchanged(admitted: Any) -> None:
    stage, prepare = admitted
    ctx = _ctx()
    prepare(ctx)
    failure = UpstreamError("upstream broke")

    async def downstream(c: RequestContext) -> ProviderResponse:
        raise failure

    with pytest.raises(UpstreamError) as info:
        await build_chain([stage], downstream)(ctx)
    assert info.value is failure


@pytest.mark.anyio
async def test_streams_pass_through_without_being_buffered(admitted: Any) -> None:
    stage, prepare = admitted
    ctx = _ctx()
    prepare(ctx)
    produced: list[int] = []

    class Stream:
        usage = None

        def __aiter__(self) -> AsyncIterator[bytes]:
            return self._gen()

        async def _gen(self) -> AsyncIterator[bytes]:
            for i in range(3):
                produced.append(i)
                yield f"data: {i}\n\n".encode()

        async def aclose(self) -> None:
            pass

    async def downstream(c: RequestContext) -> ProviderResponse:
        return ProviderResponse(stream=Stream())

    result = await build_chain([stage], downstream)(ctx)
    assert produced == []  # nothing consumed before the client reads
    assert result.stream is not None
    assert [chunk async for chunk in result.stream] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]


def test_a_switched_off_stage_is_absent_from_the_chain() -> None:
    config = parse_config({"stages": {name: {"enabled": False} for name in REGISTRY}})
    assert build_stages(config, _deps(config, MemoryStore())) == []


def test_chain_rejects_stages_out_of_canonical_order() -> None:
    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        async def __call__(self, ctx: RequestContext, call_next: Any) -> ProviderResponse:
            return await call_next(ctx)

    async def terminal(c: RequestContext) -> ProviderResponse:
        return ProviderResponse.from_json({})

    with pytest.raises(ValueError, match="out of canonical order"):
        build_chain([Fake("route"), Fake("auth")], terminal)  # type: ignore[list-item]
