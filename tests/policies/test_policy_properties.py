"""Properties that must hold for any policy, state and sequence of requests.

The store here is a dict with the gateway store's contract (atomic all-or-nothing reserve
over summed buckets and leases), written independently of `policies.reserve`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import (
    Decision,
    Estimate,
    Facts,
    Outcome,
    Plan,
    PlannedLease,
    PlannedLimit,
    Policies,
    State,
    decide,
    evaluate,
    load_policies,
    plan,
    replan_for_downgrade,
)
from policies.windows import ROLLING_BUCKETS, calendar_span, calendar_window, rolling_span

PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
ZONES = sorted(available_timezones())
INSTANTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
MODELS = ("big-1", "big-2", "small")


@dataclass
class DictStore:
    counters: dict[str, int] = field(default_factory=dict)
    holders: dict[str, set[str]] = field(default_factory=dict)

    def reserve(self, limits: tuple[PlannedLimit, ...], leases: tuple[PlannedLease, ...]) -> Outcome:
        usage = {lim.name: sum(self.counters.get(key, 0) for key in lim.buckets) for lim in limits}
        usage |= {lease.name: len(self.holders.get(lease.key, set()) - {lease.holder}) for lease in leases}
        for lim in limits:
            if lim.limit is not None and usage[lim.name] + lim.amount > lim.limit:
                return Outcome(admitted=False, failed=lim.name, usage=usage)
        for lease in leases:
            if lease.limit is not None and usage[lease.name] + 1 > lease.limit:
                return Outcome(admitted=False, failed=lease.name, usage=usage)
        for lim in limits:
            self.counters[lim.charge_key] = self.counters.get(lim.charge_key, 0) + lim.amount
            usage[lim.name] += lim.amount
        for lease in leases:
            self.holders.setdefault(lease.key, set()).add(lease.holder)
            usage[lease.name] = len(self.holders[lease.key])
        return Outcome(admitted=True, usage=usage)

    def release(self, holder: str) -> None:
        for holders in self.holders.values():
            holders.discard(holder)


def run(
    policies: Policies, store: DictStore, facts: Facts, estimate: Estimate
) -> tuple[Plan, Outcome, Decision]:
    """The gateway's loop: reserve, and re-plan while the answer is a downgrade."""
    planned = plan(policies, facts, estimate)
    while True:
        outcome = store.reserve(planned.limits, planned.leases) if planned.denied is None else Outcome(False)
        decision = decide(planned, outcome if planned.denied is None else None)
        if decision.action != "downgrade":
            return planned, outcome, decision
        planned = replan_for_downgrade(policies, planned, decision)


# (a) ------------------------------------------------------------------------------------------

SIMULATED = load_policies(
    yaml.safe_load(
        """
        teams:
          t:
            budgets:
              - {name: day, amount_usd: 0.00005, period: day, timezone: Europe/Paris}
              - {name: hour, amount_usd: 0.00002, period: hour, window: rolling}
              - {name: all, amount_usd: 0.0002, period: total}
              - {name: soft, amount_usd: 0.00001, period: day, action: downgrade, downgrade_to: small}
            rate_limits: {requests_per_minute: 5, tokens_per_minute: 3000, concurrent: 3}
            per_user: {"*": {budgets: [{amount_usd: 0.00004, period: week, timezone: America/New_York}]}}
            per_model: {"big*": {budgets: [{amount_usd: 0.00003, period: month}], rate_limits: {requests_per_minute: 3}}}
        """
    )
)
STEPS = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 20), st.integers(0, 4000)),  # seconds since the previous request
        st.sampled_from((None, "ann", "bob")),
        st.sampled_from(MODELS),
        st.integers(0, 20_000),  # worst-case cost, nano-USD
        st.integers(0, 1500),  # worst-case tokens
        st.booleans(),  # whether the oldest request in flight finishes first
    ),
    max_size=60,
)


def _independent_window(limit: PlannedLimit, instant: datetime) -> object:
    """Which window an instant falls in, computed without the bucket scheme."""
    if limit.name.endswith("budget:day"):
        return instant.astimezone(ZoneInfo("Europe/Paris")).date()
    if "/user:" in limit.name:
        local = instant.astimezone(ZoneInfo("America/New_York"))
        return local.date() - timedelta(days=local.weekday())
    if limit.name.endswith("budget:monthly"):
        return (instant.year, instant.month)
    if limit.name.endswith("budget:all"):
        return "forever"
    return None


@PROPERTY
@given(start=INSTANTS, steps=STEPS)
def test_admitted_spend_never_exceeds_any_enforced_limit(start: datetime, steps: list[Any]) -> None:
    store = DictStore()
    in_flight: list[str] = []
    admitted: dict[tuple[str, object], int] = defaultdict(int)
    now = start
    for number, (wait, user, model, cost, tokens, finish_oldest) in enumerate(steps):
        now += timedelta(seconds=wait)
        if finish_oldest and in_flight:
            store.release(in_flight.pop(0))
        facts = Facts(team="t", model=model, now=now, user=user, request_id=f"r{number}")
        planned, outcome, decision = run(SIMULATED, store, facts, Estimate(cost, tokens))
        assert decision.allowed == outcome.admitted
        if not decision.allowed:
            continue
        in_flight.append(facts.request_id)
        for limit in planned.limits:
            if limit.limit is not None:
                assert outcome.usage[limit.name] <= limit.limit, limit.name
            window = _independent_window(limit, now)
            if window is not None and limit.action == "block":
                admitted[(limit.name, window)] += limit.amount
                assert admitted[(limit.name, window)] <= limit.cap, limit.name
        for lease in planned.leases:
            assert outcome.usage[lease.name] <= lease.cap


# (b) ------------------------------------------------------------------------------------------


@st.composite
def budgets(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    drawn = []
    for index in range(draw(st.integers(0, 3))):
        period = draw(st.sampled_from(["hour", "day", "week", "month", "total"]))
        budget: dict[str, Any] = {
            "name": f"{prefix}{index}",
            "amount_usd": Decimal(draw(st.integers(1, 10_000))) / 1_000_000_000,
            "period": period,
            "action": draw(st.sampled_from(["block", "downgrade", "defer", "alert_only"])),
            "alert_at": draw(st.lists(st.sampled_from(["0.5", "0.8", "0.9", "1"]), unique=True, max_size=3)),
        }
        if period != "total" and draw(st.booleans()):
            budget["window"] = "rolling"
        else:
            budget["timezone"] = draw(
                st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
            )
        if budget["action"] == "downgrade":
            budget["downgrade_to"] = draw(st.sampled_from(["small", "big-1"]))
        drawn.append(budget)
    return drawn


@st.composite
def limits(draw: st.DrawFn, prefix: str) -> dict[str, Any]:
    scope: dict[str, Any] = {"budgets": draw(budgets(prefix))}
    if draw(st.booleans()):
        scope["rate_limits"] = {
            "requests_per_minute": draw(st.integers(1, 5)),
            "tokens_per_minute": draw(st.integers(1, 2000)),
            "concurrent": draw(st.integers(1, 3)),
            "action": draw(st.sampled_from(["block", "defer", "alert_only"])),
        }
    return scope


@st.composite
def policy_documents(draw: st.DrawFn) -> dict[str, Any]:
    team: dict[str, Any] = draw(limits("team"))
    if draw(st.booleans()):
        team["models"] = {"deny": ["big-2"]}
    team["per_user"] = {"*": draw(limits("user")), "ann": draw(limits("ann"))}
    team["per_key"] = {"k1": draw(limits("key"))}
    team["per_model"] = {"big*": draw(limits("model"))}
    return {"teams": {"t": team}}


@PROPERTY
@given(document=policy_documents(), instant=INSTANTS, data=st.data())
def test_evaluate_agrees_with_plan_reserve_and_decide(
    document: dict[str, Any], instant: datetime, data: Any
) -> None:
    policies = load_policies(document)
    facts = Facts(
        team="t",
        model=data.draw(st.sampled_from(MODELS)),
        now=instant,
        user=data.draw(st.sampled_from((None, "ann", "bob"))),
        key_id=data.draw(st.sampled_from((None, "k1", "k2"))),
        request_id="me",
    )
    estimate = Estimate(data.draw(st.integers(0, 5000)), data.draw(st.integers(0, 500)))
    planned = plan(policies, facts, estimate)
    counters = {key: data.draw(st.integers(0, 12_000)) for lim in planned.limits for key in lim.buckets}
    holders = {
        lease.key: {f"other{i}" for i in range(data.draw(st.integers(0, 3)))} for lease in planned.leases
    }
    state = State(counters=counters, leases={key: len(held) for key, held in holders.items()})

    expected = evaluate(policies, facts, state, estimate)
    store = DictStore(counters=dict(counters), holders={key: set(held) for key, held in holders.items()})
    outcome = store.reserve(planned.limits, planned.leases) if planned.denied is None else None
    assert decide(planned, outcome) == expected

    if planned.denied is not None:
        assert expected.action == "block"
        return
    fits = all(
        lim.limit is None or sum(counters.get(k, 0) for k in lim.buckets) + lim.amount <= lim.limit
        for lim in planned.limits
    ) and all(lease.limit is None or len(holders[lease.key]) < lease.limit for lease in planned.leases)
    assert expected.allowed == fits
    if not expected.allowed:
        assert expected.policy is not None and f"(policy {expected.policy})" in expected.reasons[-1]


# (c) ------------------------------------------------------------------------------------------


@PROPERTY
@given(
    zone=st.sampled_from(ZONES),
    period=st.sampled_from(["hour", "day", "week", "month"]),
    instant=INSTANTS,
    offset=st.integers(0, 2**48),
)
def test_calendar_keys_are_stable_within_a_window_and_differ_across(
    zone: str, period: Any, instant: datetime, offset: int
) -> None:
    tz = ZoneInfo(zone)
    start, end = (t.astimezone(UTC) for t in calendar_window(period, tz, instant))
    assert start <= instant < end
    inside = start + timedelta(microseconds=offset % ((end - start) // timedelta(microseconds=1)))
    key = calendar_span(period, tz, instant).buckets
    assert calendar_span(period, tz, inside).buckets == key
    assert calendar_span(period, tz, end - timedelta(microseconds=1)).buckets == key
    following = calendar_span(period, tz, end).buckets
    assert following != key
    assert calendar_window(period, tz, end)[0].astimezone(UTC) == end  # windows are contiguous
    assert calendar_span(period, tz, start - timedelta(microseconds=1)).buckets != key


@PROPERTY
@given(period=st.sampled_from(list(ROLLING_BUCKETS)), instant=INSTANTS, other=INSTANTS)
def test_rolling_keys_are_stable_within_a_bucket_and_differ_across(
    period: Any, instant: datetime, other: datetime
) -> None:
    size_s, count = ROLLING_BUCKETS[period]
    same_bucket = ((instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=size_s)) == (
        (other - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=size_s)
    )
    first, second = rolling_span(size_s, count, instant), rolling_span(size_s, count, other)
    assert (first.buckets == second.buckets) == same_bucket
    assert (first.charge == second.charge) == same_bucket
    assert len(set(first.buckets)) == count


@PROPERTY
@given(instant=INSTANTS, offset=st.integers(0, 2**48), user=st.text(min_size=1, max_size=8))
def test_planned_bucket_keys_depend_only_on_scope_limit_and_window(
    instant: datetime, offset: int, user: str
) -> None:
    policies = load_policies(
        {
            "teams": {
                "t": {
                    "per_user": {
                        "*": {"budgets": [{"amount_usd": 1, "period": "day", "timezone": "Europe/Paris"}]}
                    }
                }
            }
        }
    )
    start, end = (t.astimezone(UTC) for t in calendar_window("day", ZoneInfo("Europe/Paris"), instant))
    inside = start + timedelta(microseconds=offset % ((end - start) // timedelta(microseconds=1)))

    def keys(now: datetime, who: str) -> tuple[str, ...]:
        return plan(policies, Facts(team="t", model="m", now=now, user=who), Estimate(1, 1)).limits[0].buckets

    assert keys(instant, user) == keys(inside, user)
    assert keys(instant, user) != keys(end, user)
    assert keys(instant, user) != keys(instant, user + "x")
    assert all(key.startswith("policy:") for key in keys(instant, user))


# (d) ------------------------------------------------------------------------------------------


@PROPERTY
@given(
    start=INSTANTS,
    action=st.sampled_from(["block", "alert_only"]),
    fractions=st.lists(st.sampled_from(["0.1", "0.25", "0.5", "0.8", "0.95", "1"]), unique=True, min_size=1),
    requests=st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 2_000)), max_size=60),
)
def test_each_threshold_crossing_is_reported_once_per_window(
    start: datetime, action: str, fractions: list[str], requests: list[tuple[int, int]]
) -> None:
    cap = 10_000
    document = {
        "amount_usd": Decimal(cap) / 1_000_000_000,
        "period": "day",
        "action": action,
        "alert_at": fractions,
    }
    policies = load_policies({"teams": {"t": {"budgets": [document]}}})
    store = DictStore()
    reported: dict[tuple[date, Decimal], int] = defaultdict(int)
    spent: dict[date, int] = defaultdict(int)
    now = start
    for wait, cost in requests:
        now += timedelta(seconds=wait * 10)
        day = now.date()
        _, outcome, decision = run(policies, store, Facts(team="t", model="m", now=now), Estimate(cost, 0))
        if outcome.admitted:
            spent[day] += cost
        for alert in decision.alerts:
            reported[(day, alert.fraction)] += 1
    thresholds = {Decimal(f) for f in fractions} | ({Decimal(1)} if action == "alert_only" else set())
    for day, total in spent.items():
        for fraction in thresholds:
            reached = total >= fraction * cap
            assert reported[(day, fraction)] == (1 if reached else 0), (day, fraction, total)
