"""One line of a client's batch file, run through the whole pipeline as a request of its own.

The line runs as the key that created the batch (the auth stage trusts a principal already
set), under the request id `<batch id>_<line>`, with a deferral to the batch's expiry. So the
caches answer what they can, the policy checks budgets and model lists, and the defer stage
keeps what is left as a job for a provider batch (a 202). Whatever the pipeline answers at
once (a cache hit, an error, a model without a batch API served online) is costed here, once,
and kept as a finished job, so the batch's results read every line the same way.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import orjson

from gateway.accounting.costing import CostReport, Outcome
from gateway.accounting.settle import Accountant
from gateway.batch.client_record import ClientBatch
from gateway.batch.jobs import Deferral, Job, Jobs, cost_figures, dump_records
from gateway.errors import InternalError, ServiceUnavailable, TollgateError
from gateway.pipeline import CallNext, Principal, Request, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.store.base import StoreUnavailable
from gateway.wire.batch_input import ENDPOINTS, Line
from gateway.wire.openai import validate

log = logging.getLogger("tollgate.batch")

DEFER_REASON = "batch file"


class LineRunner:
    def __init__(self, jobs: Jobs, accountant: Accountant) -> None:
        self.jobs = jobs
        self.accountant = accountant
        # The composed pipeline; bound once the runtime has built it.
        self.chain: CallNext | None = None

    async def run(self, batch: ClientBatch, line: Line) -> None:
        """Send the line on its way; it has a job in the store when this returns."""
        assert self.chain is not None, "the pipeline is not bound yet"
        endpoint = ENDPOINTS[batch.endpoint]
        principal = Principal(team=batch.team, key_id=batch.key_id or "", is_master=batch.is_master)
        job_id = batch.job_id(line.index)
        try:
            request = validate(endpoint, line.body)
            failure: TollgateError | None = None
        except TollgateError as err:
            # Still a request on record: its ledger row says why it was refused.
            model = line.body.get("model")
            request = Request(
                endpoint=endpoint, model=model if isinstance(model, str) else "", body=line.body
            )
            failure = err
        user = line.body.get("user")
        ctx = RequestContext(
            request_id=job_id, original=request, request=request, wire="openai", principal=principal,
            end_user=user if isinstance(user, str) and user else None,
        )  # fmt: skip
        ctx.deferral = Deferral(
            deadline=batch.expires_at, reason=DEFER_REASON, owner=(batch.id, line.custom_id)
        )
        self.accountant.telemetry.start(ctx)
        if failure is not None:
            await self._refused(batch, line, ctx, failure)
            return
        try:
            response = await self.chain(ctx)
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                raise  # the line is run again on the next attempt: nothing was kept
            await self._refused(batch, line, ctx, _as_error(exc, job_id))
            return
        if response.status == 202:
            # The defer stage kept it as a job: costed when its batch result comes.
            self._settle(ctx, response, status=202, outcome="deferred")
            return
        if response.stream is not None:
            with contextlib.suppress(Exception):
                await response.stream.aclose()
            await self._refused(
                batch, line, ctx, InternalError("The pipeline answered a batch line with a stream.")
            )
            return
        body = response.json()
        outcome: Outcome = (
            "short_circuit" if ctx.deployment is None else "ok" if response.status < 400 else "error"
        )
        report = self._settle(ctx, response, status=response.status, outcome=outcome)
        via = "cache" if ctx.deployment is None and response.status < 400 else "online"
        await self.jobs.save(_answered(batch, line, ctx, response.status, body, report, via=via))

    async def _refused(self, batch: ClientBatch, line: Line, ctx: RequestContext, err: TollgateError) -> None:
        outcome: Outcome = "error" if ctx.deployment is not None or err.status >= 500 else "refused"
        report = self._settle(ctx, None, status=err.status, outcome=outcome, error_type=err.code or err.type)
        body: dict[str, Any] = orjson.loads(err.openai_body())
        await self.jobs.save(_answered(batch, line, ctx, err.status, body, report, via="gateway"))

    def _settle(
        self, ctx: RequestContext, response: ProviderResponse | None, *, status: int, outcome: Outcome,
        error_type: str | None = None,
    ) -> CostReport | None:  # fmt: skip
        try:
            return self.accountant.settle(
                ctx, response, status=status, outcome=outcome, error_type=error_type
            )
        except Exception:
            log.exception("failed to cost a batch line", extra={"request_id": ctx.request_id})
            return None


def _as_error(exc: Exception, request_id: str) -> TollgateError:
    if isinstance(exc, TollgateError):
        return exc
    log.exception("a batch line failed in the pipeline", extra={"request_id": request_id})
    if isinstance(exc, StoreUnavailable):
        return ServiceUnavailable("The gateway's store is unavailable.")
    return InternalError("The gateway failed to handle this request.")


def _answered(
    batch: ClientBatch, line: Line, ctx: RequestContext, status: int, body: dict[str, Any],
    report: CostReport | None, *, via: str,
) -> Job:  # fmt: skip
    """A finished job for a line the pipeline answered at once."""
    cost = None if report is None else cost_figures(report)
    now = time.time()
    return Job(
        id=ctx.request_id, team=batch.team, key_id=batch.key_id, wire="openai",
        endpoint=ENDPOINTS[batch.endpoint], requested_model=ctx.original.model,
        original_body=dict(ctx.original.body), body=dict(ctx.request.body), model=ctx.request.model,
        alias="", deployment_index=0, upstream_model=ctx.served_model or ctx.request.model, group="",
        deadline=batch.expires_at, reason=DEFER_REASON, created_at=now, owner=(batch.id, line.custom_id),
        records=dump_records(ctx.records), state="done", result={"status": status, "body": body},
        served_via=via, served_model=ctx.served_model, cost=cost, finished_at=now,
    )  # fmt: skip
