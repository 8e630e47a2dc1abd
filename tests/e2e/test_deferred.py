"""Deferred requests, one at a time: `x-tollgate-defer` gets a 202, and `GET /v1/deferred/{id}`
later gives exactly the online answer, costed at the provider's batch price.

Real processes: the simulated provider (its OpenAI Batches and Anthropic Message Batches
APIs answer after a short delay) and the gateway, driven with the official SDKs and plain HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import anthropic
import litellm
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion

from tests.support.deferred import defer, submissions, wait_answer
from tests.support.procs import Proc, admin, http, ledger_with, run_gateway, run_sim, serving, team_key

CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
stages:
  auth: {{cache_ttl_s: 0}}
  defer: {{window_s: 0.3, tick_s: 0.1, poll_interval_s: 0.1, poll_max_s: 0.3, online_margin_s: 1, lease_ttl_s: 1}}
models:
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k}}]
  text-embedding-3-small:
    deployments: [{{provider: openai_compat, model: text-embedding-3-small, api_base: "{sim}/v1", api_key: k}}]
  claude-haiku-4-5:
    deployments: [{{provider: anthropic, model: claude-haiku-4-5, api_base: "{sim}", api_key: k}}]
  sim/*:
    deployments: [{{provider: sim, model: "*"}}]
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with run_sim(tmp_path_factory.mktemp("sim"), "--batch-delay-s", "0.3") as proc:
        yield proc


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work = tmp_path_factory.mktemp("gw")
    with run_gateway(work, CONFIG.format(db=work / "t.db", sim=sim.url)) as proc:
        yield proc


@pytest.fixture(scope="module")
def key(gw: Proc) -> str:
    return team_key(gw, "nightly")


def _rate(model: str, name: str) -> Decimal:
    return Decimal(repr(litellm.model_cost[model][name]))


def batch_price(model: str, usage: dict[str, Any]) -> Decimal:
    return usage["prompt_tokens"] * _rate(model, "input_cost_per_token_batches") + usage[
        "completion_tokens"
    ] * _rate(model, "output_cost_per_token_batches")


def online_price(model: str, usage: dict[str, Any]) -> Decimal:
    return usage["prompt_tokens"] * _rate(model, "input_cost_per_token") + usage["completion_tokens"] * _rate(
        model, "output_cost_per_token"
    )


def test_a_deferred_chat_answers_later_as_online_at_the_batch_price(gw: Proc, sim: Proc, key: str) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Summarise the nightly report."}],
    }
    job_id = defer(gw, key, body, "2h")
    status, headers, answer = wait_answer(gw, key, job_id)

    assert status == 200, answer
    completion = ChatCompletion.model_validate(answer)  # the online response's shape, exactly
    assert completion.choices[0].message.content
    usage = answer["usage"]
    cost, baseline = Decimal(headers["x-tollgate-cost-usd"]), Decimal(headers["x-tollgate-baseline-usd"])
    assert cost == batch_price("gpt-4o-mini", usage)
    assert baseline == online_price("gpt-4o-mini", usage)
    assert Decimal(headers["x-tollgate-saved-usd"]) == baseline - cost > 0
    assert headers["x-tollgate-deferred"] == "batch"
    assert submissions(sim)[job_id] == 1

    row = ledger_with(gw, [job_id])[job_id]
    assert row["team"] == "nightly" and row["requested_model"] == "gpt-4o-mini"
    assert Decimal(row["cost_usd"]) == cost
    assert Decimal(row["saved_by_stage"]["defer"]) == baseline - cost
    assert row["prompt_tokens"] == usage["prompt_tokens"] and row["status"] == 200


def test_the_openai_sdk_sees_the_202_and_its_job(gw: Proc, key: str) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="quarterly numbers", extra_headers={"x-tollgate-defer": "true"}
    )
    assert raw.http_response.status_code == 202
    job = orjson.loads(raw.http_response.content)
    status, _, answer = wait_answer(gw, key, job["id"])
    assert status == 200 and answer["object"] == "list"
    assert len(answer["data"][0]["embedding"]) > 0


def test_an_anthropic_request_is_sent_in_a_message_batch_and_answers_on_its_wire(
    gw: Proc, sim: Proc, key: str
) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hello there"}],
        extra_headers={"x-tollgate-defer": "1h"},
    )  # fmt: skip
    assert raw.http_response.status_code == 202
    job_id = orjson.loads(raw.http_response.content)["id"]
    status, headers, answer = wait_answer(gw, key, job_id)
    assert status == 200, answer
    message = anthropic.types.Message.model_validate(answer)
    assert message.role == "assistant" and message.content[0].type == "text"
    assert submissions(sim)[job_id] == 1
    usage = {"prompt_tokens": message.usage.input_tokens, "completion_tokens": message.usage.output_tokens}
    assert Decimal(headers["x-tollgate-cost-usd"]) == batch_price("claude-haiku-4-5", usage)


def test_a_request_the_provider_fails_gets_its_error_as_the_answer(gw: Proc, key: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "please sim-batch-fail"}]}
    job_id = defer(gw, key, body)
    status, headers, answer = wait_answer(gw, key, job_id)
    assert status == 500
    assert answer["error"]["type"] == "server_error"
    assert headers["x-tollgate-cost-usd"] == "0"


def test_a_model_with_no_batch_api_is_answered_online_at_once(gw: Proc, key: str) -> None:
    status, headers, answer = http(
        "POST", f"{gw.v1}/chat/completions",
        body={"model": "sim/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}", "x-tollgate-defer": "24h"},
    )  # fmt: skip
    assert status == 200, answer
    assert answer["object"] == "chat.completion"
    assert "defer:online(no batch API)" in headers["x-tollgate-transforms"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [("soon", "must be a duration"), ("2001-01-01T00:00:00Z", "already past"), ("400d", "further away")],
)
def test_a_bad_deadline_is_a_400_naming_the_header(gw: Proc, key: str, value: str, problem: str) -> None:
    status, _, answer = http(
        "POST", f"{gw.v1}/chat/completions",
        body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}", "x-tollgate-defer": value},
    )  # fmt: skip
    assert status == 400
    assert answer["error"]["param"] == "x-tollgate-defer"
    assert problem in answer["error"]["message"]


def test_another_team_cannot_see_a_deferred_request(gw: Proc, key: str) -> None:
    job_id = defer(gw, key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "private"}]})
    other = team_key(gw, "someone-else")
    status, _, answer = http(
        "GET", f"{gw.url}/v1/deferred/{job_id}", headers={"authorization": f"Bearer {other}"}
    )
    assert status == 404 and job_id in answer["error"]["message"]
    status, _, _ = http("GET", f"{gw.url}/v1/deferred/{job_id}")
    assert status == 401


def test_a_webhook_is_called_once_with_the_answer(gw: Proc, key: str) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    done = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            calls.append((self.headers["webhook-id"], payload))
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Hook) as base:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "call me back"}]}
        job_id = defer(gw, key, body, headers={"x-tollgate-defer-webhook": f"{base}/done"})
        assert done.wait(30)
        wait_answer(gw, key, job_id)
        threading.Event().wait(1.0)  # time for a second call, were there one
    assert len(calls) == 1
    hook_id, payload = calls[0]
    assert hook_id == job_id == payload["id"]
    assert payload["status"] == "completed" and payload["response"]["status_code"] == 200
    assert payload["response"]["body"]["object"] == "chat.completion"


def test_a_queued_request_can_be_cancelled(tmp_path: Path, sim: Proc) -> None:
    slow = CONFIG.format(db=tmp_path / "t.db", sim=sim.url).replace("window_s: 0.3", "window_s: 600")
    with run_gateway(tmp_path, slow) as gw:
        key = team_key(gw, "nightly")
        job_id = defer(gw, key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "later"}]})
        status, _, answer = http(
            "POST", f"{gw.url}/v1/deferred/{job_id}/cancel", headers={"authorization": f"Bearer {key}"}
        )
        assert status == 410 and answer["error"]["code"] == "cancelled"
        status, _, answer = http(
            "GET", f"{gw.url}/v1/deferred/{job_id}", headers={"authorization": f"Bearer {key}"}
        )
        assert status == 410
        assert job_id not in submissions(sim)
        row = ledger_with(gw, [job_id])[job_id]
        assert row["cost_usd"] == "0" and row["error"] == "cancelled"


def test_a_budget_that_defers_sends_the_request_to_the_batch_path(tmp_path: Path, sim: Proc) -> None:
    with run_gateway(tmp_path, CONFIG.format(db=tmp_path / "t.db", sim=sim.url)) as gw:
        key = team_key(gw, "frugal")
        policy = {"budgets": [{"name": "daily", "amount_usd": 0.0000001, "period": "day", "action": "defer"}]}
        admin(gw, "PUT", "/admin/policies/frugal", policy)
        status, headers, answer = http(
            "POST", f"{gw.v1}/chat/completions",
            body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}"},
        )  # fmt: skip
        assert status == 202, answer
        assert headers["x-tollgate-deferred"] == "budget team:frugal/budget:daily"
        status, headers, answer = wait_answer(gw, key, answer["id"])
        assert status == 200
        spent = Decimal(headers["x-tollgate-cost-usd"])
        assert spent > 0
        # The batch cost is charged to the spent budget when it is known, not before.
        daily = admin(gw, "GET", "/admin/budgets?team=frugal")["data"][0]["limits"][0]
        assert Decimal(daily["used"]) == spent


def test_a_batch_that_expires_is_sent_again_then_online_before_the_deadline(tmp_path: Path) -> None:
    with (
        run_sim(tmp_path, "--batch-delay-s", "5", "--batch-expire-s", "0.2") as expiring,
        run_gateway(tmp_path, CONFIG.format(db=tmp_path / "t.db", sim=expiring.url)) as gw,
    ):
        key = team_key(gw, "nightly")
        job_id = defer(
            gw, key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "soon"}]}, "4s"
        )
        status, headers, answer = wait_answer(gw, key, job_id)
        assert status == 200 and answer["object"] == "chat.completion"
        assert headers["x-tollgate-deferred"] == "online"
        assert submissions(expiring)[job_id] >= 1
        usage = answer["usage"]
        assert Decimal(headers["x-tollgate-cost-usd"]) == online_price("gpt-4o-mini", usage)
