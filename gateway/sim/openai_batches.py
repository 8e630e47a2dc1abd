"""OpenAI's Batch API on the simulator: a JSONL file of requests in, an output and an error file out.

The create call checks its own parameters (a 400) and the input file line by line, as
OpenAI does while `validating`: a bad file makes a batch that reads `failed`, with one entry
per bad line in `errors`. Every request is answered by `SimCore` exactly as its online
endpoint answers it. Requests cut off by expiry or a cancel land in the error file with
`batch_expired` / `batch_cancelled`, and count as `failed` in `request_counts`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.config import SimConfig
from gateway.errors import TollgateError
from gateway.sim.batches import (
    BatchBook,
    Clock,
    Conflict,
    NoSuchObject,
    Phase,
    SubmissionLog,
    Timeline,
    fails,
    page_after,
)
from gateway.sim.core import SimCore
from gateway.sim.files import OUTPUT_PURPOSE, FileStore
from gateway.sim.plan import random_id
from gateway.wire.batch_input import ENDPOINTS, Line, check_params, line_error, openai_validating, read_lines
from gateway.wire.paging import openai_list, page_limit

logger = logging.getLogger("gateway.sim")

_SERVER_ERROR = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
_CUT_OFF = {
    "expired": {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    },
    "cancelled": {
        "code": "batch_cancelled",
        "message": "This request was not executed because the batch was cancelled.",
    },
}


@dataclass(slots=True)
class OpenAIBatch:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    timeline: Timeline
    requests: list[Line]
    # What `validating` found; any entry makes the batch `failed`.
    errors: list[dict[str, Any]]
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: _no_counts())
    settled: bool = False


class OpenAIBatches(BatchBook[OpenAIBatch]):
    """`/v1/batches`: the batches of one simulator, newest last."""

    def __init__(
        self, settings: SimConfig, core: SimCore, files: FileStore, log: SubmissionLog, clock: Clock
    ) -> None:
        super().__init__(settings, core, log, clock)
        self.files = files

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        input_file_id, endpoint, window, metadata = check_params(body)
        requests: list[Line] = []
        source = self.files.find(input_file_id)
        if source is None:
            message = f"Cannot find file {input_file_id}, or organization does not have access to it."
            errors = [line_error("invalid_request", message, "file_id", None)]
        elif source.purpose != "batch":
            message = f"File {input_file_id} has purpose '{source.purpose}'; a batch needs purpose 'batch'."
            errors = [line_error("invalid_request", message, "file_id", None)]
        else:
            requests, errors = read_lines(source.content, endpoint, openai_validating)
        batch = OpenAIBatch(
            "batch_" + os.urandom(16).hex(),
            endpoint,
            input_file_id,
            window,
            metadata,
            Timeline.start(self.settings, self.clock()),
            [] if errors else requests,
            errors,
        )
        if not errors:
            batch.counts["total"] = len(requests)
            self.log.openai.update(r.custom_id for r in requests)
        self._batches[batch.id] = batch
        return self._render(batch, "validating")

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        return self._render(batch, self._observe(batch))

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        if batch.errors:
            raise Conflict("Cannot cancel a batch with status 'failed'.")
        now = self.clock()
        phase = batch.timeline.phase(now)
        if phase == "running":
            batch.timeline.cancel(now)
            return self._render(batch, "cancelling")
        if phase != "cancelling":
            self._settle(batch, phase)
        if phase in ("completed", "expired"):
            raise Conflict(f"Cannot cancel a batch with status '{phase}'.")
        return self._render(batch, phase)  # cancelling or cancelled already: asking again changes nothing

    def page(self, query: Mapping[str, str]) -> dict[str, Any]:
        limit = page_limit(query.get("limit"), 20, 100)
        page, has_more = page_after(self.newest_first(), lambda b: b.id, query.get("after"), limit)
        return openai_list([self._render(batch, self._observe(batch)) for batch in page], has_more)

    # -- state ----------------------------------------------------------------------------
    def _get(self, batch_id: str) -> OpenAIBatch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise NoSuchObject(f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def _observe(self, batch: OpenAIBatch) -> str:
        """The batch's status as of now, its results written if it has ended."""
        if batch.errors:
            return "failed"
        phase = batch.timeline.observe(self.clock())
        if phase == "running":
            return "in_progress"
        if phase != "cancelling":
            self._settle(batch, phase)
        return phase

    def _settle(self, batch: OpenAIBatch, phase: Phase) -> None:
        """Write the output and error files of a batch that has just ended."""
        if batch.settled:
            return
        batch.settled = True
        outputs: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for request in batch.requests:
            line_id = "batch_req_" + os.urandom(16).hex()
            if phase != "completed":
                failures.append({"id": line_id, "custom_id": request.custom_id, "response": None,
                                 "error": _CUT_OFF[phase]})  # fmt: skip
                continue
            status, body = self._answer(ENDPOINTS[batch.endpoint], request)
            response = {"status_code": status, "request_id": "req_" + random_id(length=32), "body": body}
            line = {"id": line_id, "custom_id": request.custom_id, "response": response, "error": None}
            (outputs if status == 200 else failures).append(line)
        batch.counts.update(completed=len(outputs), failed=len(failures))
        if outputs:
            batch.output_file_id = self._write(f"{batch.id}_output.jsonl", outputs)
        if failures:
            batch.error_file_id = self._write(f"{batch.id}_error.jsonl", failures)

    def _answer(self, kind: str, request: Line) -> tuple[int, dict[str, Any]]:
        """(status_code, body) exactly as the online endpoint would answer this request."""
        if fails(request.custom_id, request.body, self.settings.batch_failure_rate):
            return 500, _SERVER_ERROR
        try:
            answer = self.core.openai_answer(kind, request.body)
        except TollgateError as err:
            return err.status, err.to_openai()
        except Exception:
            logger.exception("simulator failed on batch request %s", request.custom_id)
            return 500, _SERVER_ERROR
        if answer.body is None:  # a stream: refused while validating, so never here
            return 500, _SERVER_ERROR
        return 200, answer.body

    def _write(self, filename: str, lines: list[dict[str, Any]]) -> str:
        content = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        return self.files.add(filename, OUTPUT_PURPOSE, content).id

    @staticmethod
    def _render(batch: OpenAIBatch, status: str) -> dict[str, Any]:
        """The Batch object, in `status` (validating, failed, in_progress, cancelling or an end)."""
        timeline = batch.timeline

        def at(moment: float | None) -> int | None:
            return int(moment) if moment is not None else None

        ended = status in ("completed", "expired", "cancelled")
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": status,
            "output_file_id": batch.output_file_id if ended else None,
            "error_file_id": batch.error_file_id if ended else None,
            "created_at": int(timeline.created_at),
            "in_progress_at": at(timeline.created_at) if status not in ("validating", "failed") else None,
            "expires_at": int(timeline.expires_at),
            "finalizing_at": at(timeline.finishes_at) if status == "completed" else None,
            "completed_at": at(timeline.finishes_at) if status == "completed" else None,
            "failed_at": at(timeline.created_at) if status == "failed" else None,
            "expired_at": at(timeline.expires_at) if status == "expired" else None,
            "cancelling_at": at(timeline.cancel_requested_at),
            "cancelled_at": at(timeline.cancelled_at),
            # While validating nothing is counted yet; a failed batch ran nothing.
            "request_counts": dict(batch.counts) if status != "validating" else _no_counts(),
            "metadata": batch.metadata,
        }


def _no_counts() -> dict[str, int]:
    return {"total": 0, "completed": 0, "failed": 0}
