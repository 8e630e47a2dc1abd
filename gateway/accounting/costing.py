"""What a request cost, what it would have cost with no gateway, and who saved the difference.

baseline = the requested model at list price for the tokens the client's original request
would have used (actual tokens plus those the stages saved); actual = the served model's
price for the tokens really billed. saved = baseline - actual, split by the stage records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.accounting.prices import PriceTable
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


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def ledger_row(ctx: RequestContext, report: CostReport) -> dict[str, Any]:
    """One request as the ledger keeps it; money as decimal strings, never floats."""
    usage = report.usage
    return {
        "request_id": ctx.request_id,
        "ts": time.time(),
        "team": ctx.team,
        "key_id": ctx.principal.key_id if ctx.principal else None,
        "endpoint": ctx.request.endpoint,
        "stream": ctx.request.stream,
        "requested_model": ctx.original.model,
        "served_model": ctx.served_model,
        "deployment": ctx.served_by,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "cached_prompt_tokens": usage.cached_prompt_tokens if usage else None,
        "cost_usd": _money(report.cost_usd),
        "baseline_usd": _money(report.baseline_usd),
        "saved_usd": _money(report.saved_usd),
        "saved_by_stage": {stage: str(saved) for stage, saved in report.saved_by_stage.items()},
        "latency_ms": round((time.perf_counter() - ctx.started_at) * 1000, 3),
    }


def cost_request(ctx: RequestContext, usage: Usage | None, prices: PriceTable) -> CostReport:
    saved_by_stage: dict[str, Decimal] = {}
    saved_input = saved_output = 0
    for record in ctx.records:
        saved_by_stage[record.stage] = saved_by_stage.get(record.stage, _ZERO) + record.saved_usd
        saved_input += record.saved_input_tokens
        saved_output += record.saved_output_tokens
    if usage is None:
        return CostReport(usage=None, cost_usd=None, baseline_usd=None, saved_by_stage=saved_by_stage)
    served = ctx.served_model or ctx.request.model
    price_override = ctx.deployment.effective_price() if ctx.deployment is not None else None
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
