"""Budgets at their boundaries, on one real gateway (SQLite) in front of the simulated provider.

Every deployment here is priced at $1 a token (input and output alike), so a request's cost
is its token count and its worst case is `prompt + max_tokens` dollars: budgets can be filled
to the dollar. The simulator's answers are at least 22 words long, so a request with
`max_tokens=5` is always cut off at exactly 5 completion tokens.

Each test has a team of its own in the one policy file, written before the gateway starts
(one test rewrites it, to see a change applied without a restart).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from policies import Estimate, Facts, State, decide, load_policies, plan, reserve, usd_to_nano
from tests.support.policy import (
    DOLLAR_A_TOKEN,
    new_team_key,
    next_utc_midnights,
    policy_gateway,
    prompt_tokens,
    usd,
    write_policy,
)
from tests.support.procs import Proc, free_port, ledger_with

pytestmark = pytest.mark.e2e

HI: list[Any] = [{"role": "user", "content": "Say hi."}]
# The upstream model every alias below is served by; it bills the prompt with its tokenizer.
P = prompt_tokens("gpt-4o-mini", HI)
# What one `max_tokens=5` request on a $1-a-token alias costs, exactly.
C = P + 5

MODELS = """
  unit:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 10, price: {one}}}]
  cheap:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 10, price: {one}}}]
  dear:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{sim}/v1", api_key: k, timeout_s: 10, price: {three}}}]
  # Its only deployment listens nowhere: every request falls back to `dear`, three times the price.
  flaky:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "http://127.0.0.1:{dead}/v1", api_key: k, timeout_s: 10, price: {one}}}]
    fallbacks: [dear]
"""
THREE_DOLLARS = "{input_per_mtok: 3000000, output_per_mtok: 3000000}"


def _daily(amount: int, **extra: Any) -> dict[str, Any]:
    return {"amount_usd": amount, "period": "day", **extra}


POLICY: dict[str, Any] = {
    "teams": {
        "exact": {"budgets": [_daily(2 * C)]},
        "rolling": {"budgets": [{"amount_usd": 1, "period": "hour", "window": "rolling"}]},
        "lifetime": {"budgets": [{"amount_usd": 1, "period": "total"}]},
        "keys": {"budgets": [_daily(3 * C)], "per_key": {"*": {"budgets": [_daily(2 * C)]}}},
        "users": {
            "per_user": {"*": {"budgets": [_daily(C)]}, "alice": {"budgets": [_daily(2 * C)]}},
        },
        "stream": {"budgets": [_daily(3 * C)]},
        "fallback": {"budgets": [_daily(5 * C)]},
        "fallback-tight": {"budgets": [_daily(3 * C - 1)]},
        "downgrade": {
            "budgets": [
                {
                    "name": "soft",
                    "amount_usd": C,
                    "period": "day",
                    "action": "downgrade",
                    "downgrade_to": "cheap",
                },
                {"name": "hard", "amount_usd": 2 * C, "period": "day"},
            ],
        },
        "rules": {"models": {"allow": ["unit", "dear*"], "deny": ["dear"]}},
        "tokenizer": {"budgets": [_daily(40)]},
        "reload": {"per_key": {"*": {"budgets": [_daily(2 * C)]}}},
    }
}


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("policy-budgets")
    models = MODELS.format(sim=sim.url, one=DOLLAR_A_TOKEN, three=THREE_DOLLARS, dead=free_port())
    store = f'{{backend: sqlite, path: "{work / "t.db"}"}}'
    with policy_gateway(work, store=store, models=models, policy=POLICY) as proc:
        yield proc


class Client:
    """One team key's view of the gateway, through the official SDK."""

    def __init__(self, gw: Proc, team: str) -> None:
        self.key, self.key_id = new_team_key(gw, team)
        self.sdk = OpenAI(base_url=gw.v1, api_key=self.key, max_retries=0, timeout=30.0)

    def ok(self, model: str = "unit", max_tokens: int = 5, **kwargs: Any) -> Any:
        """A request that must be served; its raw response (headers) with the parsed body."""
        raw = self.sdk.chat.completions.with_raw_response.create(
            model=model, messages=kwargs.pop("messages", HI), max_tokens=max_tokens, **kwargs
        )
        assert raw.status_code == 200
        return raw

    def refused(self, model: str = "unit", max_tokens: int = 5, **kwargs: Any) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as caught:
            self.sdk.chat.completions.create(
                model=model, messages=kwargs.pop("messages", HI), max_tokens=max_tokens, **kwargs
            )
        return caught.value

    def close(self) -> None:
        self.sdk.close()


@pytest.fixture
def client(gw: Proc) -> Iterator[Any]:
    made: list[Client] = []

    def make(team: str) -> Client:
        made.append(Client(gw, team))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _budget_refusal(err: openai.APIStatusError, policy: str) -> str:
    """The refusal's message, once its shape says it is this policy's budget refusal."""
    assert err.status_code == 429
    assert (err.code, err.type) == ("budget_exceeded", "insufficient_quota")
    assert err.response.headers["x-should-retry"] == "false"
    assert err.response.headers["x-tollgate-policy"] == policy
    return _message(err)


def _message(err: openai.APIStatusError) -> str:
    assert isinstance(err.body, dict), err.body
    return str(err.body["message"])


def _cost(raw: Any) -> Decimal:
    return Decimal(raw.headers["x-tollgate-cost-usd"])


def test_the_encoding_matches_so_costs_are_exact() -> None:
    # The exact arithmetic below needs the gateway's count for the alias to be the one billed.
    assert prompt_tokens("unit", HI) == P


def test_a_request_that_exactly_fills_the_budget_is_admitted_and_the_next_is_refused(
    client: Any, gw: Proc
) -> None:
    team = client("exact")
    before = datetime.now(UTC)
    first = team.ok()
    assert _cost(first) == C

    # One dollar more than the room left: refused, and the message says why.
    over = team.refused(max_tokens=6)
    message = _budget_refusal(over, "team:exact/budget:daily")
    assert (
        f"Team 'exact' has spent {usd(C)} of its {usd(2 * C)} daily budget and this request may cost up to "
        f"{usd(C + 1)} (policy team:exact/budget:daily); it resets at "
    ) in message

    # Exactly the room left: admitted; the budget is now spent to the dollar.
    exact = team.ok()
    assert _cost(exact) == C

    last = team.refused(max_tokens=1)
    after = datetime.now(UTC)
    message = _budget_refusal(last, "team:exact/budget:daily")
    resets = last.response.headers["x-tollgate-policy-resets-at"]
    assert resets in next_utc_midnights(before, after)
    assert message == (
        f"Team 'exact' has spent {usd(2 * C)} of its {usd(2 * C)} daily budget "
        f"(policy team:exact/budget:daily); it resets at {resets}."
    )

    ids = [first.headers["x-request-id"], exact.headers["x-request-id"]]
    ids += [over.response.headers["x-request-id"], last.response.headers["x-request-id"]]
    rows = ledger_with(gw, ids)
    assert sum(Decimal(rows[i]["cost_usd"]) for i in ids) == 2 * C
    assert [(rows[i]["status"], rows[i]["outcome"]) for i in ids[2:]] == [(429, "refused")] * 2


def test_a_rolling_budget_says_when_its_window_frees_up(client: Any) -> None:
    team = client("rolling")
    before = datetime.now(UTC)
    err = team.refused()
    after = datetime.now(UTC)
    message = _budget_refusal(err, "team:rolling/budget:hourly")
    # 12 five-minute buckets: the window frees up at the next five-minute boundary (UTC epoch).
    bounds = {
        datetime.fromtimestamp((int(m.timestamp()) // 300 + 1) * 300, UTC).isoformat()
        for m in (before, after)
    }
    resets = err.response.headers["x-tollgate-policy-resets-at"]
    assert resets in bounds
    assert message == (
        f"Team 'rolling' has spent $0.00 of its $1.00 rolling 60-minute budget and this request may cost "
        f"up to {usd(C)} (policy team:rolling/budget:hourly); its rolling window next frees up at {resets}."
    )


def test_a_total_budget_says_it_never_resets(client: Any) -> None:
    err = client("lifetime").refused()
    message = _budget_refusal(err, "team:lifetime/budget:total")
    assert "x-tollgate-policy-resets-at" not in err.response.headers
    assert message == (
        f"Team 'lifetime' has spent $0.00 of its $1.00 total budget and this request may cost up to "
        f"{usd(C)} (policy team:lifetime/budget:total); it never resets."
    )


def test_a_key_budget_and_the_team_budget_are_both_enforced(client: Any) -> None:
    a, b = client("keys"), client("keys")
    a.ok()
    a.ok()
    # Key a has spent its $2C; the team ($3C) still has room, for key b only.
    err = a.refused()
    policy = f"team:keys/key:{a.key_id}/budget:daily"
    assert _budget_refusal(err, policy).startswith(
        f"Key '{a.key_id}' of team 'keys' has spent {usd(2 * C)} of its {usd(2 * C)} daily budget (policy {policy})"
    )
    b.ok()
    # Now the team's $3C is spent, though key b has spent only $C of its own $2C.
    err = b.refused()
    assert _budget_refusal(err, "team:keys/budget:daily").startswith(
        f"Team 'keys' has spent {usd(3 * C)} of its {usd(3 * C)} daily budget (policy team:keys/budget:daily)"
    )


def test_each_end_user_has_a_budget_of_their_own(client: Any) -> None:
    team = client("users")

    def as_user(name: str) -> dict[str, Any]:
        return {"extra_headers": {"x-tollgate-user": name}}

    team.ok(**as_user("bob"))
    err = team.refused(**as_user("bob"))
    assert _budget_refusal(err, "team:users/user:bob/budget:daily").startswith(
        f"User 'bob' of team 'users' has spent {usd(C)} of its {usd(C)} daily budget "
        "(policy team:users/user:bob/budget:daily); it resets at "
    )
    # A named entry replaces "*": alice has twice the room.
    team.ok(**as_user("alice"))
    team.ok(**as_user("alice"))
    _budget_refusal(team.refused(**as_user("alice")), "team:users/user:alice/budget:daily")
    # Without the header the body's `user` names the end user; with both, the header wins.
    team.ok(user="carol")
    _budget_refusal(team.refused(user="carol"), "team:users/user:carol/budget:daily")
    team.ok(user="carol", **as_user("dave"))
    _budget_refusal(team.refused(user="erin", **as_user("dave")), "team:users/user:dave/budget:daily")
    # A request that names no user has no user limits (and this team no others).
    for _ in range(3):
        team.ok()


def test_a_streamed_request_is_charged_its_cost(client: Any, gw: Proc) -> None:
    team = client("stream")
    # A stream the client did not ask usage for: the gateway still meters it.
    raw = team.sdk.chat.completions.with_raw_response.create(
        model="unit", messages=HI, max_tokens=5, stream=True
    )
    with raw.parse() as stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    row = ledger_with(gw, [raw.headers["x-request-id"]])[raw.headers["x-request-id"]]
    assert (row["stream"], row["outcome"], Decimal(row["cost_usd"])) == (True, "ok", Decimal(C))

    # The budget's room shrank by exactly that cost: $2C left, not a dollar more or less.
    err = team.refused(max_tokens=2 * C - P + 1)
    assert f"has spent {usd(C)} of its {usd(3 * C)} daily budget" in _budget_refusal(
        err, "team:stream/budget:daily"
    )
    # A stream that asks for usage, filling the budget exactly.
    raw = team.sdk.chat.completions.with_raw_response.create(
        model="unit", messages=HI, max_tokens=2 * C - P, stream=True, stream_options={"include_usage": True}
    )
    with raw.parse() as stream:
        usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usage) == 1
    spent = C + usage[0].prompt_tokens + usage[0].completion_tokens
    row = ledger_with(gw, [raw.headers["x-request-id"]])[raw.headers["x-request-id"]]
    assert Decimal(row["cost_usd"]) == spent - C
    err = team.refused(max_tokens=max(1, 3 * C - spent - P + 1))
    assert f"has spent {usd(spent)} of its {usd(3 * C)} daily budget" in _budget_refusal(
        err, "team:stream/budget:daily"
    )


def test_a_fallback_to_a_dearer_model_is_reserved_and_charged_at_its_price(client: Any, gw: Proc) -> None:
    team = client("fallback")
    raw = team.ok(model="flaky")
    assert raw.headers["x-tollgate-model"] == "gpt-4o"
    assert _cost(raw) == 3 * C
    row = ledger_with(gw, [raw.headers["x-request-id"]])[raw.headers["x-request-id"]]
    assert (row["requested_model"], row["served_model"], Decimal(row["cost_usd"])) == (
        "flaky",
        "gpt-4o",
        Decimal(3 * C),
    )
    # $2C of the $5C is left: one dollar more is refused, exactly that is admitted.
    err = team.refused(max_tokens=2 * C - P + 1)
    assert f"has spent {usd(3 * C)} of its {usd(5 * C)} daily budget" in _budget_refusal(
        err, "team:fallback/budget:daily"
    )
    team.ok(max_tokens=2 * C - P)

    # The worst case is priced at the fallback: $C on the primary would fit $3C - 1, $3C does not.
    err = client("fallback-tight").refused(model="flaky")
    assert f"and this request may cost up to {usd(3 * C)}" in _budget_refusal(
        err, "team:fallback-tight/budget:daily"
    )


def test_a_downgrade_serves_the_cheaper_model_and_says_so(client: Any, gw: Proc) -> None:
    team = client("downgrade")
    ids = []
    for _ in range(2):
        raw = team.ok(model="dear")
        # Served by `cheap` (gpt-4o-mini upstream) at $1 a token, not `dear` (gpt-4o) at $3.
        assert raw.headers["x-tollgate-model"] == "gpt-4o-mini"
        assert raw.headers["x-tollgate-downgraded-from"] == "dear"
        assert _cost(raw) == C
        assert Decimal(raw.headers["x-tollgate-saved-usd"]) == 2 * C
        ids.append(raw.headers["x-request-id"])
    rows = ledger_with(gw, ids)
    for request_id in ids:
        row = rows[request_id]
        assert (row["requested_model"], row["served_model"]) == ("dear", "gpt-4o-mini")
        assert {k: Decimal(v) for k, v in row["saved_by_stage"].items()} == {"policy": 2 * C}
    # The downgraded requests still count: the hard budget ($2C) is now spent and blocks.
    err = team.refused(model="dear")
    message = _budget_refusal(err, "team:downgrade/budget:hard")
    assert (
        f"Team 'downgrade' has spent {usd(2 * C)} of its {usd(2 * C)} daily budget (policy team:downgrade/budget:hard)"
        in message
    )


def test_a_model_rule_refuses_with_403_naming_the_rule(client: Any, gw: Proc) -> None:
    team = client("rules")
    err = team.refused(model="dear")
    assert (err.status_code, err.code, err.type) == (403, "model_not_allowed", "permission_error")
    assert _message(err) == (
        "Model 'dear' is not available to team 'rules': it is denied by the pattern 'dear' (policy team:rules/models)."
    )
    err = team.refused(model="cheap")
    assert (err.status_code, err.code) == (403, "model_not_allowed")
    assert _message(err) == (
        "Model 'cheap' is not available to team 'rules': it is not among the allowed models "
        "('unit', 'dear*') (policy team:rules/models)."
    )
    team.ok(model="unit")
    request_id = err.response.headers["x-request-id"]
    row = ledger_with(gw, [request_id])[request_id]
    assert (row["status"], row["outcome"], Decimal(row["cost_usd"])) == (403, "refused", Decimal(0))


def test_a_changed_policy_file_applies_without_a_restart(client: Any, gw: Proc) -> None:
    narrowed, other = client("reload"), client("reload")
    # A named key entry replaces "*" for that key only.
    document = copy.deepcopy(POLICY)
    document["teams"]["reload"]["per_key"][narrowed.key_id] = {"budgets": [_daily(C)]}
    write_policy(gw.log.parent / "policies.yaml", document)
    time.sleep(0.3)  # past the reload interval: the next request re-reads the file

    narrowed.ok()
    policy = f"team:reload/key:{narrowed.key_id}/budget:daily"
    assert f"has spent {usd(C)} of its {usd(C)} daily budget" in _budget_refusal(narrowed.refused(), policy)
    other.ok()
    other.ok()
    _budget_refusal(other.refused(), f"team:reload/key:{other.key_id}/budget:daily")


# This prompt is 10 tokens fewer in cl100k_base (what a name like `unit` is counted with) than in
# o200k_base (what gpt-4o-mini, the upstream, bills it with).
SKEWED: list[Any] = [{"role": "user", "content": "=== --- +++ " * 10}]


def test_the_worst_case_counts_the_prompt_as_the_upstream_bills_it(client: Any, gw: Proc) -> None:
    billed = prompt_tokens("gpt-4o-mini", SKEWED)
    assert prompt_tokens("unit", SKEWED) < billed, "the prompt no longer shows the tokenizer skew"
    assert billed + 1 > 40 >= prompt_tokens("unit", SKEWED) + 1
    team = client("tokenizer")
    # The request may cost `billed + 1` dollars: more than the $40 budget, so it must be refused.
    try:
        raw = team.ok(messages=SKEWED, max_tokens=1)
    except openai.APIStatusError as err:
        message = _budget_refusal(err, "team:tokenizer/budget:daily")
        assert f"this request may cost up to {usd(billed + 1)}" in message
        return
    row = ledger_with(gw, [raw.headers["x-request-id"]])[raw.headers["x-request-id"]]
    pytest.fail(f"admitted against a $40 budget and charged ${row['cost_usd']}: the reservation undercounted")


# --- rollover --------------------------------------------------------------------------------
# The gateway reads the wall clock, so a window's end cannot be reached in a test run; the pure
# layer takes the time as a fact, and its `reserve` is the meaning every store must match.

ROLLOVER = load_policies(
    {
        "teams": {
            "paris": {"budgets": [{"amount_usd": 10, "period": "day", "timezone": "Europe/Paris"}]},
            "rolling": {"budgets": [{"amount_usd": 10, "period": "day", "window": "rolling"}]},
        }
    }
)
TEN = Estimate(cost_nano=usd_to_nano(Decimal(10)), tokens=1)


def _spend_then_ask(team: str, spent_at: datetime, asked_at: datetime) -> str:
    outcome, state = reserve(plan(ROLLOVER, Facts(team, "unit", spent_at), TEN), State())
    assert outcome.admitted
    decision = decide(
        planned := plan(ROLLOVER, Facts(team, "unit", asked_at), TEN), reserve(planned, state)[0]
    )
    return decision.action


def test_a_calendar_day_rolls_over_at_midnight_in_its_timezone() -> None:
    # 23:59:59.999 in Paris (UTC+1 in November) is 22:59:59.999 UTC.
    spent = datetime(2026, 11, 21, 22, 59, 59, 999000, UTC)
    assert _spend_then_ask("paris", spent, spent) == "block"
    assert _spend_then_ask("paris", spent, datetime(2026, 11, 21, 23, 0, tzinfo=UTC)) == "allow"
    # Midnight UTC is not the Paris midnight: still the same day there.
    assert (
        _spend_then_ask(
            "paris", datetime(2026, 11, 21, 12, tzinfo=UTC), datetime(2026, 11, 21, 22, 59, tzinfo=UTC)
        )
        == "block"
    )


def test_a_rolling_day_frees_up_when_the_spend_leaves_its_24_hour_window() -> None:
    spent = datetime(2026, 11, 21, 10, 30, tzinfo=UTC)
    # The spend sits in the 10:00 bucket; 24 one-hour buckets back from 09:59 tomorrow still hold it.
    assert _spend_then_ask("rolling", spent, spent + timedelta(hours=23, minutes=29)) == "block"
    assert _spend_then_ask("rolling", spent, datetime(2026, 11, 22, 9, 59, 59, tzinfo=UTC)) == "block"
    assert _spend_then_ask("rolling", spent, datetime(2026, 11, 22, 10, 0, tzinfo=UTC)) == "allow"
