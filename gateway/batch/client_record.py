"""A client's batch (`POST /v1/batches`) as it is kept, and as OpenAI's Batch object shows it.

Keys (under `batch:`): `cbatch:<id>` the record; `tcbatch:<team>:<newest-first time>:<id>`
the team's listing; `cpending:<id>` while the batch has work left (lines to send, results to
gather); `ccancel:<id>` once the client asked to cancel (written by the cancel call alone, so
it never races the instance working on the batch, which alone writes the record).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

CBATCH_PREFIX = "batch:cbatch:"
INDEX_PREFIX = "batch:tcbatch:"
PENDING_PREFIX = "batch:cpending:"
CANCEL_PREFIX = "batch:ccancel:"
LEASE_PREFIX = "batch:lease:cbatch:"
# Statuses after which nothing changes.
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
# A batch that has ended is kept as long as OpenAI keeps its output files by default.
ENDED_TTL_S = 30 * 86400.0


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(16)


def no_counts() -> dict[str, int]:
    return {"total": 0, "completed": 0, "failed": 0}


@dataclass(slots=True)
class ClientBatch:
    id: str
    team: str
    key_id: str | None
    is_master: bool
    endpoint: str  # the URL path, as the client gave it: /v1/chat/completions ...
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    expires_at: float
    # failed (the input was refused), in_progress, then completed or cancelled once finalized.
    status: str
    total: int = 0
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    # Every line has been run through the pipeline (or the rest skipped after a cancel).
    dispatched: bool = False
    output_ttl_s: float | None = None
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=no_counts)
    usage: dict[str, Any] | None = None

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, data: bytes) -> ClientBatch:
        return cls(**orjson.loads(data))

    def job_id(self, index: int) -> str:
        """The request id of line `index`: its job, its ledger row, its custom_id upstream."""
        return f"{self.id}_{index}"

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL

    def to_json(self, *, status: str | None = None, counts: dict[str, int] | None = None) -> dict[str, Any]:
        """OpenAI's Batch object; a batch still running shows the status and counts given."""

        def at(moment: float | None) -> int | None:
            return None if moment is None else int(moment)

        status = status or self.status
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": at(self.in_progress_at),
            "expires_at": int(self.expires_at),
            "finalizing_at": at(self.finalizing_at),
            "completed_at": at(self.completed_at),
            "failed_at": at(self.failed_at),
            "expired_at": at(self.expired_at),
            "cancelling_at": at(self.cancelling_at),
            "cancelled_at": at(self.cancelled_at),
            "request_counts": dict(counts if counts is not None else self.counts),
            "metadata": self.metadata,
            "usage": self.usage,
        }
