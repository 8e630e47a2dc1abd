"""Facts about one request → the counters and leases it must reserve, all at once.

`plan` is pure: the same policies, facts and estimate give the same plan on every
gateway instance, so every instance names the same counters. The store reserves the
whole plan atomically (all or nothing); `decide` reads its answer.

Names: a scope is `team:<team>`, with `/key:<id>`, `/user:<id>` or `/model:<glob>` for the
narrower ones; a limit is `<scope>/budget:<name>` or `<scope>/rate:<what>`; a counter is
`policy:<limit>/<bucket>` (policies/windows.py). Identifiers are percent-encoded where
they hold `/`, `:`, `%` or other characters outside a safe set, so no two scopes share a name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from fnmatch import fnmatchcase
from typing import Any, Literal
from urllib.parse import quote

from policies.decision import Decision, LimitKind
from policies.messages import model_refusal
from policies.model import Action, Limits, Policies, RateLimits, Scope, TeamPolicy
from policies.windows import RATE_BUCKETS, ROLLING_BUCKETS, Span, calendar_span, rolling_span

# A concurrency lease outlives a gateway that died mid-request by this long at most.
DEFAULT_LEASE_TTL_S = 900
# The store checks limits in plan order and reports the first that fails: soft actions
# come first, so a request that a downgrade could still fit is downgraded, not blocked.
_ACTION_ORDER: dict[str, int] = {"downgrade": 0, "defer": 1, "block": 2, "alert_only": 3}
_ROLLING_WORDS = {
    "hour": "rolling 60-minute",
    "day": "rolling 24-hour",
    "week": "rolling 7-day",
    "month": "rolling 30-day",
}
_CALENDAR_WORDS = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly", "total": "total"}


def _ident(text: str) -> str:
    return quote(text, safe="!$&'()*+,;=@-._~")


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known about a request before it is sent: who, which model, when."""

    team: str
    model: str
    now: datetime
    key_id: str | None = None
    user: str | None = None
    # Holds the concurrency leases, so the gateway can release exactly its own.
    request_id: str = ""

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("Facts.now must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Estimate:
    """The worst case this request may use: reserved up front, settled after."""

    cost_nano: int
    tokens: int

    def __post_init__(self) -> None:
        if self.cost_nano < 0 or self.tokens < 0:
            raise ValueError("an estimate cannot be negative")


@dataclass(frozen=True, slots=True)
class Threshold:
    fraction: Decimal
    # The usage at which the threshold is reached: ceil(fraction · cap).
    at: int


@dataclass(frozen=True, slots=True)
class PlannedLimit:
    """One counter limit to reserve against: the usage is the sum of `buckets`."""

    name: str
    kind: LimitKind
    scope: str
    # Who is limited and on what, for messages: "team 'research'", " for model 'gpt-4o'".
    subject: str
    qualifier: str
    description: str
    window: Literal["calendar", "rolling", "total"]
    buckets: tuple[str, ...]
    charge_key: str
    amount: int
    # The enforced cap; None: count only (alert_only, a downgrade already taken, or a
    # downgrade whose target is the model already requested).
    limit: int | None
    # The configured cap, for messages and alerts even when not enforced.
    cap: int
    ttl_s: int | None
    action: Action
    downgrade_to: str | None
    alerts: tuple[Threshold, ...]
    resets_at: datetime | None


@dataclass(frozen=True, slots=True)
class PlannedLease:
    """A concurrency slot: held by `holder` from reservation until the response ends."""

    name: str
    scope: str
    subject: str
    qualifier: str
    key: str
    holder: str
    limit: int | None
    cap: int
    ttl_s: int
    action: Action
    downgrade_to: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    facts: Facts
    estimate: Estimate
    # A refusal known before any counter is read (a model rule); reserve nothing.
    denied: Decision | None
    limits: tuple[PlannedLimit, ...]
    leases: tuple[PlannedLease, ...]
    # The team's stage settings, for the pipeline.
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    count_only: frozenset[str] = frozenset()
    downgraded_from: str | None = None
    # Reasons carried over from the downgrades that led to this plan.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Scope:
    rank: int  # narrowest first, for the order in which failures are reported
    name: str
    subject: str
    qualifier: str
    limits: Limits


def _scopes(team_policy: TeamPolicy, facts: Facts) -> list[_Scope]:
    team = f"team:{_ident(facts.team)}"
    team_subject = f"team {facts.team!r}"
    scopes = [_Scope(3, team, team_subject, "", team_policy)]
    if facts.key_id is not None:
        entry = team_policy.per_key.get(facts.key_id, team_policy.per_key.get("*"))
        if entry is not None:
            subject = f"key {facts.key_id!r} of {team_subject}"
            scopes.append(_Scope(2, f"{team}/key:{_ident(facts.key_id)}", subject, "", entry))
    if facts.user is not None:
        entry = team_policy.per_user.get(facts.user, team_policy.per_user.get("*"))
        if entry is not None:
            subject = f"user {facts.user!r} of {team_subject}"
            scopes.append(_Scope(1, f"{team}/user:{_ident(facts.user)}", subject, "", entry))
    for pattern, limits in team_policy.per_model.items():
        if fnmatchcase(facts.model, pattern):
            glob = any(c in pattern for c in "*?[")
            qualifier = f" for models matching {pattern!r}" if glob else f" for model {pattern!r}"
            scopes.append(_Scope(0, f"{team}/model:{_ident(pattern)}", team_subject, qualifier, limits))
    return scopes


def _denial(scopes: list[_Scope], facts: Facts) -> Decision | None:
    for scope in scopes:
        rules = scope.limits.models if isinstance(scope.limits, Scope) else None
        if rules is not None and (why := rules.denial(facts.model)) is not None:
            policy = f"{scope.name}/models"
            return Decision(
                action="block",
                model=facts.model,
                reasons=(model_refusal(facts.model, scope.subject, why, policy),),
                policy=policy,
            )
    return None


def _enforced(
    name: str, action: Action, downgrade_to: str | None, model: str, count_only: frozenset[str]
) -> bool:
    """Whether a limit may refuse this request, or only counts it."""
    if action == "alert_only" or name in count_only:
        return False
    # Already on the downgrade target: downgrading cannot make the request cheaper.
    return not (action == "downgrade" and downgrade_to == model)


def _thresholds(fractions: Iterable[Decimal], cap: int) -> tuple[Threshold, ...]:
    return tuple(
        Threshold(fraction, int((fraction * cap).to_integral_value(rounding=ROUND_CEILING)))
        for fraction in fractions
    )


def _limit(
    scope: _Scope,
    *,
    name: str,
    kind: LimitKind,
    description: str,
    window: Literal["calendar", "rolling", "total"],
    span: Span,
    amount: int,
    cap: int,
    action: Action,
    downgrade_to: str | None,
    alert_at: tuple[Decimal, ...],
    model: str,
    count_only: frozenset[str],
) -> PlannedLimit:
    if action == "alert_only":
        # The breach itself is what an alert_only limit exists to report.
        alert_at = tuple(sorted({*alert_at, Decimal(1)}))
    enforced = _enforced(name, action, downgrade_to, model, count_only)
    return PlannedLimit(
        name=name,
        kind=kind,
        scope=scope.name,
        subject=scope.subject,
        qualifier=scope.qualifier,
        description=description,
        window=window,
        buckets=tuple(f"policy:{name}/{bucket}" for bucket in (*span.buckets, *span.ahead)),
        charge_key=f"policy:{name}/{span.charge}",
        amount=amount,
        limit=cap if enforced else None,
        cap=cap,
        ttl_s=span.ttl_s,
        action=action,
        downgrade_to=downgrade_to,
        alerts=_thresholds(alert_at, cap),
        resets_at=span.resets_at,
    )


def _budgets(
    scope: _Scope, facts: Facts, estimate: Estimate, count_only: frozenset[str]
) -> list[PlannedLimit]:
    planned = []
    for budget in scope.limits.budgets:
        if budget.window == "calendar" or budget.period == "total":
            span = calendar_span(budget.period, budget.zone, facts.now)
            window: Literal["calendar", "rolling", "total"] = (
                "total" if budget.period == "total" else "calendar"
            )
            words = _CALENDAR_WORDS[budget.period]
        else:
            span = rolling_span(*ROLLING_BUCKETS[budget.period], facts.now)
            window, words = "rolling", _ROLLING_WORDS[budget.period]
        planned.append(
            _limit(
                scope,
                name=f"{scope.name}/budget:{budget.label}",
                kind="usd",
                description=f"{words} budget",
                window=window,
                span=span,
                amount=estimate.cost_nano,
                cap=budget.cap_nano,
                action=budget.action,
                downgrade_to=budget.downgrade_to,
                alert_at=budget.alert_at,
                model=facts.model,
                count_only=count_only,
            )
        )
    return planned


def _rates(
    scope: _Scope, rates: RateLimits, facts: Facts, estimate: Estimate, count_only: frozenset[str]
) -> list[PlannedLimit]:
    span = rolling_span(*RATE_BUCKETS, facts.now)
    per_minute: list[tuple[LimitKind, int | None, int]] = [
        ("requests", rates.requests_per_minute, 1),
        ("tokens", rates.tokens_per_minute, estimate.tokens),
    ]
    return [
        _limit(
            scope,
            name=f"{scope.name}/rate:{kind}_per_minute",
            kind=kind,
            description=f"{kind} per minute",
            window="rolling",
            span=span,
            amount=amount,
            cap=cap,
            action=rates.action,
            downgrade_to=rates.downgrade_to,
            alert_at=(),
            model=facts.model,
            count_only=count_only,
        )
        for kind, cap, amount in per_minute
        if cap is not None
    ]


def _lease(
    scope: _Scope, rates: RateLimits, facts: Facts, count_only: frozenset[str], ttl_s: int
) -> PlannedLease:
    name = f"{scope.name}/rate:concurrent"
    assert rates.concurrent is not None
    enforced = _enforced(name, rates.action, rates.downgrade_to, facts.model, count_only)
    return PlannedLease(
        name=name,
        scope=scope.name,
        subject=scope.subject,
        qualifier=scope.qualifier,
        key=f"policy:{name}",
        holder=facts.request_id,
        limit=rates.concurrent if enforced else None,
        cap=rates.concurrent,
        ttl_s=ttl_s,
        action=rates.action,
        downgrade_to=rates.downgrade_to,
    )


def plan(
    policies: Policies,
    facts: Facts,
    estimate: Estimate,
    *,
    count_only: Iterable[str] = (),
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S,
) -> Plan:
    """Everything this request must reserve, in the order failures are reported.

    `count_only` names limits that still count this request but cannot refuse it: the
    downgrade budgets already taken (see `replan_for_downgrade`).
    """
    team_policy = policies.for_team(facts.team)
    if team_policy is None:
        return Plan(facts=facts, estimate=estimate, denied=None, limits=(), leases=())
    scopes = _scopes(team_policy, facts)
    stages = team_policy.stages
    if (denied := _denial(scopes, facts)) is not None:
        return Plan(facts=facts, estimate=estimate, denied=denied, limits=(), leases=(), stages=stages)
    skip = frozenset(count_only)
    ranked: list[tuple[int, int, PlannedLimit]] = []
    leases: list[tuple[int, int, PlannedLease]] = []
    for scope in scopes:
        for limit in _budgets(scope, facts, estimate, skip):
            ranked.append((_ACTION_ORDER[limit.action], scope.rank, limit))
        rates = scope.limits.rate_limits
        if rates is None:
            continue
        for limit in _rates(scope, rates, facts, estimate, skip):
            ranked.append((_ACTION_ORDER[limit.action], scope.rank, limit))
        if rates.concurrent is not None:
            leases.append(
                (_ACTION_ORDER[rates.action], scope.rank, _lease(scope, rates, facts, skip, lease_ttl_s))
            )
    # sorted() is stable: within one action and scope, the order of the file is kept.
    return Plan(
        facts=facts,
        estimate=estimate,
        denied=None,
        limits=tuple(limit for _, _, limit in sorted(ranked, key=lambda r: r[:2])),
        leases=tuple(lease for _, _, lease in sorted(leases, key=lambda r: r[:2])),
        stages=stages,
        count_only=skip,
    )


def replan_for_downgrade(
    policies: Policies,
    previous: Plan,
    decision: Decision,
    estimate: Estimate | None = None,
    *,
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S,
) -> Plan:
    """The plan for the same request on `decision.downgrade_to`.

    The downgrade budget that refused keeps counting this request but can no longer
    refuse it (a `block` budget is the hard stop). Pass the estimate for the cheaper
    model; without one the previous (more expensive, so safe) estimate is kept.
    """
    if decision.action != "downgrade" or decision.downgrade_to is None or decision.policy is None:
        raise ValueError("only a downgrade decision can be re-planned")
    facts = dataclasses.replace(previous.facts, model=decision.downgrade_to)
    replanned = plan(
        policies,
        facts,
        estimate if estimate is not None else previous.estimate,
        count_only=previous.count_only | {decision.policy},
        lease_ttl_s=lease_ttl_s,
    )
    downgraded_from = previous.downgraded_from or previous.facts.model
    notes = previous.notes + decision.reasons
    denied = replanned.denied
    if denied is not None:
        denied = dataclasses.replace(denied, reasons=notes + denied.reasons, downgraded_from=downgraded_from)
    return dataclasses.replace(replanned, denied=denied, downgraded_from=downgraded_from, notes=notes)
