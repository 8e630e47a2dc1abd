"""The sentences a user reads: each names the policy that decided and when it frees up."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from policies.money import format_usd

if TYPE_CHECKING:
    from policies.plan import PlannedLease, PlannedLimit

_VERBS = {"usd": "has spent", "requests": "has made", "tokens": "has used"}
_MAY = {"usd": "cost", "requests": "make", "tokens": "use"}


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _quantity(kind: str, value: int) -> str:
    return format_usd(value) if kind == "usd" else f"{value:,}"


def _percent(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f}%"


def _reset(limit: PlannedLimit) -> str:
    if limit.resets_at is None:
        return "it never resets"
    when = limit.resets_at.isoformat()
    if limit.window == "rolling":
        return f"its rolling window next frees up at {when}"
    return f"it resets at {when}"


def limit_refusal(limit: PlannedLimit, used: int | None) -> str:
    """`Team 'research' has spent $50.00 of its $50.00 daily budget (policy …); it resets at …`."""
    cap = _quantity(limit.kind, limit.cap)
    if used is None:
        status = f"has reached its {cap} {limit.description}{limit.qualifier}"
    else:
        status = f"{_VERBS[limit.kind]} {_quantity(limit.kind, used)} of its {cap} {limit.description}{limit.qualifier}"
        if used < limit.cap:
            # Not yet at the cap: say why this request still does not fit.
            status += f" and this request may {_MAY[limit.kind]} up to {_quantity(limit.kind, limit.amount)}"
    text = f"{sentence(limit.subject)} {status} (policy {limit.name}); {_reset(limit)}."
    if limit.action == "downgrade":
        text += f" Switching to {limit.downgrade_to!r}."
    return text


def lease_refusal(lease: PlannedLease, held: int | None) -> str:
    count = f"{held:,} of its {lease.cap:,}" if held is not None else f"all {lease.cap:,} of its"
    text = (
        f"{sentence(lease.subject)} has {count} concurrent requests in flight{lease.qualifier} "
        f"(policy {lease.name}); one frees up when a request finishes."
    )
    if lease.action == "downgrade":
        text += f" Switching to {lease.downgrade_to!r}."
    return text


def threshold_alert(limit: PlannedLimit, fraction: Decimal, usage: int) -> str:
    return (
        f"{sentence(limit.subject)} {_VERBS[limit.kind]} {_quantity(limit.kind, usage)} "
        f"({_percent(fraction)}) of its {_quantity(limit.kind, limit.cap)} {limit.description}"
        f"{limit.qualifier} (policy {limit.name})."
    )


def model_refusal(model: str, subject: str, why: str, policy: str) -> str:
    return f"Model {model!r} is not available to {subject}: it {why} (policy {policy})."
