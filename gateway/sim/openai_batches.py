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
from gateway.errors import InvalidRequest, TollgateError
from gateway.sim.batches import (
    Clock,
    Conflict,
    NoSuchObject,
    Phase,
    SubmissionLog,
    Timeline,
    fails,
    limit_param,
    page_after,
)
from gateway.sim.core import SimCore
from gateway.sim.files import OUTPUT_PURPOSE, FileStore
from gateway.sim.plan import random_id

logger = logging.getLogger("gateway.sim")

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}
_ENDPOINT_TITLES = {"chat": "Chat Completions", "completions": "Completions", "embeddings": "Embeddings"}
MAX_REQUESTS = 50_000
_KNOWN_PARAMS = frozenset(
    {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
)
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


@dataclass(slots=True, frozen=True)
class BatchRequest:
    custom_id: str
    body: dict[str, Any]


@dataclass(slots=True)
class OpenAIBatch:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    timeline: Timeline
    requests: list[BatchRequest]
    # What `validating` found; any entry makes the batch `failed`.
    errors: list[dict[str, Any]]
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: _no_counts())
    settled: bool = False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "an array"}
    return names.get(type(value), "an object")


def _error(code: str, message: str, param: str | None, line: int | None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def _required(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Invalid type for '{name}': expected a string, but got {_json_type(value)} instead.",
            param=name,
            code="invalid_type",
        )
    return value


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"Invalid type for 'metadata': expected an object, but got {_json_type(value)} instead.",
            param="metadata",
            code="invalid_type",
        )
    if len(value) > 16:
        raise InvalidRequest(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
            f"but got an object with {len(value)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > 64:
            raise InvalidRequest(
                f"Invalid 'metadata': key too long. Expected keys of at most 64 characters, got {key!r}.",
                param="metadata",
                code="invalid_value",
            )
        if not isinstance(item, str):
            raise InvalidRequest(
                f"Invalid type for 'metadata.{key}': expected a string, but got {_json_type(item)} instead.",
                param=f"metadata.{key}",
                code="invalid_type",
            )
        if len(item) > 512:
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length 512, "
                f"but got a string with length {len(item)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return dict(value)


def _check_line(raw: bytes, number: int, endpoint: str, seen: set[str]) -> BatchRequest | dict[str, Any]:
    """One input line: the request it holds, or the first thing wrong with it."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        item = None
    if not isinstance(item, dict):
        return _error("invalid_json_line", "This line is not parseable as valid JSON.", None, number)
    for name in ("custom_id", "method", "url", "body"):
        if item.get(name) is None:
            message = f"Missing required parameter: '{name}'."
            return _error("missing_required_parameter", message, name, number)
    custom_id, body = item["custom_id"], item["body"]
    if not isinstance(custom_id, str):
        message = f"Invalid type for 'custom_id': expected a string, but got {_json_type(custom_id)} instead."
        return _error("invalid_type", message, "custom_id", number)
    if item["method"] != "POST":
        message = "The method provided for this request is not supported. Only POST is supported."
        return _error("invalid_method", message, "method", number)
    if item["url"] != endpoint:
        message = "The URL provided for this request does not match the batch endpoint."
        return _error("invalid_url", message, "url", number)
    if not isinstance(body, dict):
        message = f"Invalid type for 'body': expected an object, but got {_json_type(body)} instead."
        return _error("invalid_type", message, "body", number)
    kind = ENDPOINTS[endpoint]
    if body.get("model") is None:
        return _error("invalid_request", "Model parameter is required.", "body.model", number)
    if kind == "chat" and body.get("messages") is None:
        return _error("invalid_request", "Messages parameter is required.", "body.messages", number)
    if body.get("stream") is True:
        message = f"{_ENDPOINT_TITLES[kind]}: Streaming is not supported in the Batch API."
        return _error("streaming_unsupported", message, "body.stream", number)
    if custom_id in seen:
        message = (
            "The custom_id for this request is a duplicate of another request. "
            "The custom_id parameter must be unique for each request in a batch."
        )
        return _error("duplicate_custom_id", message, "custom_id", number)
    seen.add(custom_id)
    return BatchRequest(custom_id, body)


def read_input(content: bytes, endpoint: str) -> tuple[list[BatchRequest], list[dict[str, Any]]]:
    """(the requests of a batch input file, the errors that fail the batch)."""
    lines = [(n, raw) for n, raw in enumerate(content.split(b"\n"), start=1) if raw.strip()]
    if not lines:
        message = (
            "The batch input file is empty. Please ensure that the batch input file contains at "
            "least one request."
        )
        return [], [_error("empty_file", message, None, None)]
    if len(lines) > MAX_REQUESTS:
        message = (
            f"The batch input file contains {len(lines)} requests; a batch may contain at most "
            f"{MAX_REQUESTS:,} requests."
        )
        return [], [_error("too_many_tasks", message, None, None)]
    requests: list[BatchRequest] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in lines:
        checked = _check_line(raw, number, endpoint, seen)
        if isinstance(checked, BatchRequest):
            requests.append(checked)
        else:
            errors.append(checked)
    return requests, errors


class OpenAIBatches:
    """`/v1/batches`: the batches of one simulator, newest last."""

    def __init__(
        self, settings: SimConfig, core: SimCore, files: FileStore, log: SubmissionLog, clock: Clock
    ) -> None:
        self.settings = settings
        self.core = core
        self.files = files
        self.log = log
        self.clock = clock
        self._batches: dict[str, OpenAIBatch] = {}

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        for name in body:
            if name not in _KNOWN_PARAMS:
                raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
        input_file_id = _required(body, "input_file_id")
        endpoint = _required(body, "endpoint")
        if endpoint not in ENDPOINTS:
            supported = "'/v1/chat/completions', '/v1/completions', and '/v1/embeddings'"
            raise InvalidRequest(
                f"Invalid value: '{endpoint}'. Supported values are: {supported}.",
                param="endpoint",
                code="invalid_value",
            )
        window = _required(body, "completion_window")
        if window != "24h":
            raise InvalidRequest(
                f"Invalid value: '{window}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        metadata = _metadata(body.get("metadata"))
        requests: list[BatchRequest] = []
        source = self.files.find(input_file_id)
        if source is None:
            message = f"Cannot find file {input_file_id}, or organization does not have access to it."
            errors = [_error("invalid_request", message, "file_id", None)]
        elif source.purpose != "batch":
            message = f"File {input_file_id} has purpose '{source.purpose}'; a batch needs purpose 'batch'."
            errors = [_error("invalid_request", message, "file_id", None)]
        else:
            requests, errors = read_input(source.content, endpoint)
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
        limit = limit_param(query, 20, 100)
        newest_first = list(reversed(self._batches.values()))
        page, has_more = page_after(newest_first, lambda b: b.id, query.get("after"), limit)
        data = [self._render(batch, self._observe(batch)) for batch in page]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }

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

    def _answer(self, kind: str, request: BatchRequest) -> tuple[int, dict[str, Any]]:
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
