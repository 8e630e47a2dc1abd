"""Settling a request: the one place every exit goes through, exactly once.

Success, stream end, client disconnect, upstream error, refusal, short-circuit (a cache
hit) and deferral all end here: the usage is taken from the provider or counted, the cost
report is made, and the ledger row, metrics and span close from the same figures, so
headers, ledger and traces can never disagree.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

from gateway.accounting.costing import BaselinePrices, CostReport, Outcome, cost_request
from gateway.accounting.estimate import (
    body_finish_reasons,
    estimate_usage,
    response_text,
    stream_finish_reasons,
    streamed_text,
)
from gateway.accounting.ledger import Ledger
from gateway.accounting.prices import PriceTable
from gateway.pipeline import RequestContext
from gateway.providers.base import ProviderResponse, Usage
from gateway.telemetry import Telemetry

log = logging.getLogger("tollgate.accounting")


class Accountant:
    def __init__(
        self, prices: PriceTable, baseline: BaselinePrices, ledger: Ledger, telemetry: Telemetry
    ) -> None:
        self.prices = prices
        self.baseline = baseline
        self.ledger = ledger
        self.telemetry = telemetry

    def settle(
        self,
        ctx: RequestContext,
        response: ProviderResponse | None,
        *,
        status: int,
        outcome: Outcome,
        error_type: str | None = None,
        batch: bool = False,
    ) -> CostReport | None:
        """Cost the request, write its ledger row, close its span. A second call does nothing.

        A deferred request gets its ledger row when its batch result is costed (`batch=True`,
        batch rates), not at its 202.
        """
        if ctx.settled:
            return None
        ctx.settled = True
        usage, finish_reasons, output = self._usage(ctx, response)
        report = cost_request(
            ctx, usage, self.prices, outcome=outcome, baseline_price=self.baseline, batch=batch
        )
        for hook in ctx.on_settle:
            try:
                hook(report)
            except Exception:
                log.exception("a settle hook failed", extra={"request_id": ctx.request_id})
        # The ledger is what teams are billed from: a request refused before a team is known
        # (no or bad key) is in metrics and traces only.
        if ctx.principal is not None and not report.held:
            self.ledger.submit(ledger_row(ctx, report, status=status, outcome=outcome, error_type=error_type))
        self.telemetry.finish(
            ctx, report, status=status, outcome=outcome, error_type=error_type,
            finish_reasons=finish_reasons, output_text=output,
        )  # fmt: skip
        return report

    def _usage(
        self, ctx: RequestContext, response: ProviderResponse | None
    ) -> tuple[Usage | None, list[str], str | None]:
        if response is None:
            return None, [], None
        capture = self.telemetry.config.capture_content
        stream = response.stream
        if stream is not None:
            seen: list[bytes] = getattr(stream, "seen", [])
            usage = stream.usage
            text = streamed_text(seen) if usage is None or capture else None
            if usage is None:
                # No usage chunk: the client hung up, the upstream broke off or ignored
                # include_usage. Charge what was generated.
                usage = estimate_usage(ctx.request, text or "")
            return usage, stream_finish_reasons(seen), text
        if response.status >= 400:
            return None, [], None
        body = response.json()
        usage = response.usage
        if usage is None and ctx.request.endpoint != "embeddings":
            usage = estimate_usage(ctx.request, response_text(body))
        elif usage is None:
            usage = estimate_usage(ctx.request, "")
        return usage, body_finish_reasons(body), response_text(body) if capture else None


def _cache_status(ctx: RequestContext, outcome: Outcome) -> str | None:
    """`hit` when a cache stage answered, `miss` when one looked and did not; None with no cache."""
    looked = False
    for record in ctx.records:
        if record.stage.endswith("cache"):
            if record.owns_remainder and outcome == "short_circuit":
                return "hit"
            looked = True
    return "miss" if looked else None


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def ledger_row(
    ctx: RequestContext, report: CostReport, *, status: int, outcome: Outcome, error_type: str | None
) -> dict[str, Any]:
    """One request as the ledger keeps it; money as decimal strings, never floats."""
    usage = report.usage or Usage()
    now = time.perf_counter()
    deployment = ctx.deployment
    return {
        "request_id": ctx.request_id,
        "ts": time.time(),
        "team": ctx.team,
        "key_id": ctx.principal.key_id if ctx.principal else None,
        "endpoint": ctx.request.endpoint,
        "wire": ctx.wire,
        "stream": ctx.request.stream,
        "requested_model": ctx.original.model,
        "served_model": ctx.served_model,
        "provider": deployment.provider if deployment is not None else None,
        "deployment": ctx.served_by,
        "status": status,
        "outcome": outcome,
        "cache": _cache_status(ctx, outcome),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_prompt_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "usage_estimated": usage.estimated,
        "cost_usd": _money(report.cost_usd),
        "baseline_usd": _money(report.baseline_usd),
        "saved_usd": _money(report.saved_usd),
        "saved_by_stage": {stage: str(saved) for stage, saved in report.saved_by_stage.items()},
        "latency_ms": round((now - ctx.started_at) * 1000, 3),
        "ttft_ms": None
        if ctx.first_token_at is None
        else round((ctx.first_token_at - ctx.started_at) * 1000, 3),
        "error": error_type,
    }
