"""HTTP routes of the batch path: a deferred request's status and answer, its cancellation.

`GET /v1/deferred/{id}` answers 202 with the job's status while it waits, and once done
exactly the response the online API would have given (status, body, cost headers) on the
wire it was asked on. The files and batches surface (`/v1/files`, `/v1/batches`) lives in
gateway.batch.openai_surface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.accounting.costing import usd_text
from gateway.batch.jobs import Job
from gateway.batch.service import Deferred, answer_body
from gateway.errors import Gone, NotFound
from gateway.pipeline import Principal
from gateway.stages.defer import status_body

if TYPE_CHECKING:
    from gateway.runtime import Runtime

PrincipalOf = Callable[["Runtime", Request], Awaitable[Principal | None]]


def deferred_routes(runtime: Callable[[], Runtime], principal_of: PrincipalOf) -> list[Route]:
    def service() -> Deferred:
        deferred = runtime().deferred
        if deferred is None:
            raise NotFound("Deferred requests are switched off on this gateway (stages.defer).")
        return deferred

    async def status(request: Request) -> Response:
        principal = await principal_of(runtime(), request)
        deferred = service()
        job = await deferred.lookup(request.path_params["job_id"], principal)
        return await _render(deferred, job)

    async def cancel(request: Request) -> Response:
        principal = await principal_of(runtime(), request)
        deferred = service()
        job = await deferred.cancel(request.path_params["job_id"], principal)
        return await _render(deferred, job)

    return [
        Route("/v1/deferred/{job_id}", status, methods=["GET"]),
        Route("/v1/deferred/{job_id}/cancel", cancel, methods=["POST"]),
    ]


async def _render(deferred: Deferred, job: Job) -> Response:
    headers = {"x-tollgate-request-id": job.id, "x-request-id": job.id}
    if job.state == "cancelled" and job.result is None:
        err = Gone(f"Deferred request '{job.id}' was cancelled before it was sent.", code="cancelled")
        return Response(
            err.openai_body(), status_code=err.status, media_type="application/json", headers=headers
        )
    if job.result is None:
        progress = await deferred.progress(job)
        headers["retry-after"] = "5"
        return Response(
            orjson.dumps(status_body(job, progress)),
            status_code=202,
            media_type="application/json",
            headers=headers,
        )
    status, body = answer_body(job)
    cost = job.cost or {}
    for name in ("cost_usd", "baseline_usd", "saved_usd"):
        headers[f"x-tollgate-{name.replace('_', '-')}"] = usd_text(
            None if cost.get(name) is None else Decimal(cost[name])
        )
    if job.served_model:
        headers["x-tollgate-model"] = job.served_model
    headers["x-tollgate-deferred"] = f"{job.served_via or 'batch'}"
    return Response(body, status_code=status, media_type="application/json", headers=headers)
