"""Gateways with a policy file, and the small calculations the policy tests check against.

A policy file lives beside the gateway's config and is re-read, when it has changed, at most
every `reload_interval_s` (0.2 s here); the tests write the teams they use before the gateway
starts, so nothing waits on a reload unless a test is about the reload.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import redis
import yaml

from gateway.accounting.tokens import count_prompt
from policies import format_usd, usd_to_nano
from tests.support.procs import Proc, free_port, gateways_on_redis, run_gateway, team_key_with_id

MASTER = "tg-master-test"
# Every token costs exactly $1 on a deployment with this price, so a cost is a token count.
DOLLAR_A_TOKEN = "{input_per_mtok: 1000000, output_per_mtok: 1000000}"


def write_policy(path: Path, document: Mapping[str, Any]) -> None:
    """Replace the policy file in one step, so a reload never reads half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(yaml.safe_dump(dict(document), sort_keys=False))
    os.replace(partial, path)


def gateway_config(*, store: str, models: str, policy_file: Path, spool_dir: Path) -> str:
    """A gateway config: `store` and `models` are YAML flow/block text for those keys."""
    return (
        f"store: {store}\n"
        "router: {retries: 0, backoff_base_s: 0.01, backoff_max_s: 0.05}\n"
        f'ledger: {{spool_dir: "{spool_dir}", flush_interval_s: 0.02}}\n'
        "stages:\n"
        "  auth: {cache_ttl_s: 0}\n"
        f'  policy: {{file: "{policy_file}", reload_interval_s: 0.2}}\n'
        f"models:\n{models}"
    )


@contextlib.contextmanager
def start_gateway(workdir: Path, *, store: str, models: str, policy_file: Path) -> Iterator[Proc]:
    """One gateway process reading the policy file `policy_file` (which several may share)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = gateway_config(
        store=store, models=models, policy_file=policy_file, spool_dir=workdir / f"spool-{port}"
    )
    with run_gateway(workdir, config, master_key=MASTER, port=port) as gw:
        yield gw


@contextlib.contextmanager
def policy_gateway(workdir: Path, *, store: str, models: str, policy: Mapping[str, Any]) -> Iterator[Proc]:
    """One gateway process whose policy file, in `workdir`, holds `policy`."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy_file = workdir / "policies.yaml"
    write_policy(policy_file, policy)
    with start_gateway(workdir, store=store, models=models, policy_file=policy_file) as gw:
        yield gw


@contextlib.contextmanager
def policy_gateways_on_redis(
    workdir: Path, redis_url: str, db: int, *, models: str, policy: Mapping[str, Any]
) -> Iterator[tuple[Proc, Proc]]:
    """Two gateway processes on Redis database `db`, reading one policy file that holds `policy`."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy_file = workdir / "policies.yaml"
    write_policy(policy_file, policy)

    def config(store: str, spool_dir: Path) -> str:
        return gateway_config(store=store, models=models, policy_file=policy_file, spool_dir=spool_dir)

    with gateways_on_redis(workdir, redis_url, db, config) as both:
        yield both


def new_team_key(gw: Proc, team: str) -> tuple[str, str]:
    """A key of `team` (created if missing): (plaintext key, key id); see `team_key_with_id`."""
    return team_key_with_id(gw, team)


def policy_counter(db_url: str, policy: str, *, present: bool = False) -> int:
    """The usage a policy's limit holds in Redis (at `db_url`): the sum of its buckets. With
    `present`, asserts that the counter has at least one bucket."""
    client = redis.Redis.from_url(db_url)
    try:
        keys = list(client.scan_iter(match=f"tollgate:ctr:policy:{policy}/*"))
        assert keys or not present, f"the counter of {policy} is not in Redis"
        return sum(int(value) for value in client.mget(keys) if value is not None) if keys else 0
    finally:
        client.close()


def prompt_tokens(model: str, messages: list[Any]) -> int:
    """The prompt tokens the policy stage counts for a chat request on `model`."""
    return count_prompt("chat", model, {"model": model, "messages": messages})


def usd(amount: int | str | Decimal) -> str:
    """An amount of dollars as refusals write it: 12 → `$12.00`."""
    return format_usd(usd_to_nano(Decimal(amount)))


def next_utc_midnights(before: datetime, after: datetime) -> set[str]:
    """The reset instants a daily UTC budget may name for a request made between two moments."""
    return {
        (
            moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        ).isoformat()
        for moment in (before, after)
    }


def clear_of_bucket_boundary(size_s: int = 10, need_s: float = 6.0) -> None:
    """Wait, if need be, until at least `need_s` seconds are left in the current epoch-aligned
    bucket of `size_s` seconds, so that a burst of requests stays within one bucket."""
    left = size_s - time.time() % size_s
    if left < need_s:
        time.sleep(left + 0.05)


@dataclass
class Result:
    """How one request ended, as a client saw it."""

    request_id: str
    status: int
    code: str | None = None
    message: str = ""
    headers: httpx.Headers | None = None
    total_tokens: int = 0


def refused(err: openai.APIStatusError) -> Result:
    assert isinstance(err.body, dict), err.body
    headers = err.response.headers
    return Result(headers["x-request-id"], err.status_code, err.code, str(err.body["message"]), headers)


@contextlib.asynccontextmanager
async def async_clients(
    gateways: Iterable[Proc], key: str, connections: int
) -> AsyncIterator[list[openai.AsyncOpenAI]]:
    """One SDK client per gateway, each with a pool of `connections`, never retrying."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for gw in gateways:
            http = await stack.enter_async_context(
                openai.DefaultAsyncHttpxClient(limits=limits, timeout=60.0)
            )
            sdk = openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0, http_client=http)
            clients.append(await stack.enter_async_context(sdk))
        yield clients
