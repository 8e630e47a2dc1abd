"""A deferred job's end: its answer kept, its cost counted once, its budget holds trued up.

The request is costed through the same `Accountant.settle` as an online one, under the job's
id (the request id its 202 carried): batch rates are the actual cost, the requested model
online the baseline, and the difference between the served model's online and batch
prices is the defer stage's saving.

Order matters for a process killed half way: the ledger row is spooled first (it survives
the kill, and a second copy under the same request id is shown once), then the job is saved
with its answer, then the budget holds are trued up behind a once-only marker (a kill in
between leaves the estimate charged: budgets err on the safe side).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

from gateway.accounting.costing import CostReport
from gateway.accounting.prices import PriceTable
from gateway.accounting.settle import Accountant
from gateway.batch.jobs import Job, Jobs, cost_figures
from gateway.config import Deployment
from gateway.dispatch import Dispatcher
from gateway.pipeline import Principal, Request, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.store.base import Store
from policies import usd_to_nano

log = logging.getLogger("tollgate.batch")

WEBHOOK_PREFIX = "batch:webhook:"


class Finisher:
    def __init__(
        self, jobs: Jobs, store: Store, accountant: Accountant, dispatcher: Dispatcher, prices: PriceTable
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.accountant = accountant
        self.dispatcher = dispatcher
        self.prices = prices

    def deployment(self, job: Job) -> Deployment | None:
        try:
            deployments = self.dispatcher.resolve(job.alias).entry.deployments
        except Exception:
            return None
        return deployments[job.deployment_index] if job.deployment_index < len(deployments) else None

    def context(self, job: Job) -> RequestContext:
        """The job as a request again: who asked, what, and what the stages did to it."""
        endpoint: Any = job.endpoint
        original = Request(endpoint=endpoint, model=job.requested_model, body=job.original_body)
        request = Request(endpoint=endpoint, model=job.model, body={**job.body, "model": job.model})
        ctx = RequestContext(
            request_id=job.id, original=original, request=request, wire=job.wire,
            principal=Principal(team=job.team, key_id=job.key_id or ""),
        )  # fmt: skip
        ctx.records = job.stage_records()
        # The request's latency is the whole wait, from the 202.
        ctx.started_at = time.perf_counter() - max(0.0, time.time() - job.created_at)
        return ctx

    async def finish(self, job: Job, status: int, body: dict[str, Any], *, via: str) -> None:
        """Keep the answer and cost it. `via`: `batch` (batch rates), `online` or `cache`."""
        ctx = self.context(job)
        response = ProviderResponse.from_json(body, status=status)
        if via != "cache":
            ctx.deployment = self.deployment(job)
            ctx.served_by = f"{job.alias}#{job.deployment_index}"
            ctx.served_model = str(body.get("model") or job.upstream_model)
        batch = via == "batch"
        if batch and status < 400:
            self._record_batch_saving(ctx, response)
        report = self.accountant.settle(
            ctx, response, status=status, outcome="ok" if status < 400 else "error", batch=batch
        )
        if job.state != "cancelled":
            job.state = "done"
        job.result = {"status": status, "body": body}
        job.served_via = via
        job.served_model = ctx.served_model
        job.finished_at = time.time()
        if report is not None:
            job.cost = cost_figures(report)
        if job.webhook and job.state == "done":
            await self.store.set(WEBHOOK_PREFIX + job.id, job.id.encode())
        await self.jobs.save(job)
        await self.settle_holds(job, report)

    async def cancel(self, job: Job) -> None:
        """The client gave up on the job before it was sent: nothing spent, holds given back."""
        job.state = "cancelled"
        job.finished_at = time.time()
        # Its ledger row: nothing spent, nothing saved, but the request is on record.
        self.accountant.settle(self.context(job), None, status=499, outcome="refused", error_type="cancelled")
        await self.jobs.save(job)
        await self.settle_holds(job, None)

    def _record_batch_saving(self, ctx: RequestContext, response: ProviderResponse) -> None:
        usage = response.usage
        if usage is None or ctx.served_model is None:
            return
        override = ctx.deployment.effective_price() if ctx.deployment is not None else None
        online = self.prices.cost(ctx.served_model, usage, override=override)
        batched = self.prices.cost(ctx.served_model, usage, override=override, batch=True)
        if online is not None and batched is not None and online > batched:
            ctx.record("defer", saved_usd=online - batched, detail={"via": "batch"})

    async def settle_holds(self, job: Job, report: CostReport | None) -> None:
        """Budget holds taken when the job was accepted, trued up to what it cost (or let go)."""
        if not job.holds or not await self.jobs.mark_holds_settled(job.id):
            return
        cost = None if report is None else report.cost_usd
        tokens = 0 if report is None or report.usage is None else report.usage.total_tokens
        charges: list[tuple[str, int, float]] = []
        for key, kind, amount, ttl_s in job.holds:
            if kind == "usd":
                if report is not None and cost is None:
                    continue  # an unknown price keeps the estimate charged
                spent = usd_to_nano(cost if cost is not None else Decimal(0))
                delta = spent - amount
            else:
                delta = tokens - amount
            if delta:
                charges.append((key, delta, ttl_s))
        if charges:
            try:
                await self.store.adjust(charges)
            except Exception:
                log.exception("a deferred job's budget holds could not be trued up", extra={"job": job.id})
