"""Baseline, actual and savings by stage, for each way a request can be answered."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.accounting.costing import cost_request
from gateway.accounting.prices import Price, PriceTable
from gateway.config import Deployment, PriceOverride
from gateway.pipeline import Request, RequestContext
from gateway.providers.base import Usage

BIG = Price(Decimal(10), Decimal(30))  # USD per million tokens
SMALL = Price(Decimal(1), Decimal(3))
PRICES = PriceTable({"big": PriceOverride(input_per_mtok=Decimal(10), output_per_mtok=Decimal(30)),
                     "small": PriceOverride(input_per_mtok=Decimal(1), output_per_mtok=Decimal(3))})  # fmt: skip
USAGE = Usage(prompt_tokens=1000, completion_tokens=100)


def _ctx(served: str | None = "big") -> RequestContext:
    request = Request(endpoint="chat", model="big", body={"model": "big", "messages": []})
    ctx = RequestContext(request_id="r", original=request, request=request)
    if served is not None:
        ctx.deployment = Deployment(provider="openai", model=served)
        ctx.served_model = served
        ctx.served_by = f"big#{0 if served == 'big' else 1}"
    return ctx


def _report(ctx: RequestContext, usage: Usage | None = USAGE, outcome: str = "ok"):  # type: ignore[no-untyped-def]
    return cost_request(ctx, usage, PRICES, outcome=outcome, baseline_price={"big": BIG}.get)  # type: ignore[arg-type]


def test_a_plain_request_saves_nothing() -> None:
    report = _report(_ctx())
    assert report.cost_usd == report.baseline_usd == Decimal("0.013")
    assert report.saved_usd == 0 and report.saved_by_stage == {}


def test_tokens_a_stage_saved_are_priced_at_the_requested_models_rates() -> None:
    ctx = _ctx()
    ctx.record("compress", saved_input_tokens=500)
    report = _report(ctx)
    assert report.baseline_usd == Decimal("0.018")  # 1,500 input tokens would have been sent
    assert report.saved_by_stage == {"compress": Decimal("0.005")}
    assert report.saved_usd == Decimal("0.005")


def test_a_cheaper_route_earns_the_difference_when_it_claims_it() -> None:
    ctx = _ctx(served="small")
    ctx.record("route", owns_remainder=True)
    report = _report(ctx)
    assert report.cost_usd == Decimal("0.0013")
    assert report.saved_by_stage == {"route": Decimal("0.0117")}


def test_a_difference_no_stage_claims_goes_to_dispatch() -> None:
    report = _report(_ctx(served="small"))
    assert report.saved_by_stage == {"dispatch": Decimal("0.0117")}


def test_a_short_circuit_costs_nothing_and_its_stage_earns_the_baseline() -> None:
    ctx = _ctx(served=None)
    ctx.record("compress", saved_input_tokens=200)
    ctx.record("semantic_cache", owns_remainder=True)
    report = _report(ctx, outcome="short_circuit")
    assert (report.cost_usd, report.baseline_usd) == (0, Decimal("0.015"))
    assert report.saved_by_stage == {"compress": Decimal("0.002"), "semantic_cache": Decimal("0.013")}
    assert sum(report.saved_by_stage.values()) == report.saved_usd


def test_nothing_generated_costs_and_saves_nothing() -> None:
    report = _report(_ctx(), usage=None, outcome="error")
    assert (report.cost_usd, report.baseline_usd, report.saved_usd) == (0, 0, 0)


@pytest.mark.parametrize("served", ["unpriced-model"])
def test_an_unpriced_served_model_leaves_cost_and_savings_unknown(served: str) -> None:
    report = _report(_ctx(served=served))
    assert report.cost_usd is None and report.saved_usd is None
    assert report.baseline_usd == Decimal("0.013")
