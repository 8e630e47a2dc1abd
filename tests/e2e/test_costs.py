"""Every way a request can end is costed exactly once, to the token, at litellm's list price.

A real gateway in this process, the simulated provider as a real server, the official SDKs
as clients; expected figures are computed here from litellm's own price map and the usage
the client was shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import litellm
import openai
import orjson
import pytest

from gateway.pipeline import CANONICAL_ORDER, CallNext, RequestContext, build_chain
from gateway.providers.base import ProviderResponse
from tests.support.inproc import InProcGateway, inproc_gateway
from tests.support.procs import Proc, http
from tests.support.recorder import Recorder, recording

# The real exact cache is off: `AnswersFromMemory` stands in its place, and the repeated
# deterministic requests below must reach the upstream.
CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
router: {{retries: 0}}
stages: {{auth: {{cache_ttl_s: 0}}, exact_cache: {{enabled: false}}, semantic_cache: {{enabled: false}}, context: {{enabled: false}}, compress: {{enabled: false}}}}
models:
  gpt-4o:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{upstream}/v1", api_key: k, timeout_s: 5}}]
  # Straight to the simulator, not through the recorder (which hands a stream over whole).
  gpt-4o-direct:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{sim}/v1", api_key: k, timeout_s: 5}}]
  smart:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{upstream}/v1", api_key: k}}]
  mystery:
    deployments: [{{provider: openai_compat, model: mystery-model-9000, api_base: "{upstream}/v1", api_key: k}}]
  claude-haiku-4-5:
    deployments: [{{provider: anthropic, model: claude-haiku-4-5, api_base: "{sim}", api_key: k, timeout_s: 5}}]
"""
HI = [{"role": "user", "content": "Say something about caching."}]
# Over the 1,024-token minimum for provider prompt caching.
LONG = "The ledger is the product's proof. " * 200


def list_price(model: str, usage: dict[str, Any]) -> Decimal:
    """USD for an OpenAI-shaped usage object at litellm's list price, computed independently."""
    entry = litellm.model_cost[model]
    rate = lambda key, default=None: Decimal(repr(entry[key])) if entry.get(key) is not None else default  # noqa: E731
    inp, out = rate("input_cost_per_token"), rate("output_cost_per_token")
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0
    written = details.get("cache_creation_tokens") or 0
    fresh = usage["prompt_tokens"] - cached - written
    return (
        fresh * inp
        + cached * rate("cache_read_input_token_cost", inp)
        + written * rate("cache_creation_input_token_cost", inp)
        + usage["completion_tokens"] * out
    )


def anthropic_price(model: str, usage: anthropic.types.Usage) -> Decimal:
    entry = litellm.model_cost[model]
    rate = lambda key: Decimal(repr(entry[key]))  # noqa: E731
    return (
        usage.input_tokens * rate("input_cost_per_token")
        + (usage.cache_read_input_tokens or 0) * rate("cache_read_input_token_cost")
        + (usage.cache_creation_input_tokens or 0) * rate("cache_creation_input_token_cost")
        + usage.output_tokens * rate("output_cost_per_token")
    )


class AnswersFromMemory:
    """Stands where the exact cache will: answers a request marked `user: remembered` itself."""

    name = "exact_cache"

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        if ctx.request.body.get("user") != "remembered":
            ctx.record(self.name, detail={"status": "miss"})
            return await call_next(ctx)
        ctx.record(self.name, owns_remainder=True)
        usage = {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200}
        message = {"role": "assistant", "content": "remembered answer"}
        body = {"id": "chatcmpl-m", "object": "chat.completion", "created": 0, "model": "gpt-4o",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}  # fmt: skip
        return ProviderResponse.from_json(body)


@pytest.fixture(scope="module")
def recorder(sim: Proc) -> Iterator[Recorder]:
    with recording(sim.url) as rec:
        yield rec


@pytest.fixture(scope="module")
def gw(sim: Proc, recorder: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcGateway]:
    db = Path(tmp_path_factory.mktemp("costs")) / "t.db"
    with inproc_gateway(CONFIG.format(db=db, upstream=recorder.url, sim=sim.url)) as gateway:
        runtime = gateway.app.runtime
        assert runtime is not None
        stages = sorted([*runtime.stages, AnswersFromMemory()], key=lambda stage: CANONICAL_ORDER.index(stage.name))
        runtime.chain = build_chain(stages, runtime.dispatcher)
        yield gateway


@pytest.fixture(scope="module")
def key(gw: InProcGateway) -> str:
    return gw.team_key("costs")


@pytest.fixture(scope="module")
def client(gw: InProcGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def _headers(raw: Any) -> tuple[Decimal, Decimal, Decimal, str]:
    h = raw.headers
    return (Decimal(h["x-tollgate-cost-usd"]), Decimal(h["x-tollgate-baseline-usd"]),
            Decimal(h["x-tollgate-saved-usd"]), h["x-tollgate-request-id"])  # fmt: skip


def test_a_plain_answer_costs_the_list_price_of_its_usage(gw: InProcGateway, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI, max_tokens=40)
    usage = raw.parse().usage.model_dump()
    cost, baseline, saved, request_id = _headers(raw)
    assert cost == list_price("gpt-4o", usage) > 0
    assert (baseline, saved) == (cost, 0)
    row = gw.ledger_row(request_id)
    assert row["cost_usd"] == str(cost) or Decimal(row["cost_usd"]) == cost
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert (row["team"], row["outcome"], row["status"], row["usage_estimated"]) == ("costs", "ok", 200, False)


def test_cached_prompt_tokens_are_billed_once_at_the_cached_rate(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": LONG}, *HI]
    client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=20)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, max_tokens=20)
    usage = raw.parse().usage.model_dump()
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert 1024 <= cached <= usage["prompt_tokens"]
    cost, baseline, _, _ = _headers(raw)
    assert cost == list_price("gpt-4o", usage)
    # Cheaper than the same tokens uncached: counted once, at the lower rate.
    assert cost < list_price("gpt-4o", {**usage, "prompt_tokens_details": {}})
    # The provider would have cached it without the gateway too: nothing claimed for it.
    assert baseline == cost


def test_anthropic_cache_writes_and_reads_at_their_own_rates(gw: InProcGateway, client: openai.OpenAI) -> None:
    system = {"role": "system", "content": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]}
    seen = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="claude-haiku-4-5", max_tokens=30, messages=[system, *HI])
        usage = raw.parse().usage.model_dump()
        assert Decimal(raw.headers["x-tollgate-cost-usd"]) == list_price("claude-haiku-4-5", usage)
        seen.append((usage, gw.ledger_row(raw.headers["x-tollgate-request-id"])))
    (first, first_row), (second, second_row) = seen
    written = first["prompt_tokens_details"]["cache_creation_tokens"]
    assert written > 1024 and not first["prompt_tokens_details"]["cached_tokens"]
    assert second["prompt_tokens_details"]["cached_tokens"] == written
    # Anthropic's input_tokens excludes cache reads and writes; the ledger counts every input token once.
    assert first_row["prompt_tokens"] == second_row["prompt_tokens"] == first["prompt_tokens"] > written
    assert (first_row["cache_write_tokens"], second_row["cached_tokens"]) == (written, written)


def test_the_anthropic_wire_shows_and_costs_anthropic_usage(key: str, gw: InProcGateway) -> None:
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    raw = sdk.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=30, messages=HI)  # type: ignore[arg-type]
    usage = raw.parse().usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert Decimal(raw.headers["x-tollgate-cost-usd"]) == anthropic_price("claude-haiku-4-5", usage)


def _stream(gw: InProcGateway, key: str, body: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    status, headers, raw = http("POST", gw.v1 + "/chat/completions", body={**body, "stream": True},
                                headers={"authorization": f"Bearer {key}"})  # fmt: skip
    assert status == 200, raw
    return headers, raw


def _events(raw: bytes) -> tuple[list[Any], dict[str, str]]:
    """Data events, and the figures of the gateway's `: tollgate {...}` comment."""
    data, figures = [], {}
    blocks = raw.decode().split("\n\n")
    for block in blocks:
        if block.startswith(": tollgate "):
            figures = orjson.loads(block[len(": tollgate ") :])
        elif block.startswith("data: "):
            payload = block[6:]
            data.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return data, figures


def test_a_stream_with_include_usage_ends_with_its_cost_before_done(gw: InProcGateway, key: str) -> None:
    headers, raw = _stream(gw, key, {"model": "gpt-4o", "messages": HI, "stream_options": {"include_usage": True}})
    assert "x-tollgate-cost-usd" not in headers  # headers leave before the cost is known
    data, figures = _events(raw)
    usage = data[-2]["usage"]
    assert figures["cost_usd"] == str(list_price("gpt-4o", usage).normalize()) or Decimal(figures["cost_usd"]) == list_price("gpt-4o", usage)
    assert figures["request_id"] == headers["x-tollgate-request-id"]
    # The comment sits just before [DONE], so a client that stops at [DONE] has it.
    assert raw.endswith(b"\n\ndata: [DONE]\n\n") and raw.rindex(b": tollgate ") < raw.rindex(b"data: [DONE]")
    assert Decimal(gw.ledger_row(figures["request_id"])["cost_usd"]) == Decimal(figures["cost_usd"])


def test_a_stream_without_include_usage_is_costed_and_shows_no_usage(gw: InProcGateway, key: str) -> None:
    body = {"model": "gpt-4o", "messages": HI, "seed": 7}
    _, with_usage = _stream(gw, key, {**body, "stream_options": {"include_usage": True}})
    _, without = _stream(gw, key, body)
    data, figures = _events(without)
    chunks = [d for d in data if d != "[DONE]"]
    assert chunks and all("usage" not in chunk and chunk["choices"] for chunk in chunks)
    row = gw.ledger_row(figures["request_id"])
    assert row["usage_estimated"] is False  # the gateway asked the upstream for usage itself
    asked = _events(with_usage)[0][-2]["usage"]
    assert Decimal(figures["cost_usd"]) == list_price("gpt-4o", asked)
    assert row["completion_tokens"] == asked["completion_tokens"]


def test_a_client_that_hangs_up_mid_stream_pays_for_what_was_generated(gw: InProcGateway, key: str) -> None:
    body = {"model": "gpt-4o-direct", "messages": HI, "max_tokens": 400, "stream": True}
    url = urlsplit(gw.url)
    conn = HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=orjson.dumps(body), headers={
        "authorization": f"Bearer {key}", "content-type": "application/json", "x-sim-tokens-per-s": "40"})  # fmt: skip
    response = conn.getresponse()
    request_id = response.headers["x-tollgate-request-id"]
    received = b""
    while received.count(b"\n\n") < 8:
        received += response.read1(4096)
    conn.sock.close()  # hang up mid-stream
    conn.close()
    row = _wait_for_row(gw, request_id)
    assert (row["outcome"], row["usage_estimated"]) == ("disconnected", True)
    full = openai.OpenAI(base_url=gw.v1, api_key=key).chat.completions.create(model="gpt-4o", messages=HI, max_tokens=400)
    assert full.usage is not None
    assert row["prompt_tokens"] == full.usage.prompt_tokens  # counted the way the provider counts
    assert 8 <= row["completion_tokens"] < full.usage.completion_tokens
    usage = {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"]}
    assert Decimal(row["cost_usd"]) == list_price("gpt-4o", usage)


def _wait_for_row(gw: InProcGateway, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in gw.admin("GET", "/admin/ledger")["data"] if r["request_id"] == request_id]
        if rows or time.monotonic() > deadline:
            assert len(rows) == 1
            return rows[0]
        time.sleep(0.05)


def test_a_short_circuit_costs_nothing_and_saves_its_baseline(gw: InProcGateway, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI, user="remembered")
    cost, baseline, saved, request_id = _headers(raw)
    expected = list_price("gpt-4o", {"prompt_tokens": 120, "completion_tokens": 80})
    assert (cost, baseline, saved) == (0, expected, expected)
    row = gw.ledger_row(request_id)
    assert (row["outcome"], row["cache"], row["served_model"]) == ("short_circuit", "hit", None)
    assert {k: Decimal(v) for k, v in row["saved_by_stage"].items()} == {"exact_cache": expected}


def test_an_alias_is_priced_as_its_deployment_and_saves_nothing_by_itself(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=HI)
    cost, baseline, saved, _ = _headers(raw)
    assert raw.headers["x-tollgate-model"] == "gpt-4o-mini"
    assert cost == list_price("gpt-4o-mini", raw.parse().usage.model_dump())
    assert (baseline, saved) == (cost, 0)


def test_an_upstream_error_costs_nothing_and_is_in_the_ledger(gw: InProcGateway, client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HI, extra_headers={"x-sim-fault": "500"})
    row = gw.ledger_row(caught.value.response.headers["x-request-id"])
    assert (row["outcome"], row["status"], row["cost_usd"], row["error"]) == ("error", caught.value.status_code, "0", "upstream_error")


def test_a_stream_broken_midway_pays_for_what_was_generated(gw: InProcGateway, key: str) -> None:
    status, headers, raw = http("POST", gw.v1 + "/chat/completions",
                                body={"model": "gpt-4o", "messages": HI, "stream": True},
                                headers={"authorization": f"Bearer {key}", "x-sim-fault": "malformed"})  # fmt: skip
    assert status == 200 and b'"code":"upstream_error"' in raw
    row = gw.ledger_row(headers["x-tollgate-request-id"])
    assert (row["outcome"], row["usage_estimated"], row["error"]) == ("error", True, "upstream_error")
    usage = {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"]}
    assert row["prompt_tokens"] > 0 and Decimal(row["cost_usd"]) == list_price("gpt-4o", usage)


def test_a_model_with_no_known_price_is_marked_unknown_never_zero(gw: InProcGateway, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="mystery", messages=HI)
    assert raw.headers["x-tollgate-cost-usd"] == "unknown"
    row = gw.ledger_row(raw.headers["x-tollgate-request-id"])
    assert row["cost_usd"] is None and row["prompt_tokens"] > 0


def test_a_request_refused_before_a_team_is_known_leaves_no_ledger_row(gw: InProcGateway) -> None:
    sdk = openai.OpenAI(base_url=gw.v1, api_key="tg-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=HI)
    request_id = caught.value.response.headers["x-request-id"]
    assert not [r for r in gw.admin("GET", "/admin/ledger")["data"] if r["request_id"] == request_id]


def test_a_refusal_after_the_team_is_known_is_a_zero_cost_ledger_row(gw: InProcGateway, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HI)
    row = gw.ledger_row(caught.value.response.headers["x-request-id"])
    assert (row["team"], row["outcome"], row["status"], row["cost_usd"], row["baseline_usd"]) == ("costs", "refused", 404, "0", "0")
