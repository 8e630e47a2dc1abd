"""plan → reserve → decide: scopes, model rules, actions, downgrades and the sentences users read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from policies import (
    Decision,
    Estimate,
    Facts,
    Outcome,
    Plan,
    Policies,
    State,
    decide,
    evaluate,
    load_policies,
    plan,
    release,
    replan_for_downgrade,
    reserve,
)

USD = 1_000_000_000
NOW = datetime(2026, 11, 21, 14, 0, 5, tzinfo=UTC)  # 15:00 in Paris
POLICIES = load_policies(
    yaml.safe_load(
        """
        teams:
          research:
            budgets:
              - {name: daily, amount_usd: 50, period: day, timezone: Europe/Paris, alert_at: [0.5, 0.8]}
              - {name: monthly, amount_usd: 500, period: month, action: downgrade, downgrade_to: gpt-4o-mini}
              - {name: lifetime, amount_usd: 5000, period: total, action: alert_only}
            rate_limits: {requests_per_minute: 600, tokens_per_minute: 200000, concurrent: 2}
            models: {allow: ["gpt-4o*", "claude-*"], deny: ["o1*", "gpt-4o-audio*"]}
            per_key:
              key_abc: {budgets: [{amount_usd: 5, period: day, window: rolling}], models: {allow: ["gpt-4o*"]}}
            per_user:
              "*": {budgets: [{amount_usd: 1, period: day}]}
              alice: {budgets: [{amount_usd: 3, period: day}]}
            per_model:
              "gpt-4o*": {budgets: [{amount_usd: 20, period: week, action: defer}]}
              gpt-4o: {rate_limits: {requests_per_minute: 10}}
            stages: {exact_cache: {enabled: true}}
          sales:
            budgets: [{amount_usd: 1, period: day, action: downgrade, downgrade_to: gpt-4o-mini}]
        default:
          budgets: [{amount_usd: 2, period: day}]
        """
    )
)


def facts(model: str = "gpt-4o", team: str = "research", **more: Any) -> Facts:
    return Facts(team=team, model=model, now=NOW, request_id="req-1", **more)


def estimate(usd: float = 0.01, tokens: int = 1000) -> Estimate:
    return Estimate(cost_nano=round(usd * USD), tokens=tokens)


def run(planned: Plan, state: State) -> tuple[Decision, State]:
    outcome, state = reserve(planned, state)
    return decide(planned, outcome), state


def test_team_key_user_and_model_scopes_all_apply_together() -> None:
    planned = plan(POLICIES, facts(key_id="key_abc", user="bob"), estimate())
    assert planned.denied is None
    assert [limit.name for limit in planned.limits] == [
        # Soft actions first, so a request a downgrade would fit is not blocked; narrow scopes first.
        "team:research/budget:monthly",
        "team:research/model:gpt-4o*/budget:weekly",
        "team:research/model:gpt-4o/rate:requests_per_minute",
        "team:research/user:bob/budget:daily",
        "team:research/key:key_abc/budget:daily",
        "team:research/budget:daily",
        "team:research/rate:requests_per_minute",
        "team:research/rate:tokens_per_minute",
        "team:research/budget:lifetime",
    ]
    assert [lease.name for lease in planned.leases] == ["team:research/rate:concurrent"]
    assert planned.leases[0].holder == "req-1"
    assert planned.stages == {"exact_cache": {"enabled": True}}
    by_name = {limit.name: limit for limit in planned.limits}
    assert by_name["team:research/budget:daily"].buckets == (
        "policy:team:research/budget:daily/day@20261120T230000Z",
    )
    assert by_name["team:research/key:key_abc/budget:daily"].charge_key == (
        "policy:team:research/key:key_abc/budget:daily/1h@20261121T140000Z"
    )
    # 24 hourly buckets, and the next one (charges stamped just past the boundary)
    assert len(by_name["team:research/key:key_abc/budget:daily"].buckets) == 25
    assert by_name["team:research/budget:lifetime"].limit is None  # alert_only counts, never refuses
    assert by_name["team:research/rate:requests_per_minute"].amount == 1
    assert by_name["team:research/rate:tokens_per_minute"].amount == 1000
    assert by_name["team:research/budget:daily"].amount == 10_000_000


def test_without_a_key_or_user_those_scopes_do_not_apply() -> None:
    names = [limit.name for limit in plan(POLICIES, facts("claude-3"), estimate()).limits]
    assert not any("/user:" in name or "/key:" in name or "/model:" in name for name in names)


def test_a_named_user_replaces_the_star_entry_and_each_user_counts_separately() -> None:
    def user_limit(user: str) -> tuple[str, int | None]:
        (limit,) = [
            lim for lim in plan(POLICIES, facts(user=user), estimate()).limits if "/user:" in lim.name
        ]
        return limit.name, limit.limit

    assert user_limit("alice") == ("team:research/user:alice/budget:daily", 3 * USD)
    assert user_limit("bob") == ("team:research/user:bob/budget:daily", 1 * USD)
    assert user_limit("carol") == ("team:research/user:carol/budget:daily", 1 * USD)


def test_identifiers_are_escaped_so_no_two_scopes_share_a_counter() -> None:
    tricky = plan(POLICIES, facts(user="bob/budget:daily"), estimate())
    names = [limit.name for limit in tricky.limits]
    assert "team:research/user:bob%2Fbudget%3Adaily/budget:daily" in names
    assert len(set(names)) == len(names)


def test_one_model_glob_entry_shares_its_counters_across_the_models_it_matches() -> None:
    def weekly(model: str) -> tuple[str, ...]:
        (limit,) = [
            lim for lim in plan(POLICIES, facts(model), estimate()).limits if "budget:weekly" in lim.name
        ]
        return limit.buckets

    assert weekly("gpt-4o") == weekly("gpt-4o-mini") == weekly("gpt-4o-2024-08-06")


def test_a_team_without_its_own_policy_gets_the_default_counted_for_itself() -> None:
    (limit,) = plan(POLICIES, facts(team="ops"), estimate()).limits
    assert limit.name == "team:ops/budget:daily"
    assert limit.limit == 2 * USD
    assert plan(Policies(), facts(team="ops"), estimate()).limits == ()
    assert evaluate(Policies(), facts(team="ops"), State(), estimate()).allowed


@pytest.mark.parametrize(
    ("model", "key_id", "reason"),
    [
        (
            "o1-mini",
            None,
            "Model 'o1-mini' is not available to team 'research': it is denied by the pattern 'o1*' "
            "(policy team:research/models).",
        ),
        (
            "gpt-4o-audio-preview",
            None,
            "Model 'gpt-4o-audio-preview' is not available to team 'research': it is denied by the pattern "
            "'gpt-4o-audio*' (policy team:research/models).",
        ),
        (
            "llama-3",
            None,
            "Model 'llama-3' is not available to team 'research': it is not among the allowed models "
            "('gpt-4o*', 'claude-*') (policy team:research/models).",
        ),
        (
            "claude-3",
            "key_abc",
            "Model 'claude-3' is not available to key 'key_abc' of team 'research': it is not among the "
            "allowed models ('gpt-4o*') (policy team:research/key:key_abc/models).",
        ),
    ],
)
def test_model_rules_refuse_naming_the_rule(model: str, key_id: str | None, reason: str) -> None:
    planned = plan(POLICIES, facts(model, key_id=key_id), estimate())
    assert planned.limits == () and planned.leases == ()
    decision = decide(planned, None)
    assert decision.action == "block"
    assert decision.reasons == (reason,)
    assert decision.policy is not None and decision.policy.endswith("/models")
    assert decision.resets_at is None


def test_allowed_models_pass_every_level() -> None:
    assert plan(POLICIES, facts("gpt-4o-mini", key_id="key_abc"), estimate()).denied is None
    assert plan(POLICIES, facts("claude-3"), estimate()).denied is None


def test_the_refusal_reads_like_a_sentence_that_names_the_policy_and_its_reset() -> None:
    spent = State(counters={"policy:team:research/budget:daily/day@20261120T230000Z": 50 * USD})
    decision = evaluate(POLICIES, facts("claude-3"), spent, estimate())
    assert decision.action == "block"
    assert decision.reasons == (
        "Team 'research' has spent $50.00 of its $50.00 daily budget (policy team:research/budget:daily); "
        "it resets at 2026-11-22T00:00:00+01:00.",
    )
    assert decision.policy == "team:research/budget:daily"
    assert decision.resets_at is not None and decision.resets_at.isoformat() == "2026-11-22T00:00:00+01:00"


def test_a_request_that_does_not_fit_what_is_left_says_so() -> None:
    almost = State(counters={"policy:team:research/budget:daily/day@20261120T230000Z": 49_990_000_000})
    decision = evaluate(POLICIES, facts("claude-3"), almost, estimate(0.02))
    assert decision.reasons == (
        "Team 'research' has spent $49.99 of its $50.00 daily budget and this request may cost up to $0.02 "
        "(policy team:research/budget:daily); it resets at 2026-11-22T00:00:00+01:00.",
    )


def test_rate_limit_refusals_say_when_the_rolling_window_frees_up() -> None:
    planned = plan(POLICIES, facts(), estimate())
    (rpm,) = [
        lim for lim in planned.limits if lim.name == "team:research/model:gpt-4o/rate:requests_per_minute"
    ]
    full = State(counters={rpm.buckets[0]: 4, rpm.buckets[-1]: 6})
    decision = evaluate(POLICIES, facts(), full, estimate())
    assert decision.action == "block"
    assert decision.reasons == (
        "Team 'research' has made 10 of its 10 requests per minute for model 'gpt-4o' "
        "(policy team:research/model:gpt-4o/rate:requests_per_minute); "
        "its rolling window next frees up at 2026-11-21T14:00:10+00:00.",
    )
    (tpm,) = [lim for lim in planned.limits if lim.name == "team:research/rate:tokens_per_minute"]
    busy = State(counters={tpm.charge_key: 199_500})
    assert evaluate(POLICIES, facts("claude-3"), busy, estimate()).reasons == (
        "Team 'research' has used 199,500 of its 200,000 tokens per minute and this request may use up to 1,000 "
        "(policy team:research/rate:tokens_per_minute); its rolling window next frees up at 2026-11-21T14:00:10+00:00.",
    )


def test_concurrency_is_a_lease_refused_past_the_limit_and_freed_on_release() -> None:
    state = State()
    first = plan(POLICIES, facts("claude-3"), estimate())
    decision, state = run(first, state)
    assert decision.allowed
    decision, state = run(first, state)
    assert decision.allowed
    third, after = run(first, state)
    assert third.action == "block"
    assert third.reasons == (
        "Team 'research' has 2 of its 2 concurrent requests in flight (policy team:research/rate:concurrent); "
        "one frees up when a request finishes.",
    )
    assert after == state  # a refusal charges nothing
    assert run(first, release(first, state))[0].allowed


def test_defer_hands_the_request_to_the_batch_path() -> None:
    planned = plan(POLICIES, facts(), estimate())
    (weekly,) = [lim for lim in planned.limits if "budget:weekly" in lim.name]
    decision = evaluate(POLICIES, facts(), State(counters={weekly.charge_key: 20 * USD}), estimate())
    assert decision.action == "defer"
    assert decision.policy == "team:research/model:gpt-4o*/budget:weekly"
    assert decision.reasons[0].startswith(
        "Team 'research' has spent $20.00 of its $20.00 weekly budget for models matching 'gpt-4o*'"
    )


def test_a_downgrade_re_plans_on_the_cheaper_model_and_keeps_counting_the_budget() -> None:
    monthly = "policy:team:research/budget:monthly/month@20261101T000000Z"
    state = State(counters={monthly: 500 * USD})
    first = plan(POLICIES, facts("claude-3"), estimate(0.5))
    decision, state = run(first, state)
    assert decision.action == "downgrade"
    assert decision.downgrade_to == "gpt-4o-mini"
    assert decision.reasons == (
        "Team 'research' has spent $500.00 of its $500.00 monthly budget (policy team:research/budget:monthly); "
        "it resets at 2026-12-01T00:00:00+00:00. Switching to 'gpt-4o-mini'.",
    )
    second = replan_for_downgrade(POLICIES, first, decision, estimate(0.05))
    assert second.facts.model == "gpt-4o-mini"
    (budget,) = [lim for lim in second.limits if lim.name == "team:research/budget:monthly"]
    assert budget.limit is None and budget.cap == 500 * USD  # counts, cannot refuse
    final, state = run(second, state)
    assert final.action == "allow"
    assert final.model == "gpt-4o-mini"
    assert final.downgraded_from == "claude-3"
    assert final.reasons == decision.reasons
    assert state.counters[monthly] == 500 * USD + 50_000_000
    # The hard stop still holds on the cheaper model.
    daily = "policy:team:research/budget:daily/day@20261120T230000Z"
    blocked, _ = run(second, State(counters={**state.counters, daily: 50 * USD}))
    assert blocked.action == "block"
    assert blocked.policy == "team:research/budget:daily"
    assert blocked.downgraded_from == "claude-3"
    assert blocked.reasons[0] == decision.reasons[0]


def test_a_request_already_on_the_downgrade_target_is_not_refused_by_that_budget() -> None:
    monthly = "policy:team:research/budget:monthly/month@20261101T000000Z"
    planned = plan(POLICIES, facts("gpt-4o-mini"), estimate())
    (budget,) = [lim for lim in planned.limits if lim.name == "team:research/budget:monthly"]
    assert budget.limit is None
    decision = evaluate(POLICIES, facts("gpt-4o-mini"), State(counters={monthly: 600 * USD}), estimate())
    assert decision.allowed
    assert decision.downgraded_from is None


def test_a_downgrade_onto_a_model_the_key_may_not_use_is_refused_with_both_reasons() -> None:
    state = State(counters={"policy:team:sales/budget:daily/day@20261121T000000Z": 1 * USD})
    key_rules = load_policies(
        {
            "teams": {
                "sales": {
                    "budgets": [
                        {
                            "amount_usd": 1,
                            "period": "day",
                            "action": "downgrade",
                            "downgrade_to": "gpt-4o-mini",
                        }
                    ],
                    "per_key": {"k1": {"models": {"deny": ["gpt-4o-mini"]}}},
                }
            }
        }
    )
    first = plan(key_rules, facts("gpt-4o", team="sales", key_id="k1"), estimate())
    decision, _ = run(first, state)
    second = replan_for_downgrade(key_rules, first, decision)
    assert second.denied is not None
    final = decide(second, None)
    assert final.action == "block"
    assert final.downgraded_from == "gpt-4o"
    assert len(final.reasons) == 2 and final.reasons[1].startswith(
        "Model 'gpt-4o-mini' is not available to key 'k1'"
    )


def test_only_a_downgrade_decision_can_be_re_planned() -> None:
    planned = plan(POLICIES, facts(), estimate())
    with pytest.raises(ValueError, match="only a downgrade decision"):
        replan_for_downgrade(POLICIES, planned, Decision(action="block", model="gpt-4o"))


def test_alerts_fire_on_the_reservation_that_crosses_each_threshold() -> None:
    daily = "policy:team:research/budget:daily/day@20261120T230000Z"
    state = State(counters={daily: 24 * USD})
    decision, state = run(plan(POLICIES, facts("claude-3"), estimate(1.5)), state)
    assert [(a.policy, str(a.fraction)) for a in decision.alerts] == [("team:research/budget:daily", "0.5")]
    assert decision.alerts[0].message == (
        "Team 'research' has spent $25.50 (50%) of its $50.00 daily budget (policy team:research/budget:daily)."
    )
    again, _ = run(plan(POLICIES, facts("claude-3"), estimate(1.5)), state)
    assert again.alerts == ()


def test_an_alert_only_budget_never_refuses_and_reports_its_breach() -> None:
    lifetime = "policy:team:research/budget:lifetime/total"
    state = State(counters={lifetime: 4_999 * USD})
    decision = evaluate(POLICIES, facts("claude-3"), state, estimate(2))
    assert decision.allowed
    assert [a.message for a in decision.alerts] == [
        "Team 'research' has spent $5,001.00 (100%) of its $5,000.00 total budget (policy team:research/budget:lifetime)."
    ]
    assert evaluate(POLICIES, facts("claude-3"), State(counters={lifetime: 9_999 * USD}), estimate(2)).allowed


def test_a_total_budget_says_it_never_resets() -> None:
    policies = load_policies({"teams": {"t": {"budgets": [{"amount_usd": 1, "period": "total"}]}}})
    decision = evaluate(
        policies, facts(team="t"), State(counters={"policy:team:t/budget:total/total": USD}), estimate()
    )
    assert decision.reasons == (
        "Team 't' has spent $1.00 of its $1.00 total budget (policy team:t/budget:total); it never resets.",
    )
    assert decision.resets_at is None


def test_decide_rejects_an_outcome_that_does_not_match_the_plan() -> None:
    planned = plan(POLICIES, facts("claude-3"), estimate())
    with pytest.raises(ValueError, match="not in the plan"):
        decide(planned, Outcome(admitted=False, failed="team:other/budget:daily"))
    with pytest.raises(ValueError, match="only counts and cannot refuse"):
        decide(planned, Outcome(admitted=False, failed="team:research/budget:lifetime"))
    with pytest.raises(ValueError, match="needs the store's outcome"):
        decide(planned, None)


def test_facts_and_estimates_are_checked() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Facts(team="t", model="m", now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="cannot be negative"):
        Estimate(cost_nano=-1, tokens=0)
