"""What the evaluator answers: a `Decision` with its reasons and the alerts it raised."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

Verdict = Literal["allow", "block", "downgrade", "defer"]
LimitKind = Literal["usd", "requests", "tokens", "concurrent"]


@dataclass(frozen=True, slots=True)
class Alert:
    """A soft threshold this request's reservation crossed (exactly one request sees it)."""

    policy: str
    fraction: Decimal
    usage: int
    cap: int
    kind: LimitKind
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    """allow: go ahead on `model`. block: refuse. downgrade: re-plan on `downgrade_to`
    (`replan_for_downgrade`) and reserve again. defer: hand the request to the batch path
    (or refuse it when that path is off: the gateway's choice).
    """

    action: Verdict
    # The model the request is (to be) sent to: the requested one, or the downgrade target
    # after a re-plan.
    model: str
    reasons: tuple[str, ...] = ()
    # The limit or model rule that refused, by its policy name (`team:research/budget:daily`).
    policy: str | None = None
    # When the refusing limit frees up; None: never (a `total` budget) or not time-bound
    # (a model rule, concurrency).
    resets_at: datetime | None = None
    downgrade_to: str | None = None
    # The originally requested model when this request was downgraded.
    downgraded_from: str | None = None
    alerts: tuple[Alert, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action == "allow"
