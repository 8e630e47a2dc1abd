"""The exact cache end to end: real gateway processes, the simulated provider, the official SDKs.

Entries are written after the client has its answer, so a test that needs one waits for it
with `only-if-cached` (which never calls a model) before asking again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.support.procs import (
    Proc,
    admin,
    gateways_on_redis,
    http,
    ledger_with,
    money,
    redis_db,
    run_gateway,
    sdk_client,
    team_key,
)

pytestmark = pytest.mark.e2e

CONFIG = """
store: {store}
router: {{retries: 0}}
ledger: {{spool_dir: "{spool}", flush_interval_s: 0.02}}
stages:
  auth: {{cache_ttl_s: 0}}
  policy: {{reload_interval_s: 0.2}}
models:
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 5}}]
  text-embedding-3-small:
    deployments: [{{provider: openai_compat, model: text-embedding-3-small, api_base: "{sim}/v1", api_key: k}}]
"""
MODEL = "gpt-4o-mini"
ONLY_IF_CACHED = {"x-tollgate-cache": "only-if-cached"}


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("exact-cache")
    store = f'{{backend: sqlite, path: "{work / "t.db"}"}}'
    with run_gateway(work, CONFIG.format(store=store, spool=work / "spool", sim=sim.url)) as proc:
        yield proc


def _question() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What does an exact cache store? ({uuid.uuid4().hex[:6]})"}]


def _ask(client: openai.OpenAI, messages: list[dict[str, str]], **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, **extra)  # type: ignore[arg-type]


def _wait_cached(client: openai.OpenAI, messages: list[dict[str, str]], **extra: Any) -> None:
    """Until the entry is written: `only-if-cached` answers 504 until then, and calls no model."""
    deadline = time.monotonic() + 10
    headers = {**extra.pop("extra_headers", {}), **ONLY_IF_CACHED}
    while True:
        try:
            _ask(client, messages, extra_headers=headers, **extra)
            return
        except openai.InternalServerError as err:
            assert err.status_code == 504, err
            assert time.monotonic() < deadline, "the answer was never cached"
            time.sleep(0.02)


def test_a_repeated_deterministic_request_is_a_hit_that_costs_nothing(gw: Proc) -> None:
    client = sdk_client(gw)
    question = _question()
    miss = _ask(client, question, temperature=0)
    assert miss.headers["x-tollgate-cache"] == "miss"
    cost, baseline, _ = money(miss)
    assert cost > 0 and baseline == cost
    _wait_cached(client, question, temperature=0)

    hit = _ask(client, question, temperature=0)
    assert hit.headers["x-tollgate-cache"] == "hit" and int(hit.headers["x-tollgate-cache-age"]) >= 0
    assert money(hit) == (Decimal(0), baseline, baseline)  # the whole baseline saved, by this stage
    first, again = miss.parse(), hit.parse()
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage == first.usage and again.id != first.id
    rows = ledger_with(gw, [miss.headers["x-request-id"], hit.headers["x-request-id"]])
    miss_row, hit_row = rows[miss.headers["x-request-id"]], rows[hit.headers["x-request-id"]]
    assert (miss_row["cache"], miss_row["outcome"]) == ("miss", "ok")
    assert (hit_row["cache"], hit_row["outcome"], hit_row["served_model"]) == ("hit", "short_circuit", None)
    assert hit_row["cost_usd"] == "0" and Decimal(hit_row["saved_usd"]) == baseline
    assert {k: Decimal(v) for k, v in hit_row["saved_by_stage"].items()} == {"exact_cache": baseline}
    client.close()


def test_a_seed_makes_a_request_cacheable_and_embeddings_always_are(gw: Proc) -> None:
    client = sdk_client(gw)
    question = _question()
    _ask(client, question, seed=11, temperature=0.8)
    _wait_cached(client, question, seed=11, temperature=0.8)
    assert _ask(client, question, seed=11, temperature=0.8).headers["x-tollgate-cache"] == "hit"
    assert _ask(client, question, seed=12, temperature=0.8).headers["x-tollgate-cache"] == "miss"

    text = [f"embed me {uuid.uuid4().hex}"]
    first = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
    deadline = time.monotonic() + 10
    while (
        second := client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
    ).headers["x-tollgate-cache"] != "hit":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    assert Decimal(second.headers["x-tollgate-cost-usd"]) == 0
    client.close()


def _stream_text(client: openai.OpenAI, messages: list[dict[str, str]], **extra: Any) -> tuple[str, Any, Any]:
    ask: dict[str, Any] = {"model": MODEL, "messages": messages, "stream": True, **extra}
    raw = client.chat.completions.with_raw_response.create(stream_options={"include_usage": True}, **ask)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage, raw.headers


def test_a_streamed_hit_is_a_valid_stream_for_the_sdk_from_a_json_answer(gw: Proc) -> None:
    client = sdk_client(gw)
    question = _question()
    answer = _ask(client, question, temperature=0).parse()
    _wait_cached(client, question, temperature=0)
    text, usage, headers = _stream_text(client, question, temperature=0)
    assert headers["x-tollgate-cache"] == "hit"
    assert text == answer.choices[0].message.content and usage == answer.usage
    # Without include_usage the replay carries no usage chunk, as an upstream would not.
    stream: Any = client.chat.completions.create(model=MODEL, messages=question, temperature=0, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == answer.choices[0].finish_reason
    client.close()


def test_a_json_request_hits_an_entry_a_stream_wrote(gw: Proc) -> None:
    client = sdk_client(gw)
    question = _question()
    text, usage, headers = _stream_text(client, question, temperature=0)
    assert headers["x-tollgate-cache"] == "miss"
    _wait_cached(client, question, temperature=0)
    hit = _ask(client, question, temperature=0)
    assert hit.headers["x-tollgate-cache"] == "hit"
    assert hit.parse().choices[0].message.content == text and hit.parse().usage == usage
    client.close()


def test_the_same_question_from_two_teams_never_shares_an_entry(gw: Proc) -> None:
    alpha, beta = (
        sdk_client(gw, f"alpha-{uuid.uuid4().hex[:6]}"),
        sdk_client(gw, f"beta-{uuid.uuid4().hex[:6]}"),
    )
    question = _question()
    _ask(alpha, question, temperature=0)
    _wait_cached(alpha, question, temperature=0)
    assert _ask(alpha, question, temperature=0).headers["x-tollgate-cache"] == "hit"
    with pytest.raises(openai.InternalServerError) as caught:
        _ask(beta, question, temperature=0, extra_headers=ONLY_IF_CACHED)
    assert caught.value.status_code == 504
    other = _ask(beta, question, temperature=0)
    assert other.headers["x-tollgate-cache"] == "miss" and money(other)[0] > 0
    alpha.close()
    beta.close()


def test_only_if_cached_with_nothing_cached_is_a_504_cache_miss(gw: Proc) -> None:
    key = team_key(gw, f"xc-{uuid.uuid4().hex[:8]}")
    body = {"model": MODEL, "messages": _question(), "temperature": 0}
    headers = {"authorization": f"Bearer {key}", **ONLY_IF_CACHED}
    status, response_headers, error = http("POST", gw.v1 + "/chat/completions", body=body, headers=headers)
    assert status == 504
    assert error == {"error": {
        "message": "No cached answer for this request, and the request asked for a cached answer only (only-if-cached).",
        "type": "invalid_request_error", "param": None, "code": "cache_miss"}}  # fmt: skip
    assert response_headers["x-should-retry"] == "false" and response_headers["x-tollgate-cache"] == "miss"
    # A sampled request is never cached by default, so it cannot be answered from the cache either.
    status, _, error = http(
        "POST", gw.v1 + "/chat/completions", body={**body, "temperature": 0.5}, headers=headers
    )
    assert (status, error["error"]["code"]) == (504, "cache_miss")


def test_no_store_no_cache_and_bypass(gw: Proc) -> None:
    client = sdk_client(gw)
    question = _question()
    stored_not = _ask(client, question, temperature=0, extra_headers={"cache-control": "no-store"})
    assert stored_not.headers["x-tollgate-cache"] == "bypass"
    time.sleep(0.3)
    with pytest.raises(openai.InternalServerError):
        _ask(client, question, temperature=0, extra_headers=ONLY_IF_CACHED)

    _ask(client, question, temperature=0)
    _wait_cached(client, question, temperature=0)
    for headers, status in (({"cache-control": "no-cache"}, "refresh"), ({"x-tollgate-cache": "refresh"}, "refresh"),
                            ({"x-tollgate-cache": "bypass"}, "bypass")):  # fmt: skip
        fresh = _ask(client, question, temperature=0, extra_headers=headers)
        assert fresh.headers["x-tollgate-cache"] == status and money(fresh)[0] > 0  # the model was called
    assert _ask(client, question, temperature=0).headers["x-tollgate-cache"] == "hit"
    assert (
        _ask(client, question, temperature=0, extra_headers=ONLY_IF_CACHED).headers["x-tollgate-cache"]
        == "hit"
    )
    client.close()


def test_max_age_refuses_an_older_entry(gw: Proc) -> None:
    client = sdk_client(gw)
    question = _question()
    _ask(client, question, temperature=0)
    _wait_cached(client, question, temperature=0)
    time.sleep(1.1)
    assert (
        _ask(client, question, temperature=0, extra_headers={"cache-control": "max-age=60"}).headers[
            "x-tollgate-cache"
        ]
        == "hit"
    )
    older = _ask(client, question, temperature=0, extra_headers={"cache-control": "max-age=1"})
    assert older.headers["x-tollgate-cache"] == "miss" and money(older)[0] > 0
    client.close()


def test_a_bad_cache_header_is_a_400_naming_the_allowed_values(gw: Proc) -> None:
    client = sdk_client(gw)
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, _question(), temperature=0, extra_headers={"x-tollgate-cache": "sometimes"})
    assert caught.value.body == {
        "message": "Invalid value for header 'x-tollgate-cache': 'sometimes'. Allowed values: bypass, refresh, only-if-cached.",
        "type": "invalid_request_error", "param": "x-tollgate-cache", "code": "invalid_value",
    }  # fmt: skip
    client.close()


def test_a_sampled_request_is_cached_only_when_the_team_opts_in(gw: Proc) -> None:
    team = f"xc-sampled-{uuid.uuid4().hex[:6]}"
    client = sdk_client(gw, team)
    question = _question()
    first = _ask(client, question)
    assert first.headers["x-tollgate-cache"] == "bypass"
    assert _ask(client, question).headers["x-tollgate-cache"] == "bypass"

    admin(gw, "PUT", f"/admin/policies/{team}", {"stages": {"exact_cache": {"cache_nondeterministic": True}}})
    deadline = time.monotonic() + 10
    while (raw := _ask(client, question)).headers["x-tollgate-cache"] != "hit":
        assert time.monotonic() < deadline, raw.headers["x-tollgate-cache"]
        time.sleep(0.05)
    assert money(raw)[0] == 0
    # The team can switch the cache off for itself.
    admin(gw, "PUT", f"/admin/policies/{team}", {"stages": {"exact_cache": {"enabled": False}}})
    deadline = time.monotonic() + 10
    while _ask(client, question, temperature=0).headers["x-tollgate-cache"] != "bypass":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.close()


def test_an_anthropic_client_gets_hits_streamed_and_not(gw: Proc) -> None:
    key = team_key(gw, f"xc-claude-{uuid.uuid4().hex[:6]}")
    claude = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=30)
    question = _question()
    # This SDK release no longer lists `temperature`; the Messages API still takes it.
    ask: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 60,
        "messages": question,
        "extra_body": {"temperature": 0},
    }
    first = claude.messages.with_raw_response.create(**ask)
    assert first.headers["x-tollgate-cache"] == "miss"
    answer = first.parse()
    deadline = time.monotonic() + 10
    while (again := claude.messages.with_raw_response.create(**ask)).headers["x-tollgate-cache"] != "hit":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    hit = again.parse()
    assert [block.model_dump() for block in hit.content] == [block.model_dump() for block in answer.content]
    assert (hit.stop_reason, hit.usage.output_tokens) == (answer.stop_reason, answer.usage.output_tokens)
    with claude.messages.stream(**ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == answer.content[0].text
    assert (final.stop_reason, final.usage.output_tokens) == (answer.stop_reason, answer.usage.output_tokens)
    claude.close()


# --- two instances, one Redis --------------------------------------------------------

REDIS_DB = redis_db(__name__)


@pytest.fixture(scope="module")
def pair(sim: Proc, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    def config(store: str, spool: Path) -> str:
        return CONFIG.format(store=store, spool=spool, sim=sim.url)

    with gateways_on_redis(tmp_path_factory.mktemp("exact-cache-redis"), redis_url, REDIS_DB, config) as both:
        yield both


def test_two_instances_on_one_redis_share_hits(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    key = team_key(a, f"xc-shared-{uuid.uuid4().hex[:6]}")
    on_a = openai.OpenAI(base_url=a.v1, api_key=key, max_retries=0, timeout=30)
    on_b = openai.OpenAI(base_url=b.v1, api_key=key, max_retries=0, timeout=30)
    question = _question()
    answer = _ask(on_a, question, temperature=0)
    assert answer.headers["x-tollgate-cache"] == "miss"
    _wait_cached(on_b, question, temperature=0)
    hit = _ask(on_b, question, temperature=0)
    assert hit.headers["x-tollgate-cache"] == "hit" and money(hit)[0] == 0
    assert hit.parse().choices[0].message.content == answer.parse().choices[0].message.content
    text, _, headers = _stream_text(on_a, question, temperature=0)
    assert headers["x-tollgate-cache"] == "hit" and text == answer.parse().choices[0].message.content
    on_a.close()
    on_b.close()
