"""Start the simulated provider and the gateway as real processes, drive the workload with the
official `openai` SDK, and print what it cost, what it would have cost, and what each stage saved.

Four teams get a policy through the admin API first: marketing a small daily budget that
blocks (its later requests are refused with 429 `budget_exceeded`, as intended), research a
budget on gpt-4o that downgrades to gpt-4o-mini once spent (the saving is the policy stage's),
support a preference for the small model behind the routed alias `assistant` (the saving is
the route stage's), and analytics marks its ticket classification deferrable, so it goes in
provider batches at half price (the saving is the defer stage's). Help-centre questions
asked again, or in other words, are answered by the exact and semantic caches.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from gateway.demo.processes import child_process, free_port, wait_ready
from gateway.demo.report import admin, fetch_budgets, fetch_spend, print_budgets, print_spend, totals_of
from gateway.demo.workload import Call, build_workload

_CONFIG = """\
server:
  master_key: ${{TOLLGATE_MASTER_KEY}}
store:
  backend: sqlite
  path: {db}
stages:
  # Deferred work waits a second for company, and the simulated batches end a second later.
  defer: {{window_s: 1, tick_s: 0.2, poll_interval_s: 0.5, poll_max_s: 1}}
models:
  gpt-4o:
    deployments:
      - {{provider: openai_compat, model: gpt-4o, api_base: "{sim}/v1", api_key: sim-key}}
    fallbacks: [gpt-4o-mini]
  gpt-4o-mini:
    deployments:
      - {{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: sim-key}}
  claude-haiku-4-5:
    deployments:
      - {{provider: anthropic, model: claude-haiku-4-5, api_base: "{sim}", api_key: sim-key}}
  text-embedding-3-small:
    deployments:
      - {{provider: openai_compat, model: text-embedding-3-small, api_base: "{sim}/v1", api_key: sim-key}}
  assistant:
    route: {{candidates: [gpt-4o, gpt-4o-mini], long_prompt_tokens: 160}}
  sim/*:
    deployments:
      - {{provider: sim, model: "*"}}
"""

# Set through `PUT /admin/policies/{team}` (docs/policies.md), as an operator would.
_GPT_4O_DAILY = {"amount_usd": 0.01, "period": "day", "action": "downgrade", "downgrade_to": "gpt-4o-mini"}
POLICIES: dict[str, dict[str, Any]] = {
    "marketing": {"budgets": [{"name": "daily", "amount_usd": 0.001, "period": "day"}]},
    # Support's chats go to the small model unless one needs the large (a long history, tools).
    "support": {"stages": {"route": {"prefer": "weak"}}},
    "research": {
        "rate_limits": {"requests_per_minute": 600, "concurrent": 20},
        # Long pasted documents are cut to about half, keeping what the question needs.
        "stages": {"compress": {"level": 0.5}},
        "per_model": {"gpt-4o": {"budgets": [_GPT_4O_DAILY]}},
    },
    # Ticket classification can wait for tomorrow's report: it goes in provider batches, at half price.
    "analytics": {"stages": {"defer": {"deferrable": [{"endpoint": "chat", "model": "claude-haiku-*"}]}}},
}


async def _drive(
    base: str, keys: dict[str, str], calls: list[Call], concurrency: int
) -> tuple[list[str], dict[str, int], list[tuple[str, str]]]:
    """Send every call; answers the failures, per team the requests a budget refused, and the
    (team, job id) of those deferred to a provider batch."""
    from openai import AsyncOpenAI, RateLimitError

    clients = {
        team: AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=2) for team, key in keys.items()
    }
    failures: list[str] = []
    refused: dict[str, int] = {}
    deferred: list[tuple[str, str]] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Call) -> None:
        client = clients[call.team]
        async with gate:
            try:
                if call.kind == "embeddings":
                    await client.embeddings.create(model=call.model, **call.body)
                elif call.kind == "stream":
                    stream = await client.chat.completions.create(model=call.model, stream=True, **call.body)
                    async for _ in stream:
                        pass
                else:
                    raw = await client.chat.completions.with_raw_response.create(
                        model=call.model, **call.body
                    )
                    if raw.http_response.status_code == 202:
                        deferred.append((call.team, orjson.loads(raw.http_response.content)["id"]))
            except RateLimitError as err:
                if err.code != "budget_exceeded":
                    failures.append(f"{call.label} ({call.model}): {type(err).__name__}: {err}")
                else:
                    # What the team's budget is for: the gateway refused before spending anything.
                    refused[call.team] = refused.get(call.team, 0) + 1
            except Exception as err:
                failures.append(f"{call.label} ({call.model}): {type(err).__name__}: {err}")

    try:
        await asyncio.gather(*(one(call) for call in calls))
    finally:
        for client in clients.values():
            await client.close()
    return failures, refused, deferred


def _await_deferred(
    base: str, keys: dict[str, str], jobs: list[tuple[str, str]], timeout_s: float = 90
) -> list[str]:
    """Wait for every deferred request's answer (`GET /v1/deferred/{id}`); the failures."""
    failures: list[str] = []
    deadline = time.monotonic() + timeout_s
    for team, job_id in jobs:
        while True:
            request = urllib.request.Request(
                f"{base}/v1/deferred/{job_id}", headers={"authorization": f"Bearer {keys[team]}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    status = resp.status
            except urllib.error.HTTPError as err:
                status = err.code
            if status != 202:
                if status != 200:
                    failures.append(f"deferred request {job_id}: status {status}")
                break
            if time.monotonic() > deadline:
                failures.append(f"deferred request {job_id}: no answer within {timeout_s:.0f}s")
                break
            time.sleep(0.2)
    return failures


def run_demo(*, requests: int = 120, seed: int = 7, concurrency: int = 8) -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tollgate-demo-") as tmp:
        work = Path(tmp)
        sim_port, gw_port = free_port(), free_port()
        sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
        master = "tg-master-" + secrets.token_urlsafe(16)
        env = {**os.environ, "TOLLGATE_MASTER_KEY": master}
        config = work / "tollgate.yaml"
        config.write_text(_CONFIG.format(db=work / "tollgate.db", sim=sim_url))
        exe = [sys.executable, "-m", "gateway"]
        print(f"starting the simulated provider on {sim_url} and the gateway on {gw_url} ...", flush=True)
        with (
            child_process(
                [*exe, "sim", "--port", str(sim_port), "--tokens-per-s", "400", "--batch-delay-s", "1"],
                env,
                work / "sim.log",
            ) as sim,  # fmt: skip
            child_process(
                [*exe, "serve", "--config", str(config), "--port", str(gw_port)], env, work / "gateway.log"
            ) as gw,
        ):
            try:
                wait_ready(f"{sim_url}/health", sim, "simulated provider")
                wait_ready(f"{gw_url}/readyz", gw, "gateway")
                keys = {}
                for team in ("support", "research", "analytics", "marketing"):
                    admin(gw_url, master, "/admin/teams", {"id": team})
                    keys[team] = admin(gw_url, master, "/admin/keys", {"team": team, "name": "demo"})["key"]
                for team, policy in POLICIES.items():
                    admin(gw_url, master, f"/admin/policies/{team}", policy, method="PUT")
                calls = build_workload(requests, seed)
                print(
                    f"sending {len(calls)} requests from {len(keys)} teams through the gateway "
                    f"(policies set for {', '.join(POLICIES)}) ...",
                    flush=True,
                )
                failures, refused, deferred = asyncio.run(_drive(gw_url, keys, calls, concurrency))
                if deferred:
                    print(
                        f"waiting for {len(deferred)} deferred request(s) in provider batches ...", flush=True
                    )
                    failures += _await_deferred(gw_url, keys, deferred)
                    time.sleep(0.3)  # the last answers' ledger rows are written off the response path
                # What an operator would see: the gateway's own spend and budget reports.
                spend = fetch_spend(gw_url, master)
                budgets = fetch_budgets(gw_url, master)
            except Exception:
                for log in ("sim.log", "gateway.log"):
                    print(f"--- {log} ---\n{(work / log).read_text()[-3000:]}", file=sys.stderr)
                raise
        print_spend(spend, elapsed_s=time.perf_counter() - started)
        print_budgets(budgets)
        if failures:
            print(f"\n{len(failures)} request(s) failed:")
            for line in failures[:10]:
                print(f"  {line}")
            return 1
        total = totals_of(spend)
        blocked = sum(refused.values())
        by_team = ", ".join(f"{team} {count}" for team, count in sorted(refused.items())) or "none"
        print(
            f"\nall {len(calls)} requests answered: {len(calls) - blocked} served ({len(deferred)} of them "
            f"deferred to provider batches), {blocked} refused by a budget as its policy says ({by_team}); "
            f"ledger total ${Decimal(total['cost_usd']):.6f}"
        )
        return 0
