"""The batch path as the rest of the gateway sees it: jobs, the worker, and what a client may
ask of a deferred request (`GET /v1/deferred/{id}`, `POST /v1/deferred/{id}/cancel`)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.accounting.prices import PriceTable
from gateway.accounting.settle import Accountant
from gateway.batch.client_batches import ClientBatches
from gateway.batch.finish import Finisher
from gateway.batch.jobs import Job, Jobs
from gateway.batch.worker import BATCH_PREFIX, BatchWorker
from gateway.config import DeferStageConfig
from gateway.dispatch import Dispatcher
from gateway.errors import InvalidRequest, NotFound, TollgateError
from gateway.pipeline import Principal
from gateway.store.base import Store
from gateway.wire import anthropic


class Deferred:
    def __init__(
        self,
        config: DeferStageConfig,
        store: Store,
        dispatcher: Dispatcher,
        accountant: Accountant,
        prices: PriceTable,
    ) -> None:
        self.store = store
        self.jobs = Jobs(store)
        self.finisher = Finisher(self.jobs, store, accountant, dispatcher, prices)
        self.worker = BatchWorker(config, store, self.jobs, self.finisher)
        # Clients' batch files (`/v1/batches`), each line a request through the pipeline.
        self.client_batches = ClientBatches(
            config, store, self.jobs, accountant, lambda job_id: self.cancel(job_id, None)
        )

    async def start(self) -> None:
        await self.worker.start()
        await self.client_batches.start()

    async def aclose(self) -> None:
        await self.client_batches.aclose()
        await self.worker.aclose()

    async def lookup(self, job_id: str, principal: Principal | None) -> Job:
        """The job, for its own team (or the master key); anyone else is told it does not exist."""
        job = await self.jobs.get(job_id)
        if job is None or (principal is not None and not principal.is_master and principal.team != job.team):
            raise NotFound(f"No deferred request '{job_id}'.", param="id")
        return job

    async def progress(self, job: Job) -> str:
        """queued, batched, submitted, running_online, completed, cancelled."""
        if job.state == "done":
            return "completed"
        if job.state == "cancelled":
            return "cancelled"
        owner = await self.jobs.assignment(job.id)
        if owner is None:
            return "queued"
        if owner.startswith("ol_"):
            return "running_online"
        record = await self.store.get(BATCH_PREFIX + owner)
        if record is not None and orjson.loads(record)["state"] == "submitted":
            return "submitted"
        return "batched"

    async def cancel(self, job_id: str, principal: Principal | None) -> Job:
        """Cancel a job not yet sent to a provider; one already sent finishes as it is."""
        job = await self.lookup(job_id, principal)
        if job.state != "queued":
            return job
        if not await self.jobs.assign(job.id, "cancelled"):
            raise InvalidRequest(
                f"Deferred request '{job_id}' is already with the provider and can no longer be cancelled.",
                code="deferred_already_submitted",
            )
        await self.finisher.cancel(job)
        return job


def answer_body(job: Job) -> tuple[int, bytes]:
    """A finished job's answer, exactly as the online API would have sent it on the job's wire."""
    assert job.result is not None
    status: int = job.result["status"]
    body: dict[str, Any] = job.result["body"]
    if job.wire == "anthropic":
        if status < 400:
            return status, orjson.dumps(anthropic.chat_to_message(body, model=job.requested_model))
        error = body.get("error") or {}
        return status, TollgateError(str(error.get("message", "The upstream failed."))).anthropic_body()
    return status, orjson.dumps(body)
