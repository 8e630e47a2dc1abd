"""The demo's table: requests, tokens, cost, baseline cost and savings by stage."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from gateway.pipeline import CANONICAL_ORDER

_ZERO = Decimal(0)


def _money(value: Decimal) -> str:
    return f"${value:,.6f}"


def print_report(rows: list[dict[str, Any]], *, elapsed_s: float) -> None:
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "prompt": 0, "completion": 0, "cached": 0, "cost": _ZERO, "baseline": _ZERO}
    )
    by_stage: dict[str, Decimal] = {stage: _ZERO for stage in CANONICAL_ORDER if stage != "auth"}
    for row in rows:
        group = groups[(row["team"], row["requested_model"])]
        group["requests"] += 1
        group["prompt"] += row.get("prompt_tokens") or 0
        group["completion"] += row.get("completion_tokens") or 0
        group["cached"] += row.get("cached_prompt_tokens") or 0
        group["cost"] += Decimal(row["cost_usd"]) if row.get("cost_usd") else _ZERO
        group["baseline"] += Decimal(row["baseline_usd"]) if row.get("baseline_usd") else _ZERO
        for stage, saved in (row.get("saved_by_stage") or {}).items():
            by_stage[stage] = by_stage.get(stage, _ZERO) + Decimal(saved)

    header = f"{'team':<10} {'model':<24} {'reqs':>5} {'prompt tok':>11} {'compl tok':>10} {'cached':>7} {'cost':>12} {'baseline':>12} {'saved':>12}"
    print("\n" + header)
    print("-" * len(header))
    totals: dict[str, Any] = {"requests": 0, "prompt": 0, "completion": 0, "cached": 0, "cost": _ZERO, "baseline": _ZERO}
    for (team, model), g in sorted(groups.items()):
        print(
            f"{team:<10} {model:<24} {g['requests']:>5} {g['prompt']:>11,} {g['completion']:>10,} {g['cached']:>7,} "
            f"{_money(g['cost']):>12} {_money(g['baseline']):>12} {_money(g['baseline'] - g['cost']):>12}"
        )
        for key in totals:
            totals[key] += g[key]
    print("-" * len(header))
    t: dict[str, Any] = totals
    print(
        f"{'total':<10} {'':<24} {t['requests']:>5} {t['prompt']:>11,} {t['completion']:>10,} {t['cached']:>7,} "
        f"{_money(t['cost']):>12} {_money(t['baseline']):>12} {_money(t['baseline'] - t['cost']):>12}"
    )
    print("\nsavings by stage")
    for stage, saved in by_stage.items():
        print(f"  {stage:<16} {_money(saved):>12}")
    print(f"\n{t['requests']} requests in {elapsed_s:.1f}s")
