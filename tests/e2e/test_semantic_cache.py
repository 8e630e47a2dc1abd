"""The semantic cache end to end: real gateway processes, the simulated provider, the official SDKs.

Answers are stored after the client has them, so a test that needs one waits for it by
asking the paraphrase with `only-if-cached` (504 until then; no model is ever called).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.procs import (
    Proc,
    gateways_on_redis,
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
  semantic_cache: {{sync_interval_s: 0.1}}
models:
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 5}}]
"""
MODEL = "gpt-4o-mini"
ONLY_IF_CACHED = {"x-tollgate-cache": "only-if-cached"}
REDIS_DB = redis_db(__name__)


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("semantic-cache")
    store = f'{{backend: sqlite, path: "{work / "t.db"}"}}'
    with run_gateway(work, CONFIG.format(store=store, spool=work / "spool", sim=sim.url)) as proc:
        yield proc


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are the help desk of a billing product."}, {"role": "user", "content": question}]


def _ask(client: openai.OpenAI, question: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
        model=MODEL, messages=_messages(question), temperature=0, **extra
    )


def _wait_hit(client: openai.OpenAI, question: str) -> Any:
    """Ask `question` with only-if-cached until the cache answers it (504 until the entry is in)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return _ask(client, question, extra_headers=ONLY_IF_CACHED)
        except openai.InternalServerError as err:
            assert err.status_code == 504, err
            assert time.monotonic() < deadline, "the paraphrase was never answered from the cache"
            time.sleep(0.05)


def test_a_paraphrase_is_answered_from_the_cache_at_no_cost(gw: Proc) -> None:
    client = sdk_client(gw)
    miss = _ask(client, "How do I download last month's invoice?")
    assert miss.headers["x-tollgate-cache"] == "miss"
    hit = _wait_hit(client, "How can I download last month's invoice?")
    assert hit.headers["x-tollgate-cache"] == "hit" and hit.headers["x-tollgate-cache-source"] == "semantic"
    assert float(hit.headers["x-tollgate-cache-similarity"]) >= 0.8
    cost, baseline, saved = money(hit)
    assert cost == 0 and baseline > 0 and saved == baseline
    assert hit.parse().choices[0].message.content == miss.parse().choices[0].message.content
    row = ledger_with(gw, [hit.headers["x-request-id"]])[hit.headers["x-request-id"]]
    assert (row["cache"], row["outcome"]) == ("hit", "short_circuit")
    assert {k: Decimal(v) for k, v in row["saved_by_stage"].items()} == {"semantic_cache": baseline}
    client.close()


def test_a_streamed_hit_is_a_valid_stream_for_the_sdk(gw: Proc) -> None:
    client = sdk_client(gw)
    answer = _ask(client, "Which payment methods do you accept?").parse().choices[0].message.content
    _wait_hit(client, "What payment methods do you accept?")
    with client.chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=_messages("What payment methods do you accept?"),  # type: ignore[arg-type]
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["x-tollgate-cache-source"] == "semantic"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    client.close()


def test_the_same_question_from_two_teams_never_shares_an_entry(gw: Proc) -> None:
    first, second = sdk_client(gw), sdk_client(gw)
    _ask(first, "Can I change the currency of my account?")
    _wait_hit(first, "Is it possible to change my account's currency?")
    with pytest.raises(openai.InternalServerError) as refused:
        _ask(second, "Is it possible to change my account's currency?", extra_headers=ONLY_IF_CACHED)
    assert refused.value.status_code == 504
    assert _ask(second, "Can I change the currency of my account?").headers["x-tollgate-cache"] == "miss"
    first.close()
    second.close()


def test_a_different_number_is_never_served_a_similar_questions_answer(gw: Proc) -> None:
    client = sdk_client(gw)
    _ask(client, "Can I get a refund within 14 days of purchase?")
    _wait_hit(client, "Can I get a refund within fourteen days of purchase?")
    with pytest.raises(openai.InternalServerError) as refused:
        _ask(client, "Can I get a refund within 30 days of purchase?", extra_headers=ONLY_IF_CACHED)
    assert refused.value.status_code == 504
    client.close()


@pytest.fixture(scope="module")
def pair(sim: Proc, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    def config(store: str, spool: Path) -> str:
        return CONFIG.format(store=store, spool=spool, sim=sim.url)

    with gateways_on_redis(tmp_path_factory.mktemp("semantic-cache-redis"), redis_url, REDIS_DB, config) as both:
        yield both


def test_two_instances_on_one_redis_share_hits(pair: tuple[Proc, Proc]) -> None:
    a, b = pair
    key = team_key(a, f"sc-shared-{uuid.uuid4().hex[:6]}")
    on_a = openai.OpenAI(base_url=a.v1, api_key=key, max_retries=0, timeout=30)
    on_b = openai.OpenAI(base_url=b.v1, api_key=key, max_retries=0, timeout=30)
    answer = _ask(on_a, "How do I add a colleague to my workspace?")
    hit = _wait_hit(on_b, "How can I add a colleague to my workspace?")
    assert hit.headers["x-tollgate-cache-source"] == "semantic" and money(hit)[0] == 0
    assert hit.parse().choices[0].message.content == answer.parse().choices[0].message.content
    on_a.close()
    on_b.close()
