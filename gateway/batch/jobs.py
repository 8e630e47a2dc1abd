"""Deferred jobs: one request waiting for a provider batch, and where it is kept.

Every state change is written to the store before anyone is told about it (the client's
202, a provider batch, a result), so a gateway killed at any point resumes from the store.
Keys (all under `batch:`):

- `job:<id>`          the job: the request as it will be sent, who asked, its deadline and,
                      once known, its answer and what it cost;
- `queue:<group>:<t>:<id>`  a job waiting for a batch of its group (provider deployment,
                      upstream model, endpoint), ordered by arrival;
- `group:<group>`     what a group sends where (read by the accumulator);
- `assign:<id>`       who owns the job's next step, taken atomically (`set_if_absent`): a
                      local batch id, `online`, or `cancelled`. A job is submitted by
                      whoever holds its assignment, so two gateways never submit it twice;
- `held:<id>`         set once the job's budget holds are trued up, so they never are twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from gateway.errors import InvalidRequest
from gateway.pipeline import StageRecord
from gateway.store.base import Store

PREFIX = "batch:"
JobState = Literal["queued", "done", "cancelled"]
# A finished job's answer is kept this long for the client to fetch.
RESULT_TTL_S = 7 * 86400.0

DEFER_HEADER = "x-tollgate-defer"
WEBHOOK_HEADER = "x-tollgate-defer-webhook"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_YES = frozenset({"1", "true", "yes", "on"})


def parse_deadline(value: str, *, now: float, default_s: float, max_s: float) -> float:
    """A deferral deadline as epoch seconds: a duration (`90s`, `30m`, `24h`, `2d`), an ISO
    8601 time, or `true` for the default window. A bad value is the client's to fix."""
    text = value.strip()
    if text.lower() in _YES:
        return now + default_s
    match = _DURATION.match(text.lower())
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(
                f"{DEFER_HEADER} must be a duration such as 24h, 30m or 2d, an ISO 8601 time, or true; "
                f"got {value!r}.",
                param=DEFER_HEADER,
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if seconds <= 0:
        raise InvalidRequest(f"{DEFER_HEADER} deadline {value!r} is already past.", param=DEFER_HEADER)
    if seconds > max_s:
        raise InvalidRequest(
            f"{DEFER_HEADER} deadline {value!r} is further away than the {max_s / 3600:g}h this gateway allows.",
            param=DEFER_HEADER,
        )
    return now + seconds


@dataclass(frozen=True, slots=True)
class Deferral:
    """Why and until when a request may wait. `required`: the request must not go online now
    (a budget breached with action `defer`), so a request that cannot be deferred is refused."""

    deadline: float
    reason: str
    required: bool = False
    webhook: str | None = None
    # A line of a client's batch file: (the client's batch id, the line's custom_id).
    owner: tuple[str, str] | None = None


@dataclass(slots=True)
class Job:
    id: str  # also the request id: the ledger row and the client's 202 carry it
    team: str
    key_id: str | None
    wire: Literal["openai", "anthropic"]
    endpoint: str
    requested_model: str  # what the client asked for (the baseline's model)
    original_body: dict[str, Any]  # the request as the client sent it (the baseline's tokens)
    body: dict[str, Any]  # as it will be sent: every stage's changes, the upstream model
    model: str  # the name the stages settled on (a routed or downgraded alias), for online runs
    alias: str  # the alias that serves it and the deployment chosen
    deployment_index: int
    upstream_model: str
    group: str
    deadline: float
    reason: str
    created_at: float = field(default_factory=time.time)
    webhook: str | None = None
    owner: tuple[str, str] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    # Budget holds (charge key, kind `usd`|`tokens`, amount held, ttl_s) trued up once costed.
    holds: list[tuple[str, str, int, float]] = field(default_factory=list)
    state: JobState = "queued"
    # The answer, as the online API would have given it: {"status": int, "body": {...}}.
    result: dict[str, Any] | None = None
    # Where the answer came from: `batch`, `online` (deadline, batch failure), `cache`.
    served_via: str | None = None
    served_model: str | None = None
    cost: dict[str, Any] | None = None  # cost_usd, baseline_usd, saved_usd (decimal strings)
    finished_at: float | None = None

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, data: bytes) -> Job:
        raw = orjson.loads(data)
        raw["holds"] = [tuple(hold) for hold in raw.get("holds", [])]
        if raw.get("owner") is not None:
            raw["owner"] = tuple(raw["owner"])
        return cls(**raw)

    def stage_records(self) -> list[StageRecord]:
        return [
            StageRecord(
                stage=r["stage"],
                saved_input_tokens=r["saved_input_tokens"],
                saved_output_tokens=r["saved_output_tokens"],
                saved_usd=Decimal(r["saved_usd"]),
                owns_remainder=r["owns_remainder"],
                detail=r["detail"],
            )
            for r in self.records
        ]


def cost_figures(report: Any) -> dict[str, Any]:
    """A cost report (gateway.accounting.costing.CostReport) as a job keeps it: decimal strings."""

    def money(value: Any) -> str | None:
        return None if value is None else str(value)

    return {
        "cost_usd": money(report.cost_usd),
        "baseline_usd": money(report.baseline_usd),
        "saved_usd": money(report.saved_usd),
        "saved_by_stage": {stage: str(saved) for stage, saved in report.saved_by_stage.items()},
    }


def dump_records(records: Sequence[StageRecord]) -> list[dict[str, Any]]:
    return [
        {
            "stage": r.stage,
            "saved_input_tokens": r.saved_input_tokens,
            "saved_output_tokens": r.saved_output_tokens,
            "saved_usd": str(r.saved_usd),
            "owns_remainder": r.owns_remainder,
            "detail": orjson.loads(orjson.dumps(r.detail, default=str)),
        }
        for r in records
    ]


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def assign_key(job_id: str) -> str:
    return f"{PREFIX}assign:{job_id}"


def queue_prefix(group: str) -> str:
    return f"{PREFIX}queue:{group}:"


def queue_key(job: Job) -> str:
    return f"{queue_prefix(job.group)}{int(job.created_at * 1000):015d}:{job.id}"


def _queue_value(job: Job) -> bytes:
    return f"{job.id} {job.deadline}".encode()


@dataclass(frozen=True, slots=True)
class Queued:
    key: str
    job_id: str
    created_at: float
    deadline: float


class Jobs:
    """The jobs in the store; every method is one or two store round trips."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, job: Job, group_info: Mapping[str, Any]) -> None:
        """Keep the job and queue it; written before the client hears of it."""
        # The queue entry first: one without its job (a process killed in between) is dropped
        # by the worker, while a job without its entry would wait forever.
        await self.store.set(f"{PREFIX}group:{job.group}", orjson.dumps(group_info))
        await self.store.set(queue_key(job), _queue_value(job))
        await self.store.set(job_key(job.id), job.dumps())

    async def get(self, job_id: str) -> Job | None:
        data = await self.store.get(job_key(job_id))
        return None if data is None else Job.loads(data)

    async def save(self, job: Job) -> None:
        ttl = RESULT_TTL_S if job.state != "queued" else None
        await self.store.set(job_key(job.id), job.dumps(), ttl_s=ttl)

    async def assignment(self, job_id: str) -> str | None:
        value = await self.store.get(assign_key(job_id))
        return None if value is None else value.decode()

    async def assign(self, job_id: str, owner: str) -> bool:
        """Take the job's next step for `owner`; True when it is (or already was) ours."""
        if await self.store.set_if_absent(assign_key(job_id), owner.encode()):
            return True
        return await self.assignment(job_id) == owner

    async def unassign(self, job_id: str) -> None:
        await self.store.delete(assign_key(job_id))

    async def groups(self) -> list[tuple[str, dict[str, Any]]]:
        found = await self.store.scan(f"{PREFIX}group:")
        return [(key.rsplit(":", 1)[1], orjson.loads(value)) for key, value in found]

    async def queued(self, group: str, *, limit: int) -> list[Queued]:
        """The group's waiting jobs, oldest first, read from the queue alone (no job reads)."""
        found = await self.store.scan(queue_prefix(group), limit=limit)
        waiting = []
        for key, value in found:
            job_id, _, deadline = value.decode().partition(" ")
            created_ms = int(key[len(queue_prefix(group)) :].split(":", 1)[0])
            waiting.append(Queued(key, job_id, created_ms / 1000, float(deadline or "inf")))
        return waiting

    async def requeue(self, job: Job) -> None:
        """Back in its group's queue (its batch expired), free to be assigned again."""
        await self.store.set(queue_key(job), _queue_value(job))
        await self.unassign(job.id)

    async def mark_holds_settled(self, job_id: str) -> bool:
        """True the first time only: the caller trues up the job's budget holds."""
        return await self.store.set_if_absent(f"{PREFIX}held:{job_id}", b"1", ttl_s=RESULT_TTL_S)
