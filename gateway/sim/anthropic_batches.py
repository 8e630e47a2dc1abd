"""Anthropic's Message Batches API on the simulator: many Messages requests in one call.

The create call checks the envelope (`requests`, each `custom_id` and `params`) and refuses
the whole batch for a bad one, as the API does; a request whose `params` the Messages API
would refuse is not a refusal of the batch but an `errored` result. Each request is answered
by `SimCore.anthropic_answer`, the same as `POST /v1/messages`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.errors import InvalidRequest, TollgateError
from gateway.sim.batches import BatchBook, NoSuchObject, Phase, Timeline, fails, page_after, page_before
from gateway.sim.plan import random_id
from gateway.wire.paging import page_limit

logger = logging.getLogger("gateway.sim")

MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_API_ERROR = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
_NO_STREAM = {
    "type": "error",
    "error": {"type": "invalid_request_error", "message": "stream: Streaming is not supported in batches"},
}
# The result of every request cut off, by how its batch ended.
_CUT_OFF = {"cancelled": "canceled", "expired": "expired"}


@dataclass(slots=True)
class MessageBatch:
    id: str
    timeline: Timeline
    requests: list[tuple[str, dict[str, Any]]]  # (custom_id, params)
    results: list[dict[str, Any]] | None = None  # once ended


def _fail(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {message}", param=path)


def _requests(body: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The batch's (custom_id, params) pairs; a 400 in the API's words for a bad envelope."""
    for name in body:
        if name != "requests":
            raise _fail(name, "Extra inputs are not permitted")
    raw = body.get("requests")
    if raw is None:
        raise _fail("requests", "Field required")
    if not isinstance(raw, list):
        raise _fail("requests", "Input should be a valid list")
    if not raw:
        raise _fail("requests", "List should have at least 1 item after validation, not 0")
    if len(raw) > MAX_REQUESTS:
        raise _fail(
            "requests", f"List should have at most {MAX_REQUESTS} items after validation, not {len(raw)}"
        )
    requests: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _fail(f"requests.{i}", "Input should be a valid dictionary")
        custom_id, params = item.get("custom_id"), item.get("params")
        if custom_id is None:
            raise _fail(f"requests.{i}.custom_id", "Field required")
        if not isinstance(custom_id, str):
            raise _fail(f"requests.{i}.custom_id", "Input should be a valid string")
        if not _CUSTOM_ID.match(custom_id):
            raise _fail(f"requests.{i}.custom_id", f"String should match pattern '{_CUSTOM_ID.pattern}'")
        if params is None:
            raise _fail(f"requests.{i}.params", "Field required")
        if not isinstance(params, dict):
            raise _fail(f"requests.{i}.params", "Input should be a valid dictionary")
        for name in item:
            if name not in ("custom_id", "params"):
                raise _fail(f"requests.{i}.{name}", "Extra inputs are not permitted")
        if custom_id in seen:
            raise InvalidRequest(
                f"Duplicate custom_id '{custom_id}' in requests: each custom_id must be unique within a batch.",
                param=f"requests.{i}.custom_id",
            )
        seen.add(custom_id)
        requests.append((custom_id, params))
    return requests


def _timestamp(moment: float | None) -> str | None:
    """RFC 3339 with microseconds, as the API writes its times."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MessageBatches(BatchBook[MessageBatch]):
    """`/v1/messages/batches`: the message batches of one simulator, newest last."""

    def create(self, body: Mapping[str, Any], base_url: str) -> dict[str, Any]:
        requests = _requests(body)
        batch = MessageBatch(
            "msgbatch_01" + random_id(length=22), Timeline.start(self.settings, self.clock()), requests
        )
        self._batches[batch.id] = batch
        self.log.anthropic.update(custom_id for custom_id, _ in requests)
        # Just created: in progress, however short the delay.
        return self._render(batch, "running", base_url)

    def retrieve(self, batch_id: str, base_url: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        return self._render(batch, self._observe(batch), base_url)

    def cancel(self, batch_id: str, base_url: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        now = self.clock()
        phase = batch.timeline.phase(now)
        if phase == "running":
            batch.timeline.cancel(now)
            return self._render(batch, "cancelling", base_url)
        if phase != "cancelling":
            raise InvalidRequest(f"Message Batch {batch_id} has already ended and cannot be canceled.")
        return self._render(batch, phase, base_url)

    def delete(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        if self._observe(batch) in ("running", "cancelling"):
            raise InvalidRequest(
                f"Message Batch {batch_id} cannot be deleted while it is in progress; cancel it first."
            )
        del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> bytes:
        batch = self._get(batch_id)
        self._observe(batch)
        if batch.results is None:
            raise InvalidRequest(
                f"Message Batch {batch_id} has not ended yet; its results are available once "
                "processing_status is 'ended'."
            )
        return b"".join(orjson.dumps(line) + b"\n" for line in batch.results)

    def page(self, query: Mapping[str, str], base_url: str) -> dict[str, Any]:
        limit = page_limit(query.get("limit"), 20, 1000)
        newest_first = self.newest_first()
        before = query.get("before_id")
        if before:
            page, has_more = page_before(newest_first, lambda b: b.id, before, limit)
        else:
            page, has_more = page_after(newest_first, lambda b: b.id, query.get("after_id"), limit)
        data = [self._render(batch, self._observe(batch), base_url) for batch in page]
        return {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    # -- state ----------------------------------------------------------------------------
    def _get(self, batch_id: str) -> MessageBatch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise NoSuchObject(f"Message Batch {batch_id} not found.", param="message_batch_id")
        return batch

    def _observe(self, batch: MessageBatch) -> Phase:
        phase = batch.timeline.observe(self.clock())
        if phase not in ("running", "cancelling") and batch.results is None:
            batch.results = [
                {"custom_id": custom_id, "result": self._result(phase, custom_id, params)}
                for custom_id, params in batch.requests
            ]
        return phase

    def _result(self, phase: Phase, custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        if phase in _CUT_OFF:
            return {"type": _CUT_OFF[phase]}
        if fails(custom_id, params, self.settings.batch_failure_rate):
            return {"type": "errored", "error": _API_ERROR}
        if params.get("stream") is True:
            return {"type": "errored", "error": _NO_STREAM}
        try:
            answer = self.core.anthropic_answer(params)
        except TollgateError as err:
            return {"type": "errored", "error": err.to_anthropic()}
        except Exception:
            logger.exception("simulator failed on message batch request %s", custom_id)
            return {"type": "errored", "error": _API_ERROR}
        return {"type": "succeeded", "message": answer.body}

    @staticmethod
    def _render(batch: MessageBatch, phase: Phase, base_url: str) -> dict[str, Any]:
        timeline = batch.timeline
        ended = batch.results is not None and phase not in ("running", "cancelling")
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended and batch.results is not None:
            for line in batch.results:
                counts[line["result"]["type"]] += 1
        else:
            counts["processing"] = len(batch.requests)
        ended_at = {"completed": timeline.finishes_at, "expired": timeline.expires_at}.get(
            phase, timeline.cancelled_at
        )
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended"
            if ended
            else ("canceling" if phase == "cancelling" else "in_progress"),
            "request_counts": counts,
            "ended_at": _timestamp(ended_at) if ended else None,
            "created_at": _timestamp(timeline.created_at),
            "expires_at": _timestamp(timeline.expires_at),
            "archived_at": None,
            "cancel_initiated_at": _timestamp(timeline.cancel_requested_at),
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }
