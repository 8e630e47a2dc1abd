"""The whole evaluation in one pure call, over counters handed in as a `State`.

`reserve` is the reference meaning of the store's atomic reserve (each backend must
answer the same); `evaluate` is `decide(plan(...), check(...))` for reports
(`tollgate budgets`) and property tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from policies.decide import Outcome, decide
from policies.decision import Decision
from policies.model import Policies
from policies.plan import DEFAULT_LEASE_TTL_S, Estimate, Facts, Plan, plan


@dataclass(frozen=True, slots=True)
class State:
    """Current counter values by bucket key (absent = 0) and lease holders by lease key."""

    counters: Mapping[str, int] = field(default_factory=dict)
    leases: Mapping[str, int] = field(default_factory=dict)


def _usage_before(plan: Plan, state: State) -> dict[str, int]:
    usage = {limit.name: sum(state.counters.get(key, 0) for key in limit.buckets) for limit in plan.limits}
    usage.update({lease.name: state.leases.get(lease.key, 0) for lease in plan.leases})
    return usage


def check(plan: Plan, state: State) -> Outcome:
    """What an atomic reserve of `plan` would answer against `state`, changing nothing.

    Limits are checked in plan order, then leases; the first that would go past its
    limit refuses the whole reservation.
    """
    before = _usage_before(plan, state)
    steps: list[tuple[str, int, int | None]] = [(lim.name, lim.amount, lim.limit) for lim in plan.limits]
    steps += [(lease.name, 1, lease.limit) for lease in plan.leases]
    for name, amount, limit in steps:
        if limit is not None and before[name] + amount > limit:
            return Outcome(admitted=False, failed=name, usage=before)
    return Outcome(admitted=True, usage={name: before[name] + amount for name, amount, _ in steps})


def reserve(plan: Plan, state: State) -> tuple[Outcome, State]:
    """`check`, and when admitted the state with every charge and lease applied."""
    outcome = check(plan, state)
    if not outcome.admitted or plan.denied is not None:
        return outcome, state
    counters = dict(state.counters)
    for limit in plan.limits:
        counters[limit.charge_key] = counters.get(limit.charge_key, 0) + limit.amount
    leases = dict(state.leases)
    for lease in plan.leases:
        leases[lease.key] = leases.get(lease.key, 0) + 1
    return outcome, State(counters=counters, leases=leases)


def release(plan: Plan, state: State) -> State:
    """The state once the request's concurrency leases are given back."""
    leases = dict(state.leases)
    for lease in plan.leases:
        leases[lease.key] = max(0, leases.get(lease.key, 0) - 1)
    return State(counters=state.counters, leases=leases)


def evaluate(
    policies: Policies,
    facts: Facts,
    state: State,
    estimate: Estimate,
    *,
    count_only: Iterable[str] = (),
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S,
) -> Decision:
    """The decision for one request against `state`, as plan + reserve + decide would give."""
    planned = plan(policies, facts, estimate, count_only=count_only, lease_ttl_s=lease_ttl_s)
    if planned.denied is not None:
        return planned.denied
    return decide(planned, check(planned, state))
