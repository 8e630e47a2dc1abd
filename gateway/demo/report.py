"""The demo's tables: requests, tokens, cost, baseline and savings by team and model, then by
stage, then spend against each budget.

The figures are the gateway's own reports (`GET /v1/spend`, docs/spend.md, and
`GET /admin/budgets`, docs/policies.md): what the demo prints is what an operator would get
from the admin API, and `tollgate budgets`, for the same traffic.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from gateway.accounting.spend import Group, totals
from gateway.pipeline import CANONICAL_ORDER
from gateway.stages.policy_report import budgets_table

TEAM_MODEL = ("team", "model")
STAGE = ("stage",)


@dataclass(frozen=True, slots=True)
class DemoSpend:
    by_team_model: list[Group]
    by_stage: list[Group]


def admin(base: str, key: str, path: str, body: dict[str, Any] | None = None, *, method: str = "") -> Any:
    """One call to a running gateway's admin API with the master key: POST with a body, else GET."""
    request = urllib.request.Request(
        base + path,
        data=orjson.dumps(body) if body is not None else None,
        method=method or ("POST" if body is not None else "GET"),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return orjson.loads(resp.read())


def fetch_spend(base_url: str, master_key: str) -> DemoSpend:
    """The two spend reports the demo prints, from a running gateway's admin API."""

    def get(group_by: tuple[str, ...]) -> list[Group]:
        query = urllib.parse.urlencode({"group_by": ",".join(group_by)})
        data: list[Group] = admin(base_url, master_key, f"/v1/spend?{query}")["data"]
        return data

    return DemoSpend(by_team_model=get(TEAM_MODEL), by_stage=get(STAGE))


def fetch_budgets(base_url: str, master_key: str) -> dict[str, Any]:
    """Spend against every budget and rate limit, as `tollgate budgets` gets it."""
    report: dict[str, Any] = admin(base_url, master_key, "/admin/budgets")
    return report


def print_budgets(report: Mapping[str, Any]) -> None:
    print("\nbudgets (tollgate budgets)")
    print(budgets_table(report), end="")


def totals_of(spend: DemoSpend) -> Group:
    return totals(spend.by_team_model, TEAM_MODEL)


def print_spend(spend: DemoSpend, *, elapsed_s: float) -> None:
    header = (
        f"{'team':<10} {'model':<24} {'reqs':>5} {'prompt tok':>11} {'compl tok':>10} {'cached':>7} "
        f"{'cost':>12} {'baseline':>12} {'saved':>12}"
    )
    print("\n" + header)
    print("-" * len(header))
    for group in spend.by_team_model:
        print(_line(group["team"] or "-", group["model"] or "-", group))
    print("-" * len(header))
    total = totals_of(spend)
    print(_line("total", "", total))
    if total["unpriced_requests"]:
        print(
            f"({total['unpriced_requests']} request(s) served by a model with no known price: not in 'cost')"
        )

    # Every stage that can save money is listed, so a stage that saved nothing shows $0.
    saved_by_stage = {stage: (Decimal(0), 0) for stage in CANONICAL_ORDER if stage != "auth"}
    for group in spend.by_stage:
        saved_by_stage[group["stage"]] = (Decimal(group["saved_usd"]), group["requests"])
    print("\nsavings by stage")
    for stage, (saved, requests) in saved_by_stage.items():
        print(f"  {stage:<16} {_money(saved):>12}  on {requests} request(s)")
    print(f"\n{total['requests']} requests in {elapsed_s:.1f}s")


def _line(team: str, model: str, figures: Mapping[str, Any]) -> str:
    cost, baseline, saved = (Decimal(figures[name]) for name in ("cost_usd", "baseline_usd", "saved_usd"))
    return (
        f"{team:<10} {model:<24} {figures['requests']:>5} {figures['prompt_tokens']:>11,} "
        f"{figures['completion_tokens']:>10,} {figures['cached_tokens']:>7,} "
        f"{_money(cost):>12} {_money(baseline):>12} {_money(saved):>12}"
    )


def _money(value: Decimal) -> str:
    return f"${value:,.6f}"
