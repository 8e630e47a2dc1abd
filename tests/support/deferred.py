"""Deferred requests from the client's side: send one, wait for its answer, count what the
simulated provider was sent."""

from __future__ import annotations

import time
from typing import Any

from tests.support.procs import Proc, http


def defer(gw: Proc, key: str, body: dict[str, Any], deadline: str = "1h", *,
          path: str = "/v1/chat/completions", headers: dict[str, str] | None = None) -> str:  # fmt: skip
    """Send `body` deferred; returns the job id from the 202."""
    status, hdrs, answer = http(
        "POST", gw.url + path, body=body,
        headers={"authorization": f"Bearer {key}", "x-tollgate-defer": deadline, **(headers or {})},
    )  # fmt: skip
    assert status == 202, (status, answer)
    assert hdrs["location"] == f"/v1/deferred/{answer['id']}"
    assert answer["object"] == "deferred_request" and answer["status"] == "queued"
    assert hdrs["x-tollgate-request-id"] == answer["id"]
    return str(answer["id"])


def wait_answer(gw: Proc, key: str, job_id: str, timeout_s: float = 30.0) -> tuple[int, dict[str, str], Any]:
    """Poll `GET /v1/deferred/{id}` until it is no longer 202."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, hdrs, body = http(
            "GET", f"{gw.url}/v1/deferred/{job_id}", headers={"authorization": f"Bearer {key}"}
        )
        if status != 202:
            return status, hdrs, body
        assert body["status"] in ("queued", "batched", "submitted", "running_online"), body
        assert time.monotonic() < deadline, f"deferred request {job_id} still {body['status']}"
        time.sleep(0.1)


def submissions(sim: Proc) -> dict[str, int]:
    """How many times the simulated provider was sent each custom id (job id), both APIs."""
    status, _, counts = http("GET", f"{sim.url}/sim/batches/requests")
    assert status == 200, counts
    merged: dict[str, int] = {}
    for per_api in counts.values():
        for custom_id, times in per_api.items():
            merged[custom_id] = merged.get(custom_id, 0) + times
    return merged
