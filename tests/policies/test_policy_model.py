"""The policy document: what loads, and the exact error a platform engineer sees otherwise."""

from __future__ import annotations

import json
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies import PolicyError, cap_to_nano, format_usd, load_policies, policies_from_file, usd_to_nano

EXAMPLE = """
default:
  budgets:
    - {amount_usd: 10, period: day}
teams:
  research:
    budgets:
      - {name: daily, amount_usd: 50, period: day, timezone: Europe/Paris, alert_at: [0.8, 0.5]}
      - {name: monthly, amount_usd: 500, period: month, action: downgrade, downgrade_to: gpt-4o-mini}
    rate_limits: {requests_per_minute: 600, tokens_per_minute: 200000, concurrent: 20}
    models: {allow: ["gpt-4o*", "claude-*"], deny: ["o1*"]}
    per_key:
      key_abc123: {budgets: [{amount_usd: 5, period: day, window: rolling}]}
    per_user:
      "*": {budgets: [{amount_usd: 1, period: day}]}
      alice: {budgets: [{amount_usd: 3, period: day}], models: {deny: ["claude-*"]}}
    per_model:
      "claude-3.5-sonnet": {budgets: [{amount_usd: 20, period: week}]}
    stages:
      exact_cache: {enabled: true}
      semantic_cache: {enabled: false, threshold: 0.9}
"""


def team(**fields: Any) -> dict[str, Any]:
    return {"teams": {"research": fields}}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as info:
        load_policies(data)
    return str(info.value)


def test_the_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(EXAMPLE)
    policies = policies_from_file(path)
    research = policies.teams["research"]
    assert [b.label for b in research.budgets] == ["daily", "monthly"]
    assert research.budgets[0].alert_at == (Decimal("0.5"), Decimal("0.8"))
    assert research.budgets[0].cap_nano == 50_000_000_000
    assert research.per_user["alice"].models is not None
    assert research.stages["semantic_cache"] == {"enabled": False, "threshold": 0.9}
    assert policies.for_team("research") is research
    assert policies.for_team("sales") is policies.default


def test_the_example_in_the_policy_guide_loads() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
    example = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    policies = load_policies(yaml.safe_load(example))
    assert set(policies.teams) == {"research"}
    assert policies.default is not None


def test_json_file_loads_the_same(tmp_path: Path) -> None:
    data = {"teams": {"research": {"budgets": [{"amount_usd": "12.50", "period": "week"}]}}}
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(data))
    assert policies_from_file(path) == load_policies(data)
    assert policies_from_file(path).teams["research"].budgets[0].label == "weekly"


def test_an_empty_document_holds_no_limits(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert policies_from_file(path).for_team("anyone") is None
    assert load_policies(None) == load_policies({})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            team(budgets=[{"ammount_usd": 5, "period": "day"}]),
            "teams.research.budgets[0].amount_usd: Field required\nteams.research.budgets[0].ammount_usd: unknown key",
        ),
        (
            team(budgets=[{"amount_usd": 0, "period": "day"}]),
            "teams.research.budgets[0].amount_usd: Input should be greater than 0",
        ),
        (
            team(budgets=[{"amount_usd": -1, "period": "day"}]),
            "teams.research.budgets[0].amount_usd: Input should be greater than 0",
        ),
        (
            team(budgets=[{"amount_usd": "1e-10", "period": "day"}]),
            "teams.research.budgets[0].amount_usd: must be at least 0.000000001 (one nano-USD)",
        ),
        (
            team(budgets=[{"amount_usd": True, "period": "day"}]),
            "teams.research.budgets[0].amount_usd: an amount in USD, e.g. 50 or 12.5",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "fortnight"}]),
            "teams.research.budgets[0].period: Input should be 'hour', 'day', 'week', 'month' or 'total'",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "day", "timezone": "Europe/Pariss"}]),
            "teams.research.budgets[0].timezone: unknown timezone 'Europe/Pariss' (an IANA name such as Europe/Paris)",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "day", "action": "downgrade"}]),
            "teams.research.budgets[0]: action downgrade needs downgrade_to (the cheaper model alias)",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "day", "downgrade_to": "gpt-4o-mini"}]),
            "teams.research.budgets[0]: downgrade_to is only used with action: downgrade",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "day", "action": "shout"}]),
            "teams.research.budgets[0].action: Input should be 'block', 'downgrade', 'defer' or 'alert_only'",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "day", "alert_at": [80]}]),
            "teams.research.budgets[0].alert_at: 80 is not a fraction of the budget in (0, 1]; write 0.8 for 80%",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "day", "alert_at": [0.8, 0.8]}]),
            "teams.research.budgets[0].alert_at: a threshold is listed twice",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "total", "window": "rolling"}]),
            "teams.research.budgets[0]: a total budget never resets, so it has no rolling window",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "day", "window": "rolling", "timezone": "UTC"}]),
            "teams.research.budgets[0]: timezone applies to calendar windows only; a rolling window has no clock",
        ),
        (
            team(budgets=[{"amount_usd": 5, "period": "day"}, {"amount_usd": 9, "period": "day"}]),
            "teams.research.budgets: two budgets are named 'daily'; give each a distinct name",
        ),
        (
            team(budgets=[{"name": "a/b", "amount_usd": 5, "period": "day"}]),
            "teams.research.budgets[0].name: letters, digits, '_', '.' and '-' only, starting with a letter or digit",
        ),
        (
            team(rate_limits={"requests_per_minute": 0}),
            "teams.research.rate_limits.requests_per_minute: Input should be greater than 0",
        ),
        (
            team(rate_limits={"concurrent": 2.5}),
            "teams.research.rate_limits.concurrent: Input should be a valid integer",
        ),
        (
            team(rate_limits={"concurrent": True}),
            "teams.research.rate_limits.concurrent: Input should be a valid integer",
        ),
        (team(models={"allow": "gpt-4o"}), "teams.research.models.allow: Input should be a valid tuple"),
        (
            team(per_user={"": {}}),
            "teams.research.per_user: a user cannot be the empty string; use '*' for every user separately",
        ),
        (
            team(per_model={"claude-3.5": {"budgets": [{"amount_usd": 5}]}}),
            'teams.research.per_model["claude-3.5"].budgets[0].period: Field required',
        ),
        (
            team(per_model={"gpt-4o": {"models": {"deny": ["x"]}}}),
            "teams.research.per_model.gpt-4o.models: unknown key",
        ),
        (
            team(stages={"exact_cache": True}),
            "teams.research.stages.exact_cache: Input should be a valid dictionary",
        ),
        ({"team": {}}, "team: unknown key"),
        ({"default": {"keys": {}}}, "default.keys: unknown key"),
    ],
)
def test_a_bad_policy_names_its_dotted_path(data: dict[str, Any], message: str) -> None:
    assert error_of(data) == message


def test_a_downgrade_onto_a_model_the_team_may_not_use_is_refused_at_load() -> None:
    data = team(
        models={"allow": ["gpt-4o*"]},
        per_user={
            "*": {
                "budgets": [
                    {"amount_usd": 1, "period": "day", "action": "downgrade", "downgrade_to": "llama-3"}
                ]
            }
        },
    )
    assert error_of(data) == (
        "teams.research: per_user.*.budgets[0].downgrade_to: 'llama-3' is not among the allowed models "
        "('gpt-4o*') of this team's models"
    )


def test_every_error_is_listed_at_once() -> None:
    message = error_of(team(budgets=[{"amount_usd": 0, "period": "day"}], rate_limits={"rpm": 5}))
    assert message.splitlines() == [
        "teams.research.budgets[0].amount_usd: Input should be greater than 0",
        "teams.research.rate_limits.rpm: unknown key",
    ]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match=r"cannot read policies .*nope.yaml: No such file or directory"):
        policies_from_file(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("teams: [unclosed")
    with pytest.raises(PolicyError, match=r"broken.yaml: not valid YAML"):
        policies_from_file(broken)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{'teams': 1}")
    with pytest.raises(PolicyError, match=r"broken.json: not valid JSON"):
        policies_from_file(bad_json)
    listed = tmp_path / "list.yaml"
    listed.write_text("- research\n")
    with pytest.raises(PolicyError, match=r"list.yaml: the top level must be a mapping"):
        policies_from_file(listed)


def test_a_yaml_float_amount_is_read_as_the_decimal_written() -> None:
    policies = load_policies(team(budgets=[{"amount_usd": 0.1, "period": "day"}]))
    assert policies.teams["research"].budgets[0].amount_usd == Decimal("0.1")
    assert policies.teams["research"].budgets[0].cap_nano == 100_000_000


def test_money_rounds_reservations_up_and_caps_down() -> None:
    assert usd_to_nano(Decimal("0.0000000001")) == 1
    assert usd_to_nano(Decimal("1.0000000001")) == 1_000_000_001
    assert usd_to_nano(Decimal("2.5")) == 2_500_000_000
    assert usd_to_nano(Decimal("0.0000000019"), rounding=ROUND_FLOOR) == 1
    assert cap_to_nano(Decimal("1.0000000019")) == 1_000_000_001
    with pytest.raises(ValueError, match="not a finite amount"):
        usd_to_nano(Decimal("NaN"))


@pytest.mark.parametrize(
    ("nano", "text"),
    [
        (50_000_000_000, "$50.00"),
        (1_234_567_000_000, "$1,234.57"),
        (4_200_000, "$0.0042"),
        (100_000_000, "$0.10"),
        (0, "$0.00"),
        (-2_000_000_000, "-$2.00"),
    ],
)
def test_usd_formatting(nano: int, text: str) -> None:
    assert format_usd(nano) == text
