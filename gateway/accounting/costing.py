"""What a request cost, what it would have cost with no gateway, and which stage saved the difference.

- actual: the served deployment's price for the tokens really billed; zero when no upstream
  was called (a cache hit, a refusal) or when the call failed before anything was generated.
- baseline: the original request on the requested model, online, with no gateway: the
  alias's primary deployment at its price, for the tokens the answer used plus those the
  stages saved. Provider-side prompt caching is kept in the baseline: it would have
  happened without the gateway too.
- saved = baseline - actual, split by the stage records: tokens a stage saved are priced at
  the baseline's rates; what no stage accounts for goes to the stage that owns the
  remainder (the cache that answered, the route that chose), else to `dispatch` (a
  weighted pick or a fallback landed on a cheaper or dearer deployment).

A price that is unknown stays unknown (None), never a silent zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from gateway.accounting.prices import Price, PriceTable
from gateway.pipeline import RequestContext
from gateway.providers.base import Usage

_ZERO = Decimal(0)

# How a request left the gateway.
Outcome = Literal["ok", "error", "refused", "disconnected", "short_circuit", "deferred"]

# The stage credited with savings nobody else claims (the dispatcher's choice of deployment).
DISPATCH = "dispatch"
UNATTRIBUTED = "unattributed"


@dataclass(slots=True)
class CostReport:
    usage: Usage | None
    cost_usd: Decimal | None
    baseline_usd: Decimal | None
    saved_by_stage: dict[str, Decimal] = field(default_factory=dict)
    # The request waits for a provider batch: nothing is spent yet, and budget reservations
    # stay held until its result is costed.
    held: bool = False

    @property
    def saved_usd(self) -> Decimal | None:
        if self.cost_usd is None or self.baseline_usd is None:
            return None
        return self.baseline_usd - self.cost_usd


def cost_request(
    ctx: RequestContext,
    usage: Usage | None,
    prices: PriceTable,
    *,
    outcome: Outcome,
    baseline_price: Callable[[str], Price | None],
    batch: bool = False,
) -> CostReport:
    """The cost report for one request; `usage` is what the answer used (None: nothing generated).

    `batch`: the answer came from a provider batch and is billed at batch rates.
    """
    if outcome == "deferred":
        # Costed when its batch result arrives (gateway.batch), under the same request id.
        return CostReport(usage=None, cost_usd=_ZERO, baseline_usd=_ZERO, held=True)
    if usage is None:
        # Nothing was generated and nothing billed: a refusal, an upstream error before any token.
        return CostReport(usage=None, cost_usd=_ZERO, baseline_usd=_ZERO)
    called_upstream = ctx.deployment is not None and outcome != "short_circuit"
    if called_upstream:
        served = ctx.served_model or ctx.request.model
        override = ctx.deployment.effective_price() if ctx.deployment is not None else None
        cost = prices.cost(served, usage, override=override, batch=batch)
    else:
        cost = _ZERO
    saved_input = sum(r.saved_input_tokens for r in ctx.records)
    saved_output = sum(r.saved_output_tokens for r in ctx.records)
    baseline_usage = Usage(
        prompt_tokens=usage.prompt_tokens + saved_input,
        completion_tokens=usage.completion_tokens + saved_output,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        estimated=usage.estimated,
    )
    price = baseline_price(ctx.original.model)
    baseline = None if price is None else price.cost(baseline_usage)
    report = CostReport(usage=usage, cost_usd=cost, baseline_usd=baseline)
    report.saved_by_stage = _attribute(ctx, report, price)
    return report


def _attribute(ctx: RequestContext, report: CostReport, price: Price | None) -> dict[str, Decimal]:
    by_stage: dict[str, Decimal] = {}
    owner: str | None = None
    for record in ctx.records:
        saved = record.saved_usd
        if not saved and price is not None and (record.saved_input_tokens or record.saved_output_tokens):
            saved = price.cost(
                Usage(prompt_tokens=record.saved_input_tokens, completion_tokens=record.saved_output_tokens)
            )
        if saved:
            by_stage[record.stage] = by_stage.get(record.stage, _ZERO) + saved
        if record.owns_remainder:
            owner = record.stage
    total = report.saved_usd
    if total is None:
        return by_stage
    rest = total - sum(by_stage.values(), _ZERO)
    if rest:
        name = owner or (DISPATCH if ctx.deployment is not None else UNATTRIBUTED)
        by_stage[name] = by_stage.get(name, _ZERO) + rest
    return by_stage


def usd_text(amount: Decimal | None) -> str:
    """Money for headers: plain decimal notation, exact to the token; `unknown` when the model
    has no price."""
    if amount is None:
        return "unknown"
    if not amount:
        return "0"
    text = f"{amount:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class BaselinePrices:
    """The price a requested model name would have cost online, without the gateway.

    An alias is priced as its primary (first) deployment: its own price when the config
    gives one, else litellm's list price for the requested name, else for the deployment's
    model. Memoised per name and bounded, as clients choose the names.
    """

    _LIMIT = 4096

    def __init__(self, prices: PriceTable, primary: Callable[[str], tuple[str, Price | None] | None]) -> None:
        self._prices = prices
        self._primary = primary
        self._memo: dict[str, Price | None] = {}

    def __call__(self, model: str) -> Price | None:
        if model in self._memo:
            return self._memo[model]
        price = self._resolve(model)
        if len(self._memo) >= self._LIMIT:
            self._memo.clear()
        self._memo[model] = price
        return price

    def _resolve(self, model: str) -> Price | None:
        primary = self._primary(model)
        if primary is not None:
            upstream_model, own_price = primary
            if own_price is not None:
                return own_price
            return self._prices.price(model) or self._prices.price(upstream_model)
        return self._prices.price(model)
