"""What a request cost, what it would have cost with no gateway, and who saved the difference.

baseline = the requested model at list price for the tokens the client's original request
would have used (actual tokens plus those the stages saved); actual = the served model's
price for the tokens really billed. saved = baseline - actual, split by the stage records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from gateway.accounting.prices import PriceTable
from gateway.config import PriceOverride
from gateway.pipeline import RequestContext
from gateway.providers.base import Usage

_ZERO = Decimal(0)


@dataclass(slots=True)
class CostReport:
    usage: Usage | None
    cost_usd: Decimal | None
    baseline_usd: Decimal | None
    saved_by_stage: dict[str, Decimal] = field(default_factory=dict)

    @property
    def saved_usd(self) -> Decimal:
        if self.cost_usd is None or self.baseline_usd is None:
            return sum(self.saved_by_stage.values(), _ZERO)
        return self.baseline_usd - self.cost_usd


def cost_request(
    ctx: RequestContext, usage: Usage | None, prices: PriceTable, price_override: PriceOverride | None = None
) -> CostReport:
    saved_by_stage: dict[str, Decimal] = {}
    saved_input = saved_output = 0
    for record in ctx.records:
        saved_by_stage[record.stage] = saved_by_stage.get(record.stage, _ZERO) + record.saved_usd
        saved_input += record.saved_input_tokens
        saved_output += record.saved_output_tokens
    if usage is None:
        return CostReport(usage=None, cost_usd=None, baseline_usd=None, saved_by_stage=saved_by_stage)
    served = ctx.served_model or ctx.request.model
    cost = prices.cost(served, usage, override=price_override)
    baseline_usage = Usage(
        prompt_tokens=usage.prompt_tokens + saved_input,
        completion_tokens=usage.completion_tokens + saved_output,
        # The baseline is the online API with no gateway: provider-side prompt caching still applies.
        cached_prompt_tokens=usage.cached_prompt_tokens,
    )
    baseline = prices.cost(ctx.original.model, baseline_usage)
    if baseline is None:
        baseline = cost
    return CostReport(usage=usage, cost_usd=cost, baseline_usd=baseline, saved_by_stage=saved_by_stage)
