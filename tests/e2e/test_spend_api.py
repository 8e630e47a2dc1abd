"""Spend over real traffic: `GET /v1/spend` and `tollgate spend` against the shared gateway.

Two teams send requests with the official `openai` SDK; each response's `x-tollgate-cost-usd`
header is what the client was told it cost, and the spend report must add up to exactly the
same money. The session gateway serves other tests too, so every check filters to these teams.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest
from openai import OpenAI

from gateway.demo.report import fetch_spend
from tests.support.procs import Proc, admin, http, team_key

pytestmark = pytest.mark.e2e

MESSAGES: list[Any] = [{"role": "user", "content": "What does a gateway do?"}]
# Served by the simulator under a name no price list knows: answered, but not costed.
UNPRICED_MODEL = "sim/tollgate-unpriced-test-model"


@dataclass
class Traffic:
    """What each team was told its requests cost, header by header."""

    started: float
    costs: dict[str, list[Decimal]] = field(default_factory=dict)
    unpriced: dict[str, int] = field(default_factory=dict)

    @property
    def teams(self) -> list[str]:
        return sorted(self.costs)


def _send(gw: Proc, key: str, model: str) -> Decimal | None:
    with OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=60.0) as sdk:
        if model.startswith("text-embedding"):
            raw: Any = sdk.embeddings.with_raw_response.create(model=model, input=["one", "two"])
            assert raw.parse().data
        else:
            raw = sdk.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
            assert raw.parse().choices[0].message.content
        # A model with no known price is answered with no cost, or with the cost "unknown".
        header = raw.headers.get("x-tollgate-cost-usd")
        return None if header in (None, "unknown") else Decimal(header)


@pytest.fixture(scope="module")
def traffic(gateway: Proc) -> Traffic:
    suffix = uuid.uuid4().hex[:8]
    plan = {
        f"spend-a-{suffix}": ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o", UNPRICED_MODEL],
        f"spend-b-{suffix}": ["gpt-4o-mini", "text-embedding-3-small"],
    }
    done = Traffic(started=time.time())
    for team, models in plan.items():
        key = team_key(gateway, team)
        done.costs[team], done.unpriced[team] = [], 0
        for model in models:
            cost = _send(gateway, key, model)
            if cost is None:
                done.unpriced[team] += 1
            else:
                done.costs[team].append(cost)
    assert all(costs for costs in done.costs.values()), "no priced request: the check would prove nothing"
    assert list(done.unpriced.values()) == [1, 0], "the unpriced model was priced after all"
    return done


def _spend(gw: Proc, query: str) -> dict[str, Any]:
    result: dict[str, Any] = admin(gw, "GET", "/v1/spend?" + query)
    return result


def _ours(groups: list[dict[str, Any]], traffic: Traffic) -> dict[str, dict[str, Any]]:
    return {g["team"]: g for g in groups if g["team"] in traffic.teams}


# -- the admin API ----------------------------------------------------------------------------


def test_each_teams_spend_is_exactly_the_sum_of_its_cost_headers(gateway: Proc, traffic: Traffic) -> None:
    spend = _spend(gateway, "group_by=team")
    assert (spend["object"], spend["group_by"]) == ("spend", ["team"])

    ours = _ours(spend["data"], traffic)
    assert set(ours) == set(traffic.teams)
    for team in traffic.teams:
        group = ours[team]
        assert Decimal(group["cost_usd"]) == sum(traffic.costs[team], Decimal(0)), team
        assert group["requests"] == len(traffic.costs[team]) + traffic.unpriced[team]
        assert group["unpriced_requests"] == traffic.unpriced[team]
        assert group["errors"] == 0
        assert group["prompt_tokens"] > 0
        assert Decimal(group["baseline_usd"]) >= Decimal(group["cost_usd"])

    total = spend["total"]
    assert Decimal(total["cost_usd"]) == sum((Decimal(g["cost_usd"]) for g in spend["data"]), Decimal(0))
    assert total["requests"] == sum(g["requests"] for g in spend["data"])


def test_the_default_grouping_is_team_and_model(gateway: Proc, traffic: Traffic) -> None:
    team = traffic.teams[0]
    spend = _spend(gateway, f"team={team}")
    assert spend["group_by"] == ["team", "model"]
    by_model = {g["model"]: g["requests"] for g in spend["data"]}
    assert {g["team"] for g in spend["data"]} == {team}
    assert by_model == {"gpt-4o": 1, "gpt-4o-mini": 2, UNPRICED_MODEL: 1}


def test_the_time_window_selects_requests_by_when_they_finished(gateway: Proc, traffic: Traffic) -> None:
    team = traffic.teams[0]
    since = _spend(gateway, f"group_by=team&team={team}&start={traffic.started - 1:.3f}")["data"]
    assert [g["requests"] for g in since] == [4]
    assert _spend(gateway, f"group_by=team&team={team}&start={time.time() + 3600:.0f}")["data"] == []
    assert _spend(gateway, f"group_by=team&team={team}&end=2001-01-01")["data"] == []

    # A day range given as dates holds that whole UTC day, as the day grouping counts it.
    days = _spend(gateway, f"group_by=day&team={team}")["data"]
    assert sum(g["requests"] for g in days) == 4
    day = days[0]["day"]
    (that_day,) = _spend(gateway, f"group_by=day&team={team}&start={day}&end={day}")["data"]
    assert that_day == days[0]


def test_stage_grouping_reports_requests_and_savings_only(gateway: Proc, traffic: Traffic) -> None:
    spend = _spend(gateway, f"group_by=team,stage&team={traffic.teams[0]}")
    assert spend["group_by"] == ["team", "stage"]
    assert set(spend["total"]) == {"requests", "saved_usd"}
    for group in spend["data"]:
        assert set(group) == {"team", "stage", "requests", "saved_usd"}
        assert Decimal(group["saved_usd"]) >= 0


def test_csv_carries_the_same_figures(gateway: Proc, traffic: Traffic) -> None:
    status, headers, body = http(
        "GET", gateway.url + "/v1/spend?group_by=team&format=csv",
        headers={"authorization": f"Bearer {gateway.master_key}"},
    )  # fmt: skip
    assert status == 200, body
    assert headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(body.decode())))
    assert parsed and list(parsed[0])[:3] == ["team", "requests", "prompt_tokens"]
    ours = {r["team"]: r for r in parsed if r["team"] in traffic.teams}
    for team in traffic.teams:
        assert Decimal(ours[team]["cost_usd"]) == sum(traffic.costs[team], Decimal(0))
        assert int(ours[team]["unpriced_requests"]) == traffic.unpriced[team]


def test_spend_answers_only_to_the_master_key(gateway: Proc, api_key: str) -> None:
    status, _, body = http("GET", gateway.url + "/v1/spend", headers={"authorization": f"Bearer {api_key}"})
    assert status == 403, body
    assert body["error"]["type"] == "permission_error"
    status, _, body = http("GET", gateway.url + "/v1/spend")
    assert status == 401, body
    status, _, body = http("GET", gateway.url + "/v1/spend", headers={"authorization": "Bearer tg-not-a-key"})
    assert status == 401, body


@pytest.mark.parametrize(
    ("query", "param", "says"),
    [
        ("group_by=team,colour", "group_by", "unknown grouping 'colour'"),
        ("group_by=", "group_by", "comma-separated list"),
        ("group_by=team,team", "group_by", "twice"),
        ("start=last-tuesday", "start", "not unix seconds"),
        ("end=2026-02-30", "end", "not unix seconds"),
        ("start=2026-11-02&end=2026-10-01", "end", "after 'start'"),
        ("format=xml", "format", "'xml'"),
    ],
)
def test_a_bad_parameter_is_a_400_that_names_it(gateway: Proc, query: str, param: str, says: str) -> None:
    status, _, body = http(
        "GET", f"{gateway.url}/v1/spend?{query}", headers={"authorization": f"Bearer {gateway.master_key}"}
    )
    assert status == 400, body
    error = body["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, "invalid_value")
    assert says in error["message"] and f"'{param}'" in error["message"], error


def test_the_demo_report_reads_the_same_figures(gateway: Proc, traffic: Traffic) -> None:
    spend = fetch_spend(gateway.url, gateway.master_key)
    team = traffic.teams[1]
    ours = [g for g in spend.by_team_model if g["team"] == team]
    assert sorted(g["model"] for g in ours) == ["gpt-4o-mini", "text-embedding-3-small"]
    assert sum((Decimal(g["cost_usd"]) for g in ours), Decimal(0)) == sum(traffic.costs[team], Decimal(0))
    assert all(set(g) == {"stage", "requests", "saved_usd"} for g in spend.by_stage)


# -- the command line -------------------------------------------------------------------------


def _cli(gw: Proc, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "gateway",
        "spend",
        *args,
        "--url",
        gw.url,
        "--master-key",
        gw.master_key,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_cli_prints_json_csv_and_a_table(gateway: Proc, traffic: Traffic) -> None:
    team = traffic.teams[0]
    as_json = _cli(gateway, "--format", "json", "--by", "team", "--team", team)
    assert as_json.returncode == 0, as_json.stderr
    (group,) = orjson.loads(as_json.stdout)["data"]
    assert group["team"] == team and group["requests"] == 4
    assert Decimal(group["cost_usd"]) == sum(traffic.costs[team], Decimal(0))

    as_csv = _cli(gateway, "--format", "csv", "--by", "team,model", "--team", team)
    assert as_csv.returncode == 0, as_csv.stderr
    assert {r["model"] for r in csv.DictReader(io.StringIO(as_csv.stdout))} == {
        "gpt-4o",
        "gpt-4o-mini",
        UNPRICED_MODEL,
    }

    table = _cli(gateway, "--team", team)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["team", "model", "reqs"]
    assert lines[-1].split()[:2] == ["total", "4"]
    assert sum(line.startswith(team) for line in lines) == 3


def test_cli_shows_the_gateways_error(gateway: Proc) -> None:
    done = _cli(gateway, "--by", "team,colour")
    assert done.returncode != 0 and done.stdout == ""
    assert "400" in done.stderr and "group_by" in done.stderr
