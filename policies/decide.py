"""The store's answer to a reservation → a `Decision` with reasons and crossed thresholds.

A threshold is reported by the one request whose reservation crossed it: usage before
< threshold ≤ usage after. Reservations are atomic, so within one calendar window usage
only grows and exactly one request sees each crossing, however many instances race. (A
rolling window's usage also falls as old buckets leave it, so a threshold there can be
crossed, and reported, again once usage has dropped below it.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from policies.decision import Alert, Decision, Verdict
from policies.messages import lease_refusal, limit_refusal, threshold_alert
from policies.plan import Plan, PlannedLease, PlannedLimit

_VERDICTS: dict[str, Verdict] = {"block": "block", "downgrade": "downgrade", "defer": "defer"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an atomic all-or-nothing reserve answered.

    `usage` maps each limit's and lease's policy name to its usage: after this request was
    charged when admitted, before (nothing charged) when refused.
    """

    admitted: bool
    failed: str | None = None
    usage: Mapping[str, int] = field(default_factory=dict)


def _crossings(limit: PlannedLimit, after: int) -> list[Alert]:
    before = after - limit.amount
    return [
        Alert(
            policy=limit.name,
            fraction=threshold.fraction,
            usage=after,
            cap=limit.cap,
            kind=limit.kind,
            message=threshold_alert(limit, threshold.fraction, after),
        )
        for threshold in limit.alerts
        if before < threshold.at <= after
    ]


def _refusal(plan: Plan, outcome: Outcome) -> Decision:
    candidates: list[PlannedLimit | PlannedLease] = [*plan.limits, *plan.leases]
    failing = next((item for item in candidates if item.name == outcome.failed), None)
    if failing is None:
        raise ValueError(f"the store refused on {outcome.failed!r}, which is not in the plan")
    if failing.limit is None:
        raise ValueError(f"the store refused on {failing.name!r}, which only counts and cannot refuse")
    used = outcome.usage.get(failing.name)
    if isinstance(failing, PlannedLimit):
        reason, resets_at = limit_refusal(failing, used), failing.resets_at
    else:
        reason, resets_at = lease_refusal(failing, used), None
    return Decision(
        action=_VERDICTS[failing.action],
        model=plan.facts.model,
        reasons=(*plan.notes, reason),
        policy=failing.name,
        resets_at=resets_at,
        downgrade_to=failing.downgrade_to,
        downgraded_from=plan.downgraded_from,
    )


def decide(plan: Plan, outcome: Outcome | None) -> Decision:
    """The decision for a plan given the store's answer (None when nothing was reserved:
    the plan was denied outright or holds no limits)."""
    if plan.denied is not None:
        return plan.denied
    if outcome is None:
        if plan.limits or plan.leases:
            raise ValueError("a plan with limits needs the store's outcome")
        outcome = Outcome(admitted=True)
    if not outcome.admitted:
        return _refusal(plan, outcome)
    alerts = [
        alert
        for limit in plan.limits
        if limit.alerts and (after := outcome.usage.get(limit.name)) is not None
        for alert in _crossings(limit, after)
    ]
    return Decision(
        action="allow",
        model=plan.facts.model,
        reasons=plan.notes,
        downgraded_from=plan.downgraded_from,
        alerts=tuple(alerts),
    )
