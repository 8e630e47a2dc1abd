"""A context stage built for unit tests: a fake summariser behind the dispatcher's interface."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.accounting.prices import PriceTable
from gateway.config import PriceOverride, parse_config
from gateway.pipeline import Request, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.routing.static_embedding import StaticEmbedder, shared_static_embedder
from gateway.stages.context import ContextStage
from gateway.store.memory import MemoryStore

SUMMARY = "The user asked several questions about writing, maths and history; answers were given."


class FakeSummariser:
    """Answers every summary call with SUMMARY and counts the calls it got."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def knows(self, model: str) -> bool:
        return True

    async def __call__(self, ctx: RequestContext) -> ProviderResponse:
        self.calls.append(dict(ctx.request.body))
        ctx.served_model = ctx.request.model
        usage = {"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020}
        return ProviderResponse.from_json(
            {"choices": [{"message": {"role": "assistant", "content": SUMMARY}}], "usage": usage}
        )


PRICES = PriceTable(
    {
        "gpt-4o": PriceOverride(input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal(10)),
        "cheap": PriceOverride(input_per_mtok=Decimal("0.25"), output_per_mtok=Decimal(1)),
    },
    lookup=lambda model: None,
)


def embedder() -> StaticEmbedder:
    return shared_static_embedder()


def build(
    context: dict[str, Any] | None = None, *, with_embedder: bool = True
) -> tuple[ContextStage, FakeSummariser, MemoryStore]:
    """`with_embedder=False`: the gateway loaded no embedder (tool selection off at start-up)."""
    config = parse_config({"stages": {"context": context or {}}})
    summariser = FakeSummariser()
    store = MemoryStore()
    vectors = embedder() if with_embedder else None
    stage = ContextStage(config.stages.context, store, summariser, PRICES, vectors)  # type: ignore[arg-type]
    return stage, summariser, store


def context(body: dict[str, Any], *, stream: bool = False) -> RequestContext:
    request = Request(
        endpoint="chat",
        model=str(body.get("model", "gpt-4o")),
        body={"model": "gpt-4o", **body},
        stream=stream,
    )
    return RequestContext(request_id="r1", original=request, request=request)
