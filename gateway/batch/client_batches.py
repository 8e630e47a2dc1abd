"""Clients' batches (`/v1/batches`): a file of requests in, each line run through the pipeline,
an output and an error file out.

A batch is written down before its creator hears of it, then worked on in the background by
whichever instance holds its lease (`set_if_absent` with a TTL, renewed as it goes):
1. dispatch: every line runs through the pipeline (gateway.batch.client_lines); the caches
   answer what they can at once, the defer stage keeps the rest as jobs for provider batches.
   A line whose job exists was run already, so an instance killed half way resumes where it
   stopped, sending no line twice;
2. cancel: once asked, every job not yet taken by a provider batch is cancelled; jobs already
   with a provider finish as they are;
3. finalize: once every line has ended, the output and error files are written and the batch
   ends (completed or cancelled).
Each instance sweeps the batches with work left (`cpending:`) at start and every few seconds,
so one that died is taken over once its lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from gateway.accounting.settle import Accountant
from gateway.batch.client_files import (
    OUTPUT_PURPOSE,
    OUTPUT_TTL_S,
    ClientFiles,
    derived_file_id,
    expiry_seconds,
    newest_first_key,
    team_of,
    visible,
)
from gateway.batch.client_lines import LineRunner
from gateway.batch.client_record import (
    CANCEL_PREFIX,
    CBATCH_PREFIX,
    ENDED_TTL_S,
    INDEX_PREFIX,
    LEASE_PREFIX,
    PENDING_PREFIX,
    ClientBatch,
    new_batch_id,
)
from gateway.batch.client_results import Progress, progress, result_lines
from gateway.batch.jobs import Jobs
from gateway.batch.leases import LeaseLost, Leases, every
from gateway.config import DeferStageConfig
from gateway.errors import InvalidRequest, NotFound, TollgateError
from gateway.pipeline import CallNext, Principal
from gateway.store.base import Store
from gateway.wire.batch_input import (
    COMPLETION_WINDOWS,
    Line,
    check_params,
    line_error,
    model_named,
    read_lines,
)

log = logging.getLogger("tollgate.batch")

# Lines run through the pipeline at once (a line served online waits for its provider), and
# between two lease renewals.
_CONCURRENCY = 16
_CHUNK = 64
# A batch whose lines have all been sent is looked at again at most this often by the sweep
# (its client's polls look at it too).
_RECHECK_S = 5.0
# Input files past this size are read off the event loop.
_LARGE_INPUT = 1024 * 1024


class ClientBatches:
    def __init__(
        self,
        config: DeferStageConfig,
        store: Store,
        jobs: Jobs,
        accountant: Accountant,
        cancel_job: Callable[[str], Awaitable[object]],
    ) -> None:
        self.config = config
        self.store = store
        self.files = ClientFiles(store)
        self.runner = LineRunner(jobs, accountant)
        self.cancel_job = cancel_job
        self.leases = Leases(store, LEASE_PREFIX, config.lease_ttl_s)
        self._sweep_s = min(2.0, max(config.tick_s, 0.1))
        self._loop: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._working: set[str] = set()
        self._checked: dict[str, float] = {}
        self._wake = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def bind(self, chain: CallNext) -> None:
        """The composed pipeline that batch lines run through; work starts once it is known."""
        if self.runner.chain is None:
            self.runner.chain = chain
            self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop().create_task(every(self._sweep_s, self._wake, self.sweep, log))

    async def aclose(self) -> None:
        tasks = [*self._tasks, *([self._loop] if self._loop is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sweep(self) -> None:
        """Start work on every batch with work left that nobody here is working on."""
        if self.runner.chain is None:
            return
        now = time.monotonic()
        pending = [value.decode() for _key, value in await self.store.scan(PENDING_PREFIX, limit=10_000)]
        # Forget batches that ended (here or on another instance).
        self._checked = {batch_id: at for batch_id, at in self._checked.items() if batch_id in pending}
        for batch_id in pending:
            if batch_id in self._working or now - self._checked.get(batch_id, -_RECHECK_S) < _RECHECK_S:
                continue
            self._checked[batch_id] = now
            self._spawn(self.work(batch_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the client's calls --------------------------------------------------------------------

    async def create(self, principal: Principal | None, body: Mapping[str, Any]) -> ClientBatch:
        """Check and keep a new batch; a bad input file makes a batch that reads `failed`."""
        input_file_id, endpoint, window, metadata = check_params(body)
        output_ttl_s = _output_expiry(body.get("output_expires_after"))
        now = time.time()
        batch = ClientBatch(
            id=new_batch_id(), team=team_of(principal),
            key_id=principal.key_id if principal is not None else None,
            is_master=principal is not None and principal.is_master, endpoint=endpoint,
            input_file_id=input_file_id, completion_window=window, metadata=metadata,
            created_at=now, expires_at=now + COMPLETION_WINDOWS[window], status="in_progress",
            output_ttl_s=output_ttl_s,
        )  # fmt: skip
        lines, errors = await self._input(batch, principal)
        if errors:
            batch.status, batch.errors, batch.failed_at = "failed", errors, now
        else:
            batch.total, batch.model, batch.in_progress_at = len(lines), str(lines[0].body["model"]), now
            batch.counts = {"total": len(lines), "completed": 0, "failed": 0}
        await self._save(batch)
        await self.store.set(newest_first_key(INDEX_PREFIX, batch.team, now, batch.id), batch.id.encode())
        if not errors:
            await self.store.set(PENDING_PREFIX + batch.id, batch.id.encode())
            if self.runner.chain is not None:
                self._spawn(self.work(batch.id))
        log.info(
            "client batch created", extra={"batch": batch.id, "lines": batch.total, "status": batch.status}
        )
        return batch

    async def _input(
        self, batch: ClientBatch, principal: Principal | None
    ) -> tuple[list[Line], list[dict[str, Any]]]:
        file = await self.files.find(batch.input_file_id)
        content = await self.files.content(batch.input_file_id) if file is not None else None
        if file is None or content is None or not visible(file.team, principal):
            message = f"Cannot find file {batch.input_file_id}, or organization does not have access to it."
            return [], [line_error("invalid_request", message, "input_file_id", None)]
        if file.purpose != "batch":
            message = (
                f"File {batch.input_file_id} has purpose '{file.purpose}'; a batch needs purpose 'batch'."
            )
            return [], [line_error("invalid_request", message, "input_file_id", None)]
        return await _read(content, batch.endpoint)

    async def get(self, batch_id: str, principal: Principal | None) -> ClientBatch:
        """The batch, for its own team; anyone else is told it does not exist."""
        batch = await self._load(batch_id)
        if batch is None or not visible(batch.team, principal):
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")
        return batch

    async def view(self, batch: ClientBatch) -> dict[str, Any]:
        """The Batch object as of now; a batch whose lines have all ended is finalized here."""
        if batch.ended:
            return batch.to_json()
        cancelled_at = await self._cancelled_at(batch.id)
        state = await progress(self.store, batch, cancelling=cancelled_at is not None)
        status = "cancelling" if cancelled_at is not None else "in_progress"
        if state.finished and not state.queued:
            await self.work(batch.id)
            fresh = await self._load(batch.id)
            if fresh is not None and fresh.ended:
                return fresh.to_json()
            status = "finalizing"  # another instance is finishing it
        batch.cancelling_at = cancelled_at
        return batch.to_json(status=status, counts=state.counts)

    async def cancel(self, batch_id: str, principal: Principal | None) -> dict[str, Any]:
        batch = await self.get(batch_id, principal)
        if batch.ended:
            if batch.status == "cancelled":
                return batch.to_json()
            raise InvalidRequest(
                f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id", code="invalid_state"
            )
        await self.store.set_if_absent(CANCEL_PREFIX + batch.id, str(time.time()).encode())
        self._checked.pop(batch.id, None)
        self._spawn(self.work(batch.id))
        log.info("client batch cancel asked", extra={"batch": batch.id})
        return await self.view(batch)

    async def page(
        self, principal: Principal | None, *, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of the team's batches, newest first, and whether more follow."""
        found = await self.store.scan(f"{INDEX_PREFIX}{team_of(principal)}:", limit=100_000)
        ids = [value.decode() for _, value in found]
        start = 0
        if after:
            if after not in ids:
                raise NotFound(f"No batch found with id '{after}'.", param="after", code="batch_not_found")
            start = ids.index(after) + 1
        views = [await self.view(batch) for batch_id in ids[start : start + limit]
                 if (batch := await self._load(batch_id)) is not None]  # fmt: skip
        return views, start + limit < len(ids)

    async def input_in_use(self, file_id: str, *, besides: str | None = None) -> bool:
        """Whether a batch still to run all its lines reads them from this file."""
        for _key, value in await self.store.scan(PENDING_PREFIX, limit=10_000):
            batch = await self._load(value.decode())
            if batch is not None and batch.id != besides and batch.input_file_id == file_id:
                return True
        return False

    # --- the work, under the batch's lease -----------------------------------------------------

    async def work(self, batch_id: str) -> None:
        """Take the batch a step on (send lines, cancel, finalize), if no one else is."""
        if batch_id in self._working or self.runner.chain is None:
            return
        self._working.add(batch_id)
        try:
            await self.leases.run(batch_id, self._step(batch_id))
        except LeaseLost:
            log.warning("another instance took over a client batch", extra={"batch": batch_id})
        except Exception:
            log.exception("client batch work failed; trying again later", extra={"batch": batch_id})
        finally:
            self._working.discard(batch_id)

    async def _step(self, batch_id: str) -> None:
        batch = await self._load(batch_id)
        if batch is None or batch.ended:
            await self.store.delete(PENDING_PREFIX + batch_id)
            return
        if not batch.dispatched:
            await self._dispatch(batch)
        cancelled_at = await self._cancelled_at(batch.id)
        state = await progress(self.store, batch, cancelling=cancelled_at is not None)
        if state.queued:
            for job_id in state.queued:
                with contextlib.suppress(TollgateError):  # already with a provider: it finishes
                    await self.cancel_job(job_id)
            state = await progress(self.store, batch, cancelling=True)
        if state.finished:
            await self._finalize(batch, state, cancelled_at)

    async def _dispatch(self, batch: ClientBatch) -> None:
        content = await self.files.content(batch.input_file_id)
        lines = (await _read(content, batch.endpoint))[0] if content is not None else []
        if len(lines) != batch.total:
            log.error("a client batch lost its input file", extra={"batch": batch.id})
        found = (await progress(self.store, batch, cancelling=False)).jobs
        done = set(found)
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def run(line: Line) -> None:
            async with limit:
                await self.runner.run(batch, line)

        todo = [line for line in lines if line.index not in done]
        for start in range(0, len(todo), _CHUNK):
            if await self._cancelled_at(batch.id) is not None:
                break  # the lines not run yet end as cancelled
            await self.leases.check(batch.id)
            # Every line of the chunk ends before a failure stops the rest: none is left running
            # while another attempt starts over.
            outcomes = await asyncio.gather(
                *(run(line) for line in todo[start : start + _CHUNK]), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        batch.dispatched = True
        await self._save(batch)
        log.info("client batch lines sent", extra={"batch": batch.id, "lines": len(todo)})

    async def _finalize(self, batch: ClientBatch, state: Progress, cancelled_at: float | None) -> None:
        custom_ids = None
        if len(state.jobs) < batch.total:  # lines a cancel stopped: their custom_ids are in the input
            content = await self.files.content(batch.input_file_id)
            if content is not None:
                custom_ids = [line.custom_id for line in (await _read(content, batch.endpoint))[0]]
        outputs, errors, usage = result_lines(batch, state.jobs, custom_ids)
        now = time.time()
        ttl = batch.output_ttl_s or OUTPUT_TTL_S
        batch.finalizing_at = now
        for kind, lines in (("output", outputs), ("error", errors)):
            if not lines:
                continue
            file = await self.files.add(
                batch.team, f"{batch.id}_{kind}.jsonl", OUTPUT_PURPOSE, b"\n".join(lines) + b"\n",
                ttl_s=ttl, file_id=derived_file_id(batch.id, kind),
            )  # fmt: skip
            if kind == "output":
                batch.output_file_id = file.id
            else:
                batch.error_file_id = file.id
        if cancelled_at is not None:
            batch.status, batch.cancelling_at, batch.cancelled_at = "cancelled", cancelled_at, now
        else:
            batch.status, batch.completed_at = "completed", now
        batch.counts, batch.usage = state.counts, usage
        await self._save(batch)
        # Listed as long as it is kept.
        await self.store.set(
            newest_first_key(INDEX_PREFIX, batch.team, batch.created_at, batch.id), batch.id.encode(),
            ttl_s=ENDED_TTL_S,
        )  # fmt: skip
        await self.store.delete(PENDING_PREFIX + batch.id)
        await self.store.delete(CANCEL_PREFIX + batch.id)
        if await self.files.find(batch.input_file_id) is None and not await self.input_in_use(
            batch.input_file_id
        ):
            await self.files.drop_content(batch.input_file_id)  # the client deleted it while it ran
        self._checked.pop(batch.id, None)
        log.info("client batch ended", extra={"batch": batch.id, "status": batch.status, **state.counts})

    # --- the store ---------------------------------------------------------------------------

    async def _load(self, batch_id: str) -> ClientBatch | None:
        raw = await self.store.get(CBATCH_PREFIX + batch_id)
        return None if raw is None else ClientBatch.loads(raw)

    async def _save(self, batch: ClientBatch) -> None:
        ttl = ENDED_TTL_S if batch.ended else None
        await self.store.set(CBATCH_PREFIX + batch.id, batch.dumps(), ttl_s=ttl)

    async def _cancelled_at(self, batch_id: str) -> float | None:
        raw = await self.store.get(CANCEL_PREFIX + batch_id)
        return None if raw is None else float(raw)


async def _read(content: bytes, endpoint: str) -> tuple[list[Line], list[dict[str, Any]]]:
    if len(content) > _LARGE_INPUT:
        return await asyncio.to_thread(read_lines, content, endpoint, model_named)
    return read_lines(content, endpoint, model_named)


def _output_expiry(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(
            "Invalid type for 'output_expires_after': expected an object.",
            param="output_expires_after",
            code="invalid_type",
        )
    return expiry_seconds(value.get("anchor"), value.get("seconds"), param="output_expires_after")
