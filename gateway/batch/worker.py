"""The batch worker: every gateway instance runs one; the store keeps them from doing a
piece of work twice.

Each tick it
1. accumulates: a group's queued jobs (same provider deployment, upstream model and
   endpoint) go out as one provider batch once the oldest has waited `window_s`, the group
   holds `max_requests`, or a deadline draws near; a job whose deadline is within
   `online_margin_s` is sent online instead;
2. submits: the batch is written down (`batch:batch:<id>`, state `preparing`) with the jobs
   it may take, each job is claimed for it (`assign`, atomic), and only then sent to the
   provider, its id tagged with ours so a restart finds it rather than sending it again;
3. polls submitted batches with backoff, and once one ends downloads its results, maps them
   back by `custom_id`, and finishes each job (gateway.batch.finish); a job the provider did
   not answer (the batch expired or was cancelled) is queued again, or sent online when its
   deadline is too close for another batch;
4. calls the webhooks of finished jobs.

A group or a batch is worked on by one instance at a time, under a lease in the store
(`set_if_absent` with a TTL); an instance that dies lets its leases lapse and another (or
its own restart) picks the work up from the state written before the death.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from typing import Any

import aiohttp
import orjson

from gateway.batch.finish import WEBHOOK_PREFIX, Finisher
from gateway.batch.jobs import PREFIX, Job, Jobs, Queued
from gateway.batch.leases import Leases, every
from gateway.batch.upstream import LIMITS, BatchAPI, NotYet, api_for
from gateway.config import DeferStageConfig
from gateway.errors import TollgateError
from gateway.providers.base import ProviderResponse
from gateway.store.base import Store

log = logging.getLogger("tollgate.batch")

BATCH_PREFIX = f"{PREFIX}batch:"
# The batches not yet done, by id: what each tick looks at (done ones are kept a week, unread).
ACTIVE_PREFIX = f"{PREFIX}active:"
_LEASE_PREFIX = f"{PREFIX}lease:"
_DONE_TTL_S = 7 * 86400.0
# A queue entry whose job is still missing this long after it was queued lost it to a kill.
_ORPHAN_AFTER_S = 60.0
# Testing knob: the worker kills its own process (SIGKILL) at this phase, once, so tests can
# prove a restart loses and repeats nothing: accumulated, submitted, polling, downloaded.
CRASH_ENV = "TOLLGATE_BATCH_CRASH_AT"


def _crash_point(phase: str) -> None:
    if os.environ.get(CRASH_ENV) == phase:
        log.warning("crashing on purpose", extra={"phase": phase})
        os.kill(os.getpid(), signal.SIGKILL)


class BatchWorker:
    def __init__(self, config: DeferStageConfig, store: Store, jobs: Jobs, finisher: Finisher) -> None:
        self.config = config
        self.store = store
        self.jobs = jobs
        self.finisher = finisher
        self.leases = Leases(store, _LEASE_PREFIX, config.lease_ttl_s)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        self._task = asyncio.get_running_loop().create_task(
            every(self.config.tick_s, self._wake, self.tick, log)
        )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def tick(self) -> None:
        for group, info in await self.jobs.groups():
            await self.leases.run(f"group:{group}", self._accumulate(group, info))
        for key, _ in await self.store.scan(ACTIVE_PREFIX, limit=10_000):
            batch_id = key.removeprefix(ACTIVE_PREFIX)
            await self.leases.run(f"batch:{batch_id}", self._advance_stored(batch_id))
        await self._webhooks()

    # --- 1. accumulate ----------------------------------------------------------------------

    async def _accumulate(self, group: str, info: dict[str, Any]) -> None:
        config = self.config
        cap = min(config.max_requests, LIMITS[info["kind"]][0])
        queued = await self.jobs.queued(group, limit=cap)
        if not queued:
            return
        now = time.time()
        urgent = [q for q in queued if q.deadline - now <= config.online_margin_s]
        waiting = [q for q in queued if q.deadline - now > config.online_margin_s]
        due = bool(waiting) and (
            len(queued) >= cap
            or now - min(q.created_at for q in waiting) >= config.window_s
            or min(q.deadline for q in waiting) - now <= config.online_margin_s + config.window_s
        )
        if urgent:
            await self._start_batch(group, info, await self._ready(urgent), online=True)
        if not due:
            return
        # Within the provider's size limit, in arrival order.
        limit = min(config.max_bytes, LIMITS[info["kind"]][1])
        size, taken = 0, list[tuple[str, Job]]()
        for queue_key, job in await self._ready(waiting):
            size += len(orjson.dumps(job.body)) + 200
            if taken and size > limit:
                break
            taken.append((queue_key, job))
        await self._start_batch(group, info, taken, online=False)

    async def _ready(self, queued: list[Queued]) -> list[tuple[str, Job]]:
        """The queued jobs still waiting; entries of jobs finished, cancelled or claimed go."""
        ready: list[tuple[str, Job]] = []
        now = time.time()
        for entry in queued:
            job = await self.jobs.get(entry.job_id)
            if job is None and now - entry.created_at < _ORPHAN_AFTER_S:
                continue  # its job is being written right now
            if job is None or job.state != "queued" or await self.jobs.assignment(entry.job_id) is not None:
                await self.store.delete(entry.key)
                continue
            ready.append((entry.key, job))
        return ready

    async def _start_batch(
        self, group: str, info: dict[str, Any], jobs: list[tuple[str, Job]], *, online: bool
    ) -> None:
        if not jobs:
            return
        batch_id = ("ol_" if online else "lb_") + secrets.token_hex(8)
        record: dict[str, Any] = {
            "id": batch_id, "group": group, "info": info, "online": online, "state": "preparing",
            "candidates": [job.id for _, job in jobs], "jobs": [], "created_at": time.time(),
            "provider_id": None, "polls": 0, "next_poll_at": 0.0,
        }  # fmt: skip
        # Leased before it is written: no other instance may pick it up half sent.
        await self.leases.run(f"batch:{batch_id}", self._begin(record, [key for key, _ in jobs]))

    async def _begin(self, record: dict[str, Any], queue_keys: list[str]) -> None:
        await self._save(record)
        await self._claim(record)
        for queue_key in queue_keys:
            await self.store.delete(queue_key)
        await self._advance(record)

    async def _claim(self, record: dict[str, Any]) -> None:
        """Each candidate job becomes this batch's if nobody else claimed it first."""
        record["jobs"] = [
            job_id for job_id in record["candidates"] if await self.jobs.assign(job_id, record["id"])
        ]
        record["state"] = "claimed"
        await self._save(record)
        _crash_point("accumulated")

    # --- 2. submit, 3. poll and finish -------------------------------------------------------

    async def _advance_stored(self, batch_id: str) -> None:
        """Advance a batch as the store has it now (read under its lease)."""
        data = await self.store.get(BATCH_PREFIX + batch_id)
        if data is None:
            await self.store.delete(ACTIVE_PREFIX + batch_id)
            return
        record = orjson.loads(data)
        if record["state"] == "done":
            await self.store.delete(ACTIVE_PREFIX + batch_id)
            return
        await self._advance(record)

    async def _advance(self, record: dict[str, Any]) -> None:
        state = record["state"]
        if state == "preparing":
            await self._claim(record)
            state = "claimed"
        if record["online"]:
            await self._run_online(record)
            return
        api = self._api(record)
        if state in ("claimed", "sending"):
            await self._submit(record, api)
        elif state == "submitted":
            await self._poll(record, api)

    def _api(self, record: dict[str, Any]) -> BatchAPI:
        info = record["info"]
        deployments = self.finisher.dispatcher.resolve(info["alias"]).entry.deployments
        assert self._session is not None
        return api_for(deployments[info["index"]], self._session)

    async def _live_jobs(self, record: dict[str, Any]) -> list[Job]:
        found = []
        for job_id in record["jobs"]:
            job = await self.jobs.get(job_id)
            if job is not None and job.result is None and job.state == "queued":
                found.append(job)
        return found

    async def _submit(self, record: dict[str, Any], api: BatchAPI) -> None:
        provider_id = None
        if record["state"] == "sending":
            # We may have sent it before dying: find it by our id before sending again.
            try:
                provider_id = await api.find(record["id"], record["created_at"], record["jobs"])
            except NotYet:
                return
        if provider_id is None:
            jobs = await self._live_jobs(record)
            if not jobs:
                record["state"] = "done"
                await self._save(record)
                return
            record["state"] = "sending"
            lines = [(job.id, job.body) for job in jobs]
            # When every job is this close to its deadline the batch is cancelled (they go online).
            record["latest_deadline"] = max(job.deadline for job in jobs)
            await self._save(record)
            provider_id = await api.submit(record["info"]["endpoint"], lines, record["id"])
            log.info("batch submitted", extra={"batch": record["id"], "provider_batch": provider_id,
                                               "requests": len(lines)})  # fmt: skip
        _crash_point("submitted")
        record["provider_id"] = provider_id
        record["state"] = "submitted"
        record["next_poll_at"] = time.time() + self.config.poll_interval_s
        await self._save(record)

    async def _poll(self, record: dict[str, Any], api: BatchAPI) -> None:
        now = time.time()
        if now < record["next_poll_at"]:
            return
        polled = await api.poll(record["provider_id"])
        if not polled.ended:
            record["polls"] += 1
            delay = min(self.config.poll_max_s, self.config.poll_interval_s * 2 ** min(record["polls"], 16))
            record["next_poll_at"] = now + delay
            await self._cancel_if_overdue(record, api, now)
            await self._save(record)
            _crash_point("polling")
            return
        outcomes = {outcome.custom_id: outcome for outcome in await api.results(record["provider_id"])}
        for number, job_id in enumerate(record["jobs"]):
            job = await self.jobs.get(job_id)
            if job is None or (job.result is not None and job.cost is not None):
                continue  # finished before a restart
            outcome = outcomes.get(job_id)
            if outcome is not None and outcome.body is not None and outcome.status is not None:
                await self.finisher.finish(job, outcome.status, outcome.body, via="batch")
            elif job.state == "queued" and await self.jobs.assignment(job_id) == record["id"]:
                # Still this batch's to place (a restart may find it queued again already).
                await self._retry(job, record)
            if number == 0:
                _crash_point("downloaded")
        record["state"] = "done"
        record["provider_status"] = polled.status
        await self._save(record)
        log.info("batch finished", extra={"batch": record["id"], "status": polled.status})

    async def _cancel_if_overdue(self, record: dict[str, Any], api: BatchAPI, now: float) -> None:
        """Every job of the batch is near its deadline: cancel it, so they go online in time."""
        if record.get("cancel_sent"):
            return
        if record.get("latest_deadline", float("inf")) - now <= self.config.online_margin_s:
            await api.cancel(record["provider_id"])
            record["cancel_sent"] = True

    async def _retry(self, job: Job, record: dict[str, Any]) -> None:
        """No answer from the provider: another batch if the deadline allows, else online."""
        if job.deadline - time.time() > self.config.online_margin_s + self.config.window_s:
            log.info("deferred job queued again", extra={"job": job.id, "batch": record["id"]})
            await self.jobs.requeue(job)
        else:
            await self._online(job)

    async def _run_online(self, record: dict[str, Any]) -> None:
        for job in await self._live_jobs(record):
            await self._online(job)
        record["state"] = "done"
        await self._save(record)

    async def _online(self, job: Job) -> None:
        ctx = self.finisher.context(job)
        try:
            response: ProviderResponse = await self.finisher.dispatcher(ctx)
            status, body = response.status, response.json()
        except TollgateError as err:
            status, body = err.status, orjson.loads(err.openai_body())
        await self.finisher.finish(job, status, body, via="online")

    async def _save(self, record: dict[str, Any]) -> None:
        done = record["state"] == "done"
        if not done and record["state"] == "preparing":
            await self.store.set(ACTIVE_PREFIX + record["id"], b"")
        await self.store.set(
            BATCH_PREFIX + record["id"], orjson.dumps(record), ttl_s=_DONE_TTL_S if done else None
        )
        if done:
            await self.store.delete(ACTIVE_PREFIX + record["id"])

    # --- 4. webhooks ------------------------------------------------------------------------

    async def _webhooks(self) -> None:
        for key, _ in await self.store.scan(WEBHOOK_PREFIX, limit=100):
            job_id = key.removeprefix(WEBHOOK_PREFIX)
            if not await self.store.set_if_absent(f"{_LEASE_PREFIX}hook:{job_id}", b"1", ttl_s=60):
                continue
            job = await self.jobs.get(job_id)
            if job is None or not job.webhook or await self._post(job):
                await self.store.delete(key)

    async def _post(self, job: Job) -> bool:
        assert self._session is not None and job.webhook is not None and job.result is not None
        payload = {"id": job.id, "object": "deferred_request", "status": "completed",
                   "response": {"status_code": job.result["status"], "body": job.result["body"]},
                   "cost": job.cost}  # fmt: skip
        try:
            async with self._session.post(
                job.webhook,
                data=orjson.dumps(payload),
                headers={"content-type": "application/json", "webhook-id": job.id},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                return resp.status < 300
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning(
                "deferred job webhook failed; retrying later", extra={"job": job.id, "error": str(err)}
            )
            return False
