"""The route stage end to end: a routed alias served by its strong or weak candidate, with the
saving recorded as the route stage's, seen through the official openai SDK."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.procs import Proc, admin, ledger_with, run_gateway, sdk_client

pytestmark = pytest.mark.e2e

CONFIG = """
store: {{backend: sqlite, path: "{work}/t.db"}}
ledger: {{spool_dir: "{work}/spool", flush_interval_s: 0.02}}
stages:
  auth: {{cache_ttl_s: 0}}
  policy: {{reload_interval_s: 0.2}}
models:
  gpt-4o:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{sim}/v1", api_key: k}}]
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k}}]
  smart:
    route: {{candidates: [gpt-4o, gpt-4o-mini], long_prompt_tokens: 200}}
  learned:
    route: {{candidates: [gpt-4o, gpt-4o-mini], router: "{router}"}}
"""
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def _train_router(work: Path) -> Path:
    """A router trained with `tollgate router train` on labels where the small model is as good
    on translations and fails on proofs."""
    lines = ['prompt,small,big']
    for i in range(60):
        hard = i % 2 == 0
        prompt = f"Prove the lemma {i} about primes formally." if hard else f"Translate greeting number {i} to French."
        lines.append(f'"{prompt}",{not hard},True')
    data = work / "labels.csv"
    data.write_text("\n".join(lines) + "\n")
    out = work / "router"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "router", "train", "--data", str(data), "--strong", "big",
         "--weak", "small", "--out", str(out), "--folds", "3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("route")
    config = CONFIG.format(work=work, sim=sim.url, router=_train_router(work))
    with run_gateway(work, config) as proc:
        yield proc


def _ask(client: openai.OpenAI, model: str = "smart", text: str | None = None, **extra: Any) -> Any:
    messages = [{"role": "user", "content": text or f"Name a prime number. ({uuid.uuid4().hex[:6]})"}]
    return client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=20, **extra)


def test_the_client_header_picks_the_candidate_and_a_weak_answer_saves_money(gw: Proc) -> None:
    client = sdk_client(gw)
    strong = _ask(client, extra_headers={"x-tollgate-route": "strong"})
    weak = _ask(client, extra_headers={"x-tollgate-route": "weak"})
    assert strong.headers["x-tollgate-route"] == "gpt-4o; reason=header"
    assert weak.headers["x-tollgate-route"] == "gpt-4o-mini; reason=header"
    assert strong.parse().model == "gpt-4o" and weak.parse().model == "gpt-4o-mini"
    assert weak.headers["x-tollgate-model"] == "gpt-4o-mini"
    # The baseline of a routed alias is its strongest candidate's price.
    assert Decimal(strong.headers["x-tollgate-saved-usd"]) == 0
    cost, baseline = Decimal(weak.headers["x-tollgate-cost-usd"]), Decimal(weak.headers["x-tollgate-baseline-usd"])
    assert 0 < cost < baseline and Decimal(weak.headers["x-tollgate-saved-usd"]) == baseline - cost
    row = ledger_with(gw, [weak.headers["x-request-id"]])[weak.headers["x-request-id"]]
    assert row["requested_model"] == "smart" and row["served_model"] == "gpt-4o-mini"
    assert {k: Decimal(v) for k, v in row["saved_by_stage"].items()} == {"route": baseline - cost}
    client.close()


def test_requests_that_need_the_strong_model_get_it(gw: Proc) -> None:
    client = sdk_client(gw)
    tools = _ask(client, tools=[WEATHER_TOOL])
    assert tools.headers["x-tollgate-route"] == "gpt-4o; reason=tools"
    schema = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}
    assert _ask(client, response_format=schema).headers["x-tollgate-route"] == "gpt-4o; reason=response_format"
    long_prompt = "Summarise this. " + "The quarterly review covered costs and latency. " * 40
    assert _ask(client, text=long_prompt).headers["x-tollgate-route"] == "gpt-4o; reason=long_prompt"
    # No router is configured for this alias: everything else goes to the strongest too.
    assert _ask(client).headers["x-tollgate-route"] == "gpt-4o; reason=no_router"
    client.close()


def test_a_pinned_model_is_never_rerouted(gw: Proc) -> None:
    client = sdk_client(gw)
    pinned = _ask(client, model="gpt-4o", extra_headers={"x-tollgate-route": "weak"})
    assert "x-tollgate-route" not in pinned.headers and pinned.parse().model == "gpt-4o"
    client.close()


def test_a_teams_policy_can_prefer_the_weak_candidate(gw: Proc) -> None:
    team = f"route-policy-{uuid.uuid4().hex[:6]}"
    client = sdk_client(gw, team)
    admin(gw, "PUT", f"/admin/policies/{team}", {"stages": {"route": {"prefer": "weak"}}})
    deadline = time.monotonic() + 10
    while (route := _ask(client).headers["x-tollgate-route"]) != "gpt-4o-mini; reason=policy":
        assert route == "gpt-4o; reason=no_router", route  # until the policy has reloaded
        assert time.monotonic() < deadline, "the team's policy never took effect"
        time.sleep(0.05)
    client.close()


def test_a_bad_route_header_is_a_400_naming_the_allowed_values(gw: Proc) -> None:
    client = sdk_client(gw)
    with pytest.raises(openai.BadRequestError) as bad:
        _ask(client, extra_headers={"x-tollgate-route": "cheapest"})
    assert bad.value.status_code == 400
    assert "x-tollgate-route" in str(bad.value) and "strong, weak, auto" in str(bad.value)
    client.close()


def test_a_trained_router_sends_what_the_small_model_handles_to_it(gw: Proc) -> None:
    client = sdk_client(gw)
    easy = _ask(client, model="learned", text="Translate greeting number 7 to French.")
    hard = _ask(client, model="learned", text="Prove the lemma 7 about primes formally.")
    assert easy.headers["x-tollgate-route"] == "gpt-4o-mini; reason=router"
    assert hard.headers["x-tollgate-route"] == "gpt-4o; reason=router"
    assert Decimal(easy.headers["x-tollgate-saved-usd"]) > 0 == Decimal(hard.headers["x-tollgate-saved-usd"])
    client.close()
