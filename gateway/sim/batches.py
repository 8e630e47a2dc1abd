"""What the simulator's two batch APIs share: the clock a batch runs on, which requests fail,
the log of what was submitted, the book of batches each keeps, and cursor pages.

A batch has no background task. Its state is a pure function of the clock, computed when the
batch is read: it ends `batch_delay_s` after it was created, or expires `batch_expire_s`
after it if that comes first. Every request is answered at once, when the batch is first seen
to have ended. A cancel before the end stops it; the next read finds it cancelled.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import orjson

from gateway.config import SimConfig
from gateway.errors import TollgateError
from gateway.sim.core import SimCore

Clock = Callable[[], float]
Phase = Literal["running", "cancelling", "completed", "expired", "cancelled"]
T = TypeVar("T")
B = TypeVar("B")

# Both providers give a batch 24 hours; with no `batch_expire_s` that is the window.
WINDOW_S = 24 * 3600.0
# A request whose body contains this text fails, so a test can place a failure exactly.
FAIL_MARKER = b"sim-batch-fail"


class Conflict(TollgateError):
    """The request is valid but the batch's state forbids it (OpenAI: cancel a completed batch)."""

    status = 409
    type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class NoSuchObject(TollgateError):
    """A 404 for a file or batch id: OpenAI's names the param but carries no code."""

    status = 404
    type = "invalid_request_error"
    anthropic_type = "not_found_error"


@dataclass(slots=True)
class Timeline:
    """When a batch was created, when it would finish or expire, and whether it was cancelled."""

    created_at: float
    finishes_at: float
    expires_at: float
    cancel_requested_at: float | None = None
    cancelled_at: float | None = None

    @classmethod
    def start(cls, settings: SimConfig, now: float) -> Timeline:
        window = settings.batch_expire_s if settings.batch_expire_s is not None else WINDOW_S
        return cls(now, now + settings.batch_delay_s, now + window)

    @property
    def expires_first(self) -> bool:
        return self.finishes_at > self.expires_at

    @property
    def ends_at(self) -> float:
        return self.expires_at if self.expires_first else self.finishes_at

    def phase(self, now: float) -> Phase:
        if self.cancelled_at is not None:
            return "cancelled"
        if self.cancel_requested_at is not None:
            return "cancelling"
        if now < self.ends_at:
            return "running"
        return "expired" if self.expires_first else "completed"

    def cancel(self, now: float) -> None:
        """Ask to cancel (the caller checked the batch is still running)."""
        self.cancel_requested_at = now

    def observe(self, now: float) -> Phase:
        """A read of the batch: a cancel asked for earlier is now done."""
        if self.cancel_requested_at is not None and self.cancelled_at is None:
            self.cancelled_at = now
        return self.phase(now)


def fails(custom_id: str, body: Mapping[str, Any], rate: float) -> bool:
    """Whether this request fails: its body carries the marker, or its custom_id's hash falls
    within `rate` (the same custom_id fails on every run)."""
    if FAIL_MARKER in orjson.dumps(body):
        return True
    if rate <= 0:
        return False
    digest = hashlib.sha256(custom_id.encode()).digest()
    return int.from_bytes(digest[:8]) / 2**64 < rate


class SubmissionLog:
    """How often each custom_id was submitted in a batch, per wire (`GET /sim/batches/requests`)."""

    def __init__(self) -> None:
        self.openai: Counter[str] = Counter()
        self.anthropic: Counter[str] = Counter()

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"openai": dict(self.openai), "anthropic": dict(self.anthropic)}


class BatchBook(Generic[B]):
    """The batches of one API on one simulator, by id, newest last, and what answers them."""

    def __init__(self, settings: SimConfig, core: SimCore, log: SubmissionLog, clock: Clock) -> None:
        self.settings = settings
        self.core = core
        self.log = log
        self.clock = clock
        self._batches: dict[str, B] = {}

    def newest_first(self) -> list[B]:
        return list(reversed(self._batches.values()))


def page_after(
    items: Sequence[T], id_of: Callable[[T], str], after: str | None, limit: int
) -> tuple[list[T], bool]:
    """(the page of `limit` items following `after` in `items`' order, whether more follow)."""
    start = 0
    if after:
        ids = [id_of(item) for item in items]
        if after not in ids:
            raise NoSuchObject(f"No such object: {after!r}.", param="after")
        start = ids.index(after) + 1
    page = list(items[start : start + limit])
    return page, start + limit < len(items)


def page_before(
    items: Sequence[T], id_of: Callable[[T], str], before: str, limit: int
) -> tuple[list[T], bool]:
    """(the `limit` items just before `before` in `items`' order, whether more precede them)."""
    ids = [id_of(item) for item in items]
    if before not in ids:
        raise NoSuchObject(f"No such object: {before!r}.", param="before_id")
    end = ids.index(before)
    start = max(0, end - limit)
    return list(items[start:end]), start > 0
