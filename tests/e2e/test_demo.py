"""`tollgate demo`: starts its own simulated provider and gateway, drives a workload, prints costs.

Two teams get a policy through the admin API: marketing's small budget blocks some of its
requests (expected refusals, not failures), research's gpt-4o budget downgrades the rest of
its summaries to gpt-4o-mini (a saving of the policy stage), analytics' ticket classification
is deferred to provider batches (a saving of the defer stage).
"""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import pytest

pytestmark = pytest.mark.e2e

COLUMNS = ["team", "model", "reqs", "prompt tok", "compl tok", "cached", "cost", "baseline", "saved"]
STAGES = ["policy", "exact_cache", "semantic_cache", "route", "defer"]
BUDGET_COLUMNS = ["team", "policy", "window", "spent", "limit", "%", "resets at"]


def _money(text: str) -> Decimal:
    return Decimal(text.removeprefix("$").replace(",", ""))


def test_demo_prints_the_cost_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--requests", "40"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    lines = done.stdout.splitlines()

    header = next(line for line in lines if line.startswith("team"))
    positions = [header.find(column) for column in COLUMNS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), header

    start, total_at = lines.index(header), next(i for i, line in enumerate(lines) if line.startswith("total"))
    groups = [line.split() for line in lines[start + 2 : total_at - 1]]
    assert groups, "no team/model rows"
    total = lines[total_at].split()
    # total, reqs, prompt tok, compl tok, cached, cost, baseline, saved
    assert len(total) == 8, lines[total_at]
    assert int(total[1]) == 40 == sum(int(row[2]) for row in groups)
    assert int(total[2].replace(",", "")) > 0 and int(total[3].replace(",", "")) > 0
    cost, baseline, saved = (_money(value) for value in total[5:8])
    assert cost > 0
    # Each figure is rounded to the micro-dollar on its own.
    assert abs(saved - (baseline - cost)) <= Decimal("0.000002")
    assert {row[0] for row in groups} == {"support", "research", "analytics", "marketing"}

    section = lines.index("savings by stage")
    stage_lines = dict(line.split()[:2] for line in lines[section + 1 :] if re.match(r"^\s+\w+\s+\$", line))
    assert set(STAGES) <= set(stage_lines), stage_lines
    assert all(_money(value) >= 0 for value in stage_lines.values())
    # Research's summaries went on gpt-4o-mini once its gpt-4o budget was spent.
    assert _money(stage_lines["policy"]) > 0
    # Support's chats went to the small candidate of `assistant`; its agents' toolboxes were cut.
    assert _money(stage_lines["route"]) > 0 and _money(stage_lines["context"]) > 0

    budgets = lines.index("budgets (tollgate budgets)")
    header = lines[budgets + 1]
    positions = [header.find(column) for column in BUDGET_COLUMNS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), header
    rows = {
        line.split()[1]: line.split()
        for line in lines[budgets + 3 :]
        if line.startswith(("marketing", "research"))
    }
    assert {"team:marketing/budget:daily", "team:research/model:gpt-4o/budget:daily"} <= set(rows), rows
    spent, limit = (
        _money(rows["team:marketing/budget:daily"][3]),
        _money(rows["team:marketing/budget:daily"][4]),
    )
    assert 0 < spent <= limit == Decimal("0.001")

    summary = re.search(
        r"all 40 requests answered: (\d+) served \((\d+) of them deferred to provider batches\), "
        r"(\d+) refused by a budget",
        done.stdout,
    )
    assert summary, done.stdout[-2000:]
    served, deferred, refused = int(summary[1]), int(summary[2]), int(summary[3])
    assert served + refused == 40 and refused > 0
    # Analytics' ticket classification waited for provider batches, at their price.
    assert deferred > 0 and _money(stage_lines["defer"]) > 0
    assert "failed" not in done.stdout
