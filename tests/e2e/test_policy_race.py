"""Two gateway processes on one Redis, hundreds of concurrent requests, one small daily budget.

Every request reserves its worst case (prompt + `max_tokens` at gpt-4o-mini's list price)
atomically in Redis before it is sent, and is trued up to its real cost when it settles. So
whatever the interleaving, at every admission the budget's counter (settled costs plus the
worst cases still in flight) stayed within the budget, and as a real cost never exceeds its
worst case, what is finally spent is within the budget too. That, and that the counter ends
exactly equal to the ledger's spend, is what is asserted; not how many requests got in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.accounting.prices import PriceTable
from policies import cap_to_nano, usd_to_nano
from tests.support.policy import (
    Result,
    async_clients,
    policy_counter,
    policy_gateways_on_redis,
    prompt_tokens,
    refused,
)
from tests.support.procs import Proc, ledger_with, redis_db, redis_db_url, team_key_with_id

pytestmark = pytest.mark.e2e

# A Redis database of its own on the session's server.
REDIS_DB = redis_db(__name__)
TEAM = "race"
BUDGET = Decimal("0.002")
MAX_TOKENS = 100
BURST = 500
POLICY = "team:race/budget:daily"
MODELS = """
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 60}}]
"""


def _messages(i: int) -> list[Any]:
    return [{"role": "user", "content": f"Request {i}: why hold a budget exactly across gateways?"}]


def _worst_nano(i: int) -> int:
    """What the gateway reserves for request `i`: its prompt and `MAX_TOKENS` at the list price
    (a number up to 999 in the prompt is one token: every request has the same worst case)."""
    price = PriceTable().price("gpt-4o-mini")
    assert price is not None
    prompt = prompt_tokens("gpt-4o-mini", _messages(i))
    return usd_to_nano((prompt * price.input_per_mtok + MAX_TOKENS * price.output_per_mtok) / 1_000_000)


@dataclass
class Pair:
    """The two instances, the team's key, and the URL of the Redis database they share."""

    a: Proc
    b: Proc
    key: str
    redis_url: str


@pytest.fixture(scope="module")
def pair(sim: Proc, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    work: Path = tmp_path_factory.mktemp("policy-race")
    policy = {"teams": {TEAM: {"budgets": [{"amount_usd": str(BUDGET), "period": "day"}]}}}
    models = MODELS.format(sim=sim.url)
    with policy_gateways_on_redis(work, redis_url, REDIS_DB, models=models, policy=policy) as (a, b):
        key, _ = team_key_with_id(a, TEAM)
        yield Pair(a, b, key, redis_db_url(redis_url, REDIS_DB))


async def _call(client: openai.AsyncOpenAI, i: int) -> Result:
    """Request `i`: streamed when i % 3 == 0 (with a usage chunk when i % 6 == 0), else not."""
    stream = i % 3 == 0
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if i % 6 == 0 else {}
    try:
        if stream:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=_messages(i), max_tokens=MAX_TOKENS, stream=True, **extra
            )
            async with raw.parse() as chunks:
                async for _ in chunks:
                    pass
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=_messages(i), max_tokens=MAX_TOKENS
            )
            assert raw.parse().choices[0].message.content
        return Result(raw.headers["x-request-id"], raw.status_code)
    except openai.APIStatusError as err:
        return refused(err)


async def _burst(pair: Pair, first: int, count: int) -> list[Result]:
    async with async_clients((pair.a, pair.b), pair.key, BURST) as clients:
        return list(await asyncio.gather(*(_call(clients[i % 2], i) for i in range(first, first + count))))


async def _one_by_one(pair: Pair, first: int, count: int, *, until_refused: bool) -> list[Result]:
    results = []
    async with async_clients((pair.a, pair.b), pair.key, BURST) as clients:
        for i in range(first, first + count):
            results.append(await _call(clients[i % 2], i))
            if until_refused and results[-1].status != 200:
                break
    return results


def _assert_refused_by_the_budget(result: Result) -> None:
    assert (result.status, result.code) == (429, "budget_exceeded"), result
    assert result.headers is not None
    assert result.headers["x-tollgate-policy"] == POLICY
    assert result.headers["x-should-retry"] == "false"


def test_a_burst_on_two_instances_never_spends_past_the_budget(pair: Pair) -> None:
    started = time.monotonic()
    results = asyncio.run(_burst(pair, 0, BURST))
    burst_s = time.monotonic() - started

    admitted = [r for r in results if r.status == 200]
    turned_away = [r for r in results if r.status != 200]
    for result in turned_away:
        _assert_refused_by_the_budget(result)
    cap = cap_to_nano(BUDGET)
    # Every request's prompt has as many tokens: one worst case for all.
    (worst,) = {_worst_nano(i) for i in range(BURST + 200)}
    # A request is refused only when the counter, made of at most one worst case per admitted
    # request, leaves no room for its own: so at least cap // worst requests got in.
    assert len(admitted) >= cap // worst, (len(admitted), cap, worst)
    assert turned_away, f"the budget never ran out ({len(admitted)} admitted in {burst_s:.1f}s)"

    # Spend what room the settlements freed, one request at a time, until refused: from then on
    # nothing settles any more, so the room is smaller than the worst case and stays so.
    drained = asyncio.run(_one_by_one(pair, BURST, 100, until_refused=True))
    assert drained[-1].status != 200, "100 more requests fit after the burst"
    _assert_refused_by_the_budget(drained[-1])
    after = asyncio.run(_one_by_one(pair, BURST + len(drained), 6, until_refused=False))
    for result in after:
        _assert_refused_by_the_budget(result)

    everything = results + drained + after
    rows = ledger_with(pair.a, [r.request_id for r in everything])
    # Either instance reads the one shared ledger.
    assert set(ledger_with(pair.b, [r.request_id for r in everything])) >= {r.request_id for r in everything}
    for result in everything:
        row = rows[result.request_id]
        assert row["team"] == TEAM
        if result.status == 200:
            assert (row["status"], row["outcome"]) == (200, "ok"), row
            assert Decimal(row["cost_usd"]) > 0, row
        else:
            assert (row["status"], row["outcome"], Decimal(row["cost_usd"])) == (
                429,
                "refused",
                Decimal(0),
            ), row
    # Streamed and plain requests alike were admitted (a third of the requests stream).
    assert {rows[r.request_id]["stream"] for r in admitted} == {True, False}
    spent = sum((Decimal(rows[r.request_id]["cost_usd"]) for r in everything), Decimal(0))
    assert spent <= BUDGET, f"spent ${spent} of a ${BUDGET} budget"
    # The team has no other requests: the ledger's spend is the team's spend.
    team_rows = [row for row in rows.values() if row["team"] == TEAM]
    assert len(team_rows) == len(everything)

    # Every reservation was trued up to its real cost (settling runs just after the response).
    expected = sum(usd_to_nano(Decimal(rows[r.request_id]["cost_usd"])) for r in everything)
    deadline = time.monotonic() + 10
    # The budget's counter, summed over its buckets (one per day), must be in Redis.
    while (
        counter := policy_counter(pair.redis_url, POLICY, present=True)
    ) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counter == expected, f"counter {counter} != ledger {expected} nano-USD"
