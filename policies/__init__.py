"""Per-team policy model and a pure evaluator: state comes in, a decision goes out. No I/O.

    policies = policies_from_file("policies.yaml")
    planned = plan(policies, Facts(team, model, now, key_id, user, request_id), estimate)
    outcome = <the store's atomic reserve of planned.limits and planned.leases>
    decision = decide(planned, outcome)        # allow | block | downgrade | defer

docs/policies.md is the guide; `evaluate` does all three at once over a `State`.
"""

from policies.decide import Outcome, decide
from policies.decision import Alert, Decision, LimitKind, Verdict
from policies.evaluate import State, check, evaluate, release, reserve
from policies.loading import PolicyError, load_policies, policies_from_file
from policies.model import Budget, Limits, ModelRules, Policies, RateLimits, Scope, TeamPolicy
from policies.money import cap_to_nano, format_usd, nano_to_usd, usd_to_nano
from policies.plan import (
    DEFAULT_LEASE_TTL_S,
    Estimate,
    Facts,
    Plan,
    PlannedLease,
    PlannedLimit,
    Threshold,
    plan,
    replan_for_downgrade,
)

__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "Alert",
    "Budget",
    "Decision",
    "Estimate",
    "Facts",
    "LimitKind",
    "Limits",
    "ModelRules",
    "Outcome",
    "Plan",
    "PlannedLease",
    "PlannedLimit",
    "Policies",
    "PolicyError",
    "RateLimits",
    "Scope",
    "State",
    "TeamPolicy",
    "Threshold",
    "Verdict",
    "cap_to_nano",
    "check",
    "decide",
    "evaluate",
    "format_usd",
    "load_policies",
    "nano_to_usd",
    "plan",
    "policies_from_file",
    "release",
    "replan_for_downgrade",
    "reserve",
    "usd_to_nano",
]
