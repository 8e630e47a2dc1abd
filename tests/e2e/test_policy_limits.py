"""Rate limits held across two gateway processes that share one Redis.

Requests per minute, tokens per minute and requests in flight are counted in Redis, so a
team gets its limit once, not once per instance. Each test has a team of its own, and
fires its requests at both instances at once. Two more: a freshly started instance holds its
limits from its very first request, and (in the pure layer) what a rolling window must count
when requests are stamped on either side of a bucket boundary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import redis

from gateway.config import StoreConfig
from gateway.stages.policy_source import TEAM_PREFIX
from gateway.store import open_store
from policies import Estimate, Facts, State, load_policies, plan, reserve
from tests.support.policy import (
    Result,
    async_clients,
    clear_of_bucket_boundary,
    policy_counter,
    policy_gateways_on_redis,
    prompt_tokens,
    refused,
    start_gateway,
    write_policy,
)
from tests.support.procs import Proc, ledger_with, redis_db, redis_db_url, team_key_with_id

pytestmark = pytest.mark.e2e

# A Redis database of its own on the session's server.
REDIS_DB = redis_db(__name__)
RPM = 20
TPM = 600
TPM_MAX_TOKENS = 50
CONCURRENT = 3
# Long enough that every request of a burst arrives while the first ones are still in flight.
SLOW_MS = 2000
MODELS = """
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 30}}]
"""
POLICY = {
    "teams": {
        "rpm": {"rate_limits": {"requests_per_minute": RPM}},
        "tpm": {"rate_limits": {"tokens_per_minute": TPM}},
        "conc": {"rate_limits": {"concurrent": CONCURRENT}},
    }
}


@pytest.fixture(scope="module")
def pair(sim: Proc, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    work: Path = tmp_path_factory.mktemp("policy-limits")
    models = MODELS.format(sim=sim.url)
    with policy_gateways_on_redis(work, redis_url, REDIS_DB, models=models, policy=POLICY) as both:
        yield both


@pytest.fixture(scope="module")
def db_url(redis_url: str) -> str:
    """The Redis database the two instances of `pair` share."""
    return redis_db_url(redis_url, REDIS_DB)


def _messages(i: int, *, slow: bool = False) -> list[Any]:
    marker = f" [[sim:latency_ms={SLOW_MS}]]" if slow else ""
    return [{"role": "user", "content": f"Request {i}: how fast may a team go?{marker}"}]


async def _call(client: openai.AsyncOpenAI, i: int, *, slow: bool = False, max_tokens: int = 20) -> Result:
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=_messages(i, slow=slow), max_tokens=max_tokens
        )
        usage = raw.parse().usage
        assert usage is not None
        return Result(raw.headers["x-request-id"], raw.status_code, total_tokens=usage.total_tokens)
    except openai.APIStatusError as err:
        return refused(err)


def _burst(pair: tuple[Proc, Proc], key: str, count: int, first: int = 0, **kwargs: Any) -> list[Result]:
    """`count` requests at once, alternating between the two instances."""

    async def run() -> list[Result]:
        async with async_clients(pair, key, 100) as clients:
            calls = (_call(clients[i % 2], i, **kwargs) for i in range(first, first + count))
            return list(await asyncio.gather(*calls))

    return asyncio.run(run())


def _rate_refusal(result: Result, policy: str) -> None:
    assert (result.status, result.code) == (429, "rate_limit_exceeded"), result
    assert result.headers is not None
    assert 1 <= int(result.headers["retry-after"]) <= 10, result.headers
    assert f"(policy {policy})" in result.message, result.message


def test_requests_per_minute_admit_exactly_the_limit_across_instances(
    pair: tuple[Proc, Proc], db_url: str
) -> None:
    key, _ = team_key_with_id(pair[0], "rpm")
    # Requests stamped on either side of a bucket boundary can see different windows (see
    # test_a_request_stamped_before_a_bucket_boundary_sees_charges_stamped_after_it).
    clear_of_bucket_boundary()
    before = datetime.now(UTC)
    results = _burst(pair, key, 3 * RPM)
    after = datetime.now(UTC)

    admitted = [r for r in results if r.status == 200]
    # A refused reservation charges nothing, so exactly the limit got in, whichever instance.
    assert len(admitted) == RPM, [(r.status, r.code, r.message) for r in results if r.status != 200]
    policy = "team:rpm/rate:requests_per_minute"
    for result in results:
        if result.status != 200:
            _rate_refusal(result, policy)
            # Six ten-second buckets: the window frees up at a ten-second boundary.
            assert result.message.startswith(
                f"Team 'rpm' has made {RPM} of its {RPM} requests per minute (policy {policy}); "
                "its rolling window next frees up at "
            ), result.message
            frees_at = datetime.fromisoformat(result.message.rsplit(" ", 1)[1].rstrip("."))
            assert frees_at.timestamp() % 10 == 0
            assert before < frees_at <= after + timedelta(seconds=10)
    assert policy_counter(db_url, policy) == RPM
    rows = ledger_with(pair[0], [r.request_id for r in results])
    assert sorted(rows[r.request_id]["status"] for r in results) == [200] * RPM + [429] * (2 * RPM)


def test_tokens_per_minute_admit_no_more_tokens_than_the_limit(pair: tuple[Proc, Proc], db_url: str) -> None:
    key, _ = team_key_with_id(pair[0], "tpm")
    count = 60
    clear_of_bucket_boundary()
    results = _burst(pair, key, count, max_tokens=TPM_MAX_TOKENS)

    admitted = [r for r in results if r.status == 200]
    worst = max(prompt_tokens("gpt-4o-mini", _messages(i)) + TPM_MAX_TOKENS for i in range(count))
    policy = "team:tpm/rate:tokens_per_minute"
    for result in results:
        if result.status != 200:
            _rate_refusal(result, policy)
            assert result.message.startswith("Team 'tpm' has used "), result.message
            assert f" of its {TPM:,} tokens per minute" in result.message, result.message
    # Each request reserves its worst case and settles to what it used, so what was used fits.
    used = sum(r.total_tokens for r in admitted)
    assert used <= TPM, (used, len(admitted))
    # ... and a request is refused only when the reserved worst cases leave no room for its own.
    assert len(admitted) >= TPM // worst, (len(admitted), worst)
    assert len(admitted) < count, "the limit never refused"
    rows = ledger_with(pair[0], [r.request_id for r in admitted])
    assert used == sum(
        rows[r.request_id]["prompt_tokens"] + rows[r.request_id]["completion_tokens"] for r in admitted
    )
    # The counter in Redis ends exactly at the tokens used: every reservation was trued up.
    deadline = time.monotonic() + 10
    while (counter := policy_counter(db_url, policy)) != used and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counter == used


def test_concurrent_requests_are_capped_across_instances_and_freed_when_they_finish(
    pair: tuple[Proc, Proc], db_url: str
) -> None:
    key, _ = team_key_with_id(pair[0], "conc")
    started = time.monotonic()
    results = _burst(pair, key, 8, slow=True)
    elapsed = time.monotonic() - started

    admitted = [r for r in results if r.status == 200]
    assert len(admitted) == CONCURRENT, [(r.status, r.message) for r in results]
    assert elapsed >= SLOW_MS / 1000
    policy = "team:conc/rate:concurrent"
    for result in results:
        if result.status != 200:
            _rate_refusal(result, policy)
            assert result.message == (
                f"Team 'conc' has {CONCURRENT} of its {CONCURRENT} concurrent requests in flight "
                f"(policy {policy}); one frees up when a request finishes."
            )

    # The leases go back as the requests end (just after their responses: a settlement runs
    # off the response path), and then as many again get in, on either instance.
    assert _leases_held(db_url, policy) == 0
    again = _burst(pair, key, CONCURRENT, first=100)
    assert [r.status for r in again] == [200] * CONCURRENT, [(r.status, r.message) for r in again]
    assert _leases_held(db_url, policy) == 0


def _leases_held(db_url: str, policy: str, settle_s: float = 5.0) -> int:
    """How many hold the lease set of `policy` once the settlements in flight are done."""
    client = redis.Redis.from_url(db_url)
    try:
        deadline = time.monotonic() + settle_s
        while (held := int(client.zcard(f"tollgate:lease:policy:{policy}"))) and time.monotonic() < deadline:
            time.sleep(0.02)
        return held
    finally:
        client.close()


async def _store_teams(path: Path, documents: dict[str, Any]) -> None:
    """Team policies written into a SQLite store, as the admin API keeps them."""
    store = await open_store(StoreConfig(backend="sqlite", path=str(path)))
    try:
        for team, document in documents.items():
            await store.set(TEAM_PREFIX + team, orjson.dumps(document))
    finally:
        await store.aclose()


def test_a_fresh_instance_holds_its_limits_from_its_first_request(sim: Proc, tmp_path: Path) -> None:
    # A burst is the first thing this instance serves, and its team's policy is one of many
    # kept in the store (as the admin API keeps them), which take a moment to read: no request
    # may pass before the policies are in force.
    teams: dict[str, Any] = {f"other-{i}": {"rate_limits": {"concurrent": 1}} for i in range(500)}
    teams["first"] = {"rate_limits": {"requests_per_minute": 1}}
    asyncio.run(_store_teams(tmp_path / "t.db", teams))
    policy_file = tmp_path / "policies.yaml"
    write_policy(policy_file, {})
    store = f'{{backend: sqlite, path: "{tmp_path / "t.db"}"}}'
    with start_gateway(
        tmp_path, store=store, models=MODELS.format(sim=sim.url), policy_file=policy_file
    ) as gw:
        key, _ = team_key_with_id(gw, "first")
        results = _burst((gw, gw), key, 30)
    assert sum(r.status == 200 for r in results) == 1, [(r.status, r.code) for r in results]


def test_a_request_stamped_before_a_bucket_boundary_sees_charges_stamped_after_it() -> None:
    # A request's time is taken when it enters the policy stage; its reservation runs a moment
    # later. Between the two, requests stamped after a bucket boundary (later on this instance,
    # or by an instance whose clock is a little ahead) may already be charged to the next bucket.
    policies = load_policies({"teams": {"t": {"rate_limits": {"requests_per_minute": 2}}}})
    boundary = datetime(2026, 11, 21, 18, 54, 10, tzinfo=UTC)
    one = Estimate(cost_nano=0, tokens=1)
    state = State()
    for _ in range(2):
        outcome, state = reserve(
            plan(policies, Facts("t", "m", boundary + timedelta(milliseconds=1)), one), state
        )
        assert outcome.admitted
    outcome, state = reserve(
        plan(policies, Facts("t", "m", boundary - timedelta(milliseconds=1)), one), state
    )
    assert not outcome.admitted, f"a third request in two milliseconds was admitted: {dict(state.counters)}"
