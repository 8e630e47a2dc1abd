"""A client's batch read back from its lines' jobs: how far it is, and once every line has
ended, its output file (the lines answered 2xx) and error file (the rest), as OpenAI writes
them: `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`,
and for a line that never ran (cancelled) `"response": null, "error": {"code", "message"}`.

Everything written here is derived from the jobs alone (file ids, line ids), so two
instances that finalize the same batch write the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.batch.client_record import ClientBatch
from gateway.batch.jobs import Job, job_key
from gateway.store.base import Store

_CUT_OFF = {
    "cancelled": {
        "code": "batch_cancelled",
        "message": "This request was not executed because the batch was cancelled.",
    },
    "expired": {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    },
}


@dataclass(slots=True)
class Progress:
    jobs: dict[int, Job]
    counts: dict[str, int]
    # Every line has ended: answered, cancelled, or never to be sent.
    finished: bool
    # Jobs still waiting for a provider batch, not yet taken by one (what a cancel stops).
    queued: list[str]


def _ended(job: Job) -> bool:
    return job.result is not None or job.state == "cancelled"


async def line_jobs(store: Store, batch: ClientBatch) -> dict[int, Job]:
    """The batch's jobs by line, in one store round trip."""
    prefix = job_key(batch.job_id(0))[:-1]
    found: dict[int, Job] = {}
    for key, value in await store.scan(prefix, limit=batch.total + 1):
        suffix = key[len(prefix) :]
        if suffix.isdigit():
            found[int(suffix)] = Job.loads(value)
    return found


async def progress(store: Store, batch: ClientBatch, *, cancelling: bool) -> Progress:
    jobs = await line_jobs(store, batch)
    completed = failed = 0
    finished = batch.dispatched
    queued: list[str] = []
    for index in range(batch.total):
        job = jobs.get(index)
        if job is None:
            # Not run yet; once dispatching is over, never to be (the batch was cancelled).
            failed += batch.dispatched
            continue
        if job.result is not None:
            if 200 <= job.result["status"] < 300:
                completed += 1
            else:
                failed += 1
        elif job.state == "cancelled":
            failed += 1
        else:
            finished = False
            queued.append(job.id)
    counts = {"total": batch.total, "completed": completed, "failed": failed}
    return Progress(jobs=jobs, counts=counts, finished=finished, queued=queued if cancelling else [])


def line_id(job_id: str) -> str:
    return "batch_req_" + hashlib.sha256(job_id.encode()).hexdigest()[:32]


def result_lines(
    batch: ClientBatch, jobs: dict[int, Job], custom_ids: list[str] | None
) -> tuple[list[bytes], list[bytes], dict[str, Any]]:
    """(output lines, error lines, the usage of every answered line summed), in input order.

    `custom_ids`: every line's custom_id from the input file, for lines that have no job (a
    cancel stopped them before they ran); None when every line has one.
    """
    outputs: list[bytes] = []
    errors: list[bytes] = []
    usage = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0}
    for index in range(batch.total):
        job_id = batch.job_id(index)
        job = jobs.get(index)
        custom_id: str | None = None
        if job is not None and job.owner:
            custom_id = job.owner[1]
        elif custom_ids is not None and index < len(custom_ids):
            custom_id = custom_ids[index]
        if job is None or job.result is None:
            cut = "cancelled" if job is None or job.state == "cancelled" else "expired"
            line = {"id": line_id(job_id), "custom_id": custom_id, "response": None, "error": _CUT_OFF[cut]}
            errors.append(orjson.dumps(line))
            continue
        status, body = int(job.result["status"]), job.result["body"]
        response = {"status_code": status, "request_id": job_id, "body": body}
        line = {"id": line_id(job_id), "custom_id": custom_id, "response": response, "error": None}
        (outputs if 200 <= status < 300 else errors).append(orjson.dumps(line))
        if 200 <= status < 300:
            _add_usage(usage, body.get("usage"))
    return outputs, errors, _usage_object(usage)


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    total["input_tokens"] += int(usage.get("prompt_tokens") or 0)
    total["output_tokens"] += int(usage.get("completion_tokens") or 0)
    total["cached_tokens"] += int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    total["reasoning_tokens"] += int(
        (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    )


def _usage_object(total: dict[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": total["input_tokens"],
        "input_tokens_details": {"cached_tokens": total["cached_tokens"]},
        "output_tokens": total["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": total["reasoning_tokens"]},
        "total_tokens": total["input_tokens"] + total["output_tokens"],
    }
