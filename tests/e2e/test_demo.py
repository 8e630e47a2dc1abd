"""`tollgate demo`: starts its own simulated provider and gateway, drives a workload, prints costs."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import pytest

pytestmark = pytest.mark.e2e

COLUMNS = ["team", "model", "reqs", "prompt tok", "compl tok", "cached", "cost", "baseline", "saved"]
STAGES = ["exact_cache", "semantic_cache", "route", "defer"]


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
    assert {row[0] for row in groups} == {"support", "research", "analytics"}

    section = lines.index("savings by stage")
    stage_lines = dict(line.split() for line in lines[section + 1 :] if re.match(r"^\s+\w+\s+\$", line))
    assert set(STAGES) <= set(stage_lines), stage_lines
    assert all(_money(value) >= 0 for value in stage_lines.values())
    assert "all 40 requests answered" in done.stdout
