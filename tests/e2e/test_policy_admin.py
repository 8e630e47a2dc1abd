"""The policy admin API and CLI against real gateway processes.

Two gateways share one SQLite file (SQLite serialises writers across processes), so a
policy set through one instance must be enforced by the other within `reload_interval_s`.
The `priced` alias costs nothing per input token and $1000 per million output tokens, so a
request with `max_tokens: 10` may cost at most $0.01: budgets below are counted in those.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.support.procs import Proc, admin, http, run_gateway, team_key

pytestmark = pytest.mark.e2e

RELOAD_S = 0.5
CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
stages:
  auth: {{cache_ttl_s: 0}}
  policy: {{file: "{policies}", reload_interval_s: {reload}}}
models:
  priced:
    deployments:
      - {{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 5,
          price: {{input_per_mtok: 0, output_per_mtok: 1000}}}}
"""
POLICY_FILE = """
default:
  budgets: [{amount_usd: 1000, period: day}]
teams:
  filed:
    budgets: [{name: daily, amount_usd: 50, period: day}]
    rate_limits: {requests_per_minute: 600, concurrent: 4}
"""
WORST_CASE = Decimal("0.01")


@pytest.fixture(scope="module")
def pair(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    work: Path = tmp_path_factory.mktemp("policy-admin")
    (work / "policies.yaml").write_text(POLICY_FILE)
    config = CONFIG.format(
        db=work / "shared.db", policies=work / "policies.yaml", sim=sim.url, reload=RELOAD_S
    )
    with run_gateway(work, config) as first, run_gateway(work, config) as second:
        yield first, second


def _team(gw: Proc) -> tuple[str, str]:
    team = f"t-{uuid.uuid4().hex[:8]}"
    return team, team_key(gw, team)


def _chat(gw: Proc, key: str) -> tuple[int, dict[str, str], Any]:
    body = {
        "model": "priced",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Tell me a story."}],
    }
    return http("POST", gw.v1 + "/chat/completions", body=body, headers={"authorization": f"Bearer {key}"})


def _budget(amount: str, **extra: Any) -> dict[str, Any]:
    return {"budgets": [{"name": "daily", "amount_usd": float(amount), "period": "day", **extra}]}


def _cli(gw: Proc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--url", gw.url, "--master-key", gw.master_key],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _limits(gw: Proc, team: str) -> dict[str, dict[str, Any]]:
    report = admin(gw, "GET", f"/admin/budgets?team={team}")
    (entry,) = report["data"]
    return {limit["policy"]: limit for limit in entry["limits"]}


def test_a_put_budget_refuses_once_spent(pair: tuple[Proc, Proc]) -> None:
    gw, _ = pair
    team, key = _team(gw)
    put = admin(gw, "PUT", f"/admin/policies/{team}", _budget("0.03"))
    assert put["source"] == "api" and put["reload_interval_s"] == RELOAD_S

    spent = Decimal(0)
    for _ in range(3):
        status, headers, body = _chat(gw, key)
        assert status == 200, body
        spent += Decimal(headers["x-tollgate-cost-usd"])
    # Ten output tokens at most, so three requests spent more than $0.02: the worst case of a
    # fourth no longer fits in $0.03.
    assert Decimal("0.02") < spent <= 3 * WORST_CASE
    status, headers, body = _chat(gw, key)
    assert status == 429, body
    assert body["error"]["code"] == "budget_exceeded" and body["error"]["type"] == "insufficient_quota"
    policy = f"team:{team}/budget:daily"
    assert headers["x-tollgate-policy"] == policy and policy in body["error"]["message"]

    # The report reads the same counters the stage charged: exactly what the clients were billed.
    limit = _limits(gw, team)[policy]
    assert Decimal(limit["used"]) == spent and Decimal(limit["limit"]) == Decimal("0.03")
    assert limit["unit"] == "usd" and limit["window"] == "daily" and limit["action"] == "block"
    assert limit["fraction"] == pytest.approx(float(spent / Decimal("0.03")), abs=1e-6)
    assert limit["resets_at"].endswith("+00:00")


def test_get_list_delete_round_trip(pair: tuple[Proc, Proc]) -> None:
    gw, _ = pair
    team, _key = _team(gw)
    # A team with no entry of its own falls under the file's default.
    assert admin(gw, "GET", f"/admin/policies/{team}")["source"] == "default"
    document = {
        "budgets": [{"name": "daily", "amount_usd": 5, "period": "day", "alert_at": [0.5]}],
        "rate_limits": {"requests_per_minute": 100},
        "per_model": {"priced": {"budgets": [{"amount_usd": 2, "period": "week"}]}},
        "per_user": {"*": {"budgets": [{"amount_usd": 1, "period": "day"}]}},
        "per_key": {"*": {"budgets": [{"amount_usd": 3, "period": "day"}], "models": {"allow": ["priced"]}}},
    }
    admin(gw, "PUT", f"/admin/policies/{team}", document)
    assert admin(gw, "GET", f"/admin/policies/{team}") == {"team": team, "source": "api", "policy": document}

    listing = admin(gw, "GET", "/admin/policies")
    entries = {entry["team"]: entry for entry in listing["data"]}
    assert entries[team] == {"team": team, "source": "api", "policy": document}
    assert entries["filed"]["source"] == "file"
    assert entries["filed"]["policy"]["rate_limits"] == {"requests_per_minute": 600, "concurrent": 4}
    assert listing["default"] == {
        "source": "file",
        "policy": {"budgets": [{"amount_usd": 1000, "period": "day"}]},
    }

    # Each key of the team under per_key."*" is listed; end users under per_user."*" cannot be.
    (key_id,) = [key["id"] for key in admin(gw, "GET", f"/admin/keys?team={team}")["data"]]
    limits = _limits(gw, team)
    assert list(limits) == [
        f"team:{team}/budget:daily",
        f"team:{team}/rate:requests_per_minute",
        f"team:{team}/key:{key_id}/budget:daily",
        f"team:{team}/model:priced/budget:weekly",
    ]
    assert limits[f"team:{team}/rate:requests_per_minute"]["unit"] == "requests"
    (entry,) = admin(gw, "GET", f"/admin/budgets?team={team}")["data"]
    assert entry["source"] == "api" and any('per_user."*"' in note for note in entry["not_listed"])

    deleted = admin(gw, "DELETE", f"/admin/policies/{team}")
    assert deleted == {"team": team, "deleted": True, "source": "default"}
    assert admin(gw, "GET", f"/admin/policies/{team}")["source"] == "default"
    status, _, body = http("DELETE", f"{gw.url}/admin/policies/{team}", headers=_master(gw))
    assert status == 404 and body["error"]["code"] == "not_found"
    # A file team's entry is read, not removed, through the API.
    status, _, _ = http("DELETE", f"{gw.url}/admin/policies/filed", headers=_master(gw))
    assert status == 404


def test_budgets_lists_file_and_default_teams(pair: tuple[Proc, Proc]) -> None:
    gw, _ = pair
    team, key = _team(gw)
    assert _chat(gw, key)[0] == 200
    report = admin(gw, "GET", "/admin/budgets")
    entries = {entry["team"]: entry for entry in report["data"]}
    assert entries[team]["source"] == "default"
    (default_daily,) = entries[team]["limits"]
    assert default_daily["policy"] == f"team:{team}/budget:daily" and Decimal(default_daily["used"]) > 0
    filed = {limit["policy"]: limit for limit in entries["filed"]["limits"]}
    assert filed["team:filed/rate:concurrent"]["kind"] == "concurrent"
    assert (
        filed["team:filed/rate:concurrent"]["used"] == 0 and filed["team:filed/rate:concurrent"]["limit"] == 4
    )


def _master(gw: Proc) -> dict[str, str]:
    return {"authorization": f"Bearer {gw.master_key}"}


@pytest.mark.parametrize(
    ("document", "param", "words"),
    [
        ({"budgets": [{"amount_usd": -1, "period": "day"}]}, "budgets[0].amount_usd", "greater than 0"),
        ({"rate_limits": {"rpm": 5}}, "rate_limits.rpm", "unknown key"),
        ({"per_model": {"claude-3.5": {"budgets": [{"amount_usd": 1}]}}}, 'per_model["claude-3.5"].budgets[0].period', "Field required"),
        ({"budgets": [{"amount_usd": 1, "period": "day", "action": "downgrade"}]}, "budgets[0]", "downgrade_to"),
    ],
)  # fmt: skip
def test_an_invalid_policy_is_a_400_naming_the_path(
    pair: tuple[Proc, Proc], document: dict[str, Any], param: str, words: str
) -> None:
    gw, _ = pair
    team = f"t-{uuid.uuid4().hex[:8]}"
    status, _, body = http("PUT", f"{gw.url}/admin/policies/{team}", body=document, headers=_master(gw))
    assert status == 400, body
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_policy"
    assert error["param"] == param and param in error["message"] and words in error["message"]
    # Nothing was stored.
    assert admin(gw, "GET", f"/admin/policies/{team}")["source"] == "default"


def test_a_body_that_is_not_a_document_is_a_400(pair: tuple[Proc, Proc]) -> None:
    gw, _ = pair
    for raw in (b"[1, 2]", b"{not json"):
        status, _, body = http("PUT", f"{gw.url}/admin/policies/x", raw=raw, headers=_master(gw))
        assert status == 400 and body["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/admin/policies"), ("GET", "/admin/policies/filed"), ("PUT", "/admin/policies/filed"),
     ("DELETE", "/admin/policies/filed"), ("GET", "/admin/budgets")],
)  # fmt: skip
def test_only_the_master_key_may_use_it(pair: tuple[Proc, Proc], method: str, path: str) -> None:
    gw, _ = pair
    _, key = _team(gw)
    body = _budget("1") if method == "PUT" else None
    status, _, _ = http(method, gw.url + path, body=body)
    assert status == 401
    status, _, answer = http(method, gw.url + path, body=body, headers={"authorization": f"Bearer {key}"})
    assert status == 403 and answer["error"]["type"] == "permission_error"
    assert admin(gw, "GET", "/admin/policies/filed")["source"] == "file"


def _until(check: Any, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "not within the time allowed"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_policy_set_on_one_instance_is_enforced_by_the_other(pair: tuple[Proc, Proc]) -> None:
    first, second = pair
    team, key = _team(first)
    assert _chat(second, key)[0] == 200
    # Below one request's worst case: every request is refused.
    admin(first, "PUT", f"/admin/policies/{team}", _budget("0.005"))
    assert _chat(first, key)[0] == 429
    # The other instance re-reads the store at least every reload interval (plus a request's time).
    _until(lambda: _chat(second, key)[0] == 429, timeout=RELOAD_S + 5)
    status, headers, body = _chat(second, key)
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    assert headers["x-tollgate-policy"] == f"team:{team}/budget:daily"

    admin(first, "DELETE", f"/admin/policies/{team}")
    _until(lambda: _chat(second, key)[0] == 200, timeout=RELOAD_S + 5)


def test_the_cli_sets_gets_and_reports(pair: tuple[Proc, Proc], tmp_path: Path) -> None:
    gw, other = pair
    team, key = _team(gw)
    file = tmp_path / "policy.yaml"
    file.write_text(
        "budgets:\n  - {name: daily, amount_usd: 0.025, period: day}\nmodels: {allow: [priced]}\n"
    )
    done = _cli(gw, "policies", "set", "--team", team, "--file", str(file))
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["source"] == "api"
    for _ in range(2):
        assert _chat(gw, key)[0] == 200

    got = _cli(other, "policies", "get", "--team", team)
    assert got.returncode == 0, got.stderr
    assert orjson.loads(got.stdout) == {
        "team": team,
        "source": "api",
        "policy": yaml.safe_load(file.read_text()),
    }
    as_yaml = _cli(gw, "policies", "get", "--team", team, "--format", "yaml")
    assert as_yaml.stdout.startswith("#") and yaml.safe_load(as_yaml.stdout) == yaml.safe_load(
        file.read_text()
    )

    report = _cli(gw, "budgets", "--team", team, "--format", "json")
    assert report.returncode == 0, report.stderr
    (entry,) = orjson.loads(report.stdout)["data"]
    (limit,) = entry["limits"]
    assert limit["policy"] == f"team:{team}/budget:daily" and limit["limit"] == "0.025"
    assert Decimal("0.018") <= Decimal(limit["used"]) <= Decimal("0.02")

    table = _cli(gw, "budgets", "--team", team)
    assert table.returncode == 0, table.stderr
    header, _rule, row = table.stdout.splitlines()[:3]
    assert header.split() == ["team", "policy", "window", "spent", "limit", "%", "resets", "at"]
    assert row.split()[:5] == [team, f"team:{team}/budget:daily", "daily", row.split()[3], "$0.025"]

    listed = _cli(gw, "policies", "list")
    assert team in {entry["team"] for entry in orjson.loads(listed.stdout)["data"]}
    bad = tmp_path / "bad.json"
    bad.write_text('{"budgets": [{"amount_usd": 1, "period": "fortnight"}]}')
    refused = _cli(gw, "policies", "set", "--team", team, "--file", str(bad))
    assert refused.returncode != 0 and "budgets[0].period" in refused.stderr
    assert orjson.loads(_cli(gw, "policies", "delete", "--team", team).stdout)["deleted"] is True
