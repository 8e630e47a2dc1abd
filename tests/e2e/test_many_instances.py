"""Two gateway processes sharing one real Redis: keys, revocations and the ledger are shared.

Verified keys are not cached (`cache_ttl_s: 0`), so a revocation on one instance takes
effect on the other at its next request.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.support.procs import Proc, admin, http, ledger, ledger_with, run_gateway

pytestmark = pytest.mark.e2e

MESSAGES: list[Any] = [{"role": "user", "content": "Why share state between gateways?"}]
# One Redis database of its own, so nothing else on the shared server is seen or counted.
REDIS_DB = 7
REDIS_CONFIG = """
store: {{backend: redis, url: "{redis}"}}
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  gpt-4o-mini:
    deployments:
      - {{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 5,
          price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
"""


@pytest.fixture(scope="module")
def pair(sim: Proc, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    config = REDIS_CONFIG.format(redis=url, sim=sim.url)
    work: Path = tmp_path_factory.mktemp("redis-pair")
    with run_gateway(work, config) as first, run_gateway(work, config) as second:
        yield first, second


def _team_key(gw: Proc) -> tuple[str, dict[str, Any]]:
    team = f"shared-{uuid.uuid4().hex[:8]}"
    admin(gw, "POST", "/admin/teams", {"id": team})
    return team, admin(gw, "POST", "/admin/keys", {"team": team, "name": "svc"})


def _chat(gw: Proc, key: str) -> str:
    with OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=60.0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        assert raw.parse().choices[0].message.content
        return str(raw.headers["x-request-id"])


def _refused(gw: Proc, key: str) -> bool:
    with OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=60.0) as sdk:
        try:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        except openai.AuthenticationError as err:
            return err.status_code == 401
    return False


def test_both_instances_run_on_redis(pair: tuple[Proc, Proc]) -> None:
    for gw in pair:
        status, _, body = http("GET", gw.url + "/readyz")
        assert (status, body["store"]) == (200, "redis")
    assert pair[0].url != pair[1].url


def test_a_key_created_on_one_instance_works_on_the_other(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    team, made = _team_key(a)

    assert team in {t["id"] for t in admin(b, "GET", "/admin/teams")["data"]}
    assert [k["id"] for k in admin(b, "GET", f"/admin/keys?team={team}")["data"]] == [made["id"]]
    request_id = _chat(b, made["key"])
    assert ledger(b)[request_id]["team"] == team


def test_revoking_on_one_instance_stops_the_key_on_the_other(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    _, made = _team_key(a)
    _chat(a, made["key"])
    _chat(b, made["key"])

    admin(b, "DELETE", f"/admin/keys/{made['id']}")

    assert _refused(a, made["key"])
    assert _refused(b, made["key"])


def test_revoking_a_team_on_one_instance_stops_it_on_the_other(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    team, made = _team_key(b)
    _chat(a, made["key"])

    admin(a, "DELETE", f"/admin/teams/{team}")

    assert _refused(b, made["key"])


def test_ledger_rows_from_both_instances_are_visible_from_either(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    team, made = _team_key(a)
    # Both instances write at the same time: every row still gets its own sequence number.
    targets = [a, b] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        request_ids = list(pool.map(lambda gw: _chat(gw, made["key"]), targets))

    # Each instance writes its rows off the response path: the other sees them moments later.
    seen_a, seen_b = ledger_with(a, request_ids), ledger_with(b, request_ids)
    assert set(seen_a) == set(seen_b)
    rows = [seen_a[request_id] for request_id in request_ids]
    assert {row["team"] for row in rows} == {team}
    assert len({row["seq"] for row in rows}) == len(request_ids)
    assert all(row["cost_usd"] and float(row["cost_usd"]) > 0 for row in rows)
