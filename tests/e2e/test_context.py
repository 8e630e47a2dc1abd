"""The context stage end to end: a gateway process, the simulated provider, the openai SDK.

The simulator counts every tool definition it receives as prompt, so the usage it reports
shows what reached it. Its tool calls are chosen among the tools it was sent, so it cannot
call one the gateway left out: the re-send on such a call is tested at unit level
(tests/context/test_context_stage.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.accounting.tokens import count_prompt
from tests.support.policy import new_team_key, policy_gateway
from tests.support.procs import Proc, run_gateway, team_key
from tests.support.toolbox import TOPICS

pytestmark = pytest.mark.e2e

MODEL = "gpt-4o-mini"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": f"{name}_{i}",
            "description": f"{description} (service {i}).",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "what to look up"}},
            },
        },
    }
    for i in range(5)
    for name, description in TOPICS
]  # 40 tools
MESSAGES = [
    {"role": "system", "content": "You help travellers."},
    {"role": "user", "content": "What is the weather forecast for Lisbon this weekend?"},
]


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("context")
    models = f'  {MODEL}:\n    deployments: [{{provider: openai_compat, model: {MODEL}, api_base: "{sim.url}/v1", api_key: k, timeout_s: 5}}]\n'
    policy = {"teams": {"no-selection": {"stages": {"context": {"tool_selection": False}}}}}
    store = f'{{backend: sqlite, path: "{work / "t.db"}"}}'
    with policy_gateway(work, store=store, models=models, policy=policy) as proc:
        yield proc


def _client(gw: Proc, team: str) -> openai.OpenAI:
    key, _ = new_team_key(gw, team)
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=30)


def _ask(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]


def test_many_tools_reach_the_upstream_as_a_few(gw: Proc) -> None:
    raw = _ask(_client(gw, f"ctx-{uuid.uuid4().hex[:8]}"))
    completion = raw.parse()
    assert raw.headers["x-tollgate-transforms"] == "context:tools(40->5)"
    full = count_prompt("chat", MODEL, {"messages": MESSAGES, "tools": TOOLS})
    assert completion.usage is not None
    # The simulator billed the prompt it received: a fraction of the 40 definitions.
    assert completion.usage.prompt_tokens < full * 0.3
    cost, baseline = (
        Decimal(raw.headers["x-tollgate-cost-usd"]),
        Decimal(raw.headers["x-tollgate-baseline-usd"]),
    )
    assert baseline > cost
    assert Decimal(raw.headers["x-tollgate-saved-usd"]) == baseline - cost


def test_a_team_that_turned_selection_off_sends_every_tool(gw: Proc) -> None:
    raw = _ask(_client(gw, "no-selection"))
    completion = raw.parse()
    assert "x-tollgate-transforms" not in raw.headers
    full = count_prompt("chat", MODEL, {"messages": MESSAGES, "tools": TOOLS})
    assert completion.usage is not None
    assert abs(completion.usage.prompt_tokens - full) <= 2


def test_a_streamed_request_is_selected_too(gw: Proc) -> None:
    client = _client(gw, f"ctx-{uuid.uuid4().hex[:8]}")
    with client.chat.completions.with_streaming_response.create(  # type: ignore[call-overload]
        model=MODEL,
        messages=MESSAGES,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["x-tollgate-transforms"] == "context:tools(40->5)"
        chunks = list(response.parse())
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens < count_prompt("chat", MODEL, {"messages": MESSAGES, "tools": TOOLS}) * 0.3


HISTORY_CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
router: {{retries: 0}}
stages:
  auth: {{cache_ttl_s: 0}}
  context: {{history: {{summary_model: summariser, budget_tokens: 600, keep_recent_turns: 2}}}}
models:
  {model}:
    deployments: [{{provider: openai_compat, model: {model}, api_base: "{sim}/v1", api_key: k, timeout_s: 5}}]
  summariser:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 5}}]
"""


@pytest.fixture(scope="module")
def history_gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("context-history")
    with run_gateway(work, HISTORY_CONFIG.format(db=work / "t.db", sim=sim.url, model=MODEL)) as proc:
        yield proc


def test_a_long_history_is_summarised_by_the_configured_model(history_gw: Proc) -> None:
    client = openai.OpenAI(
        base_url=history_gw.v1, api_key=team_key(history_gw, "hist"), max_retries=0, timeout=30
    )
    messages: list[dict[str, str]] = [{"role": "system", "content": "You help travellers."}]
    for i in range(12):
        messages.append({"role": "user", "content": f"Tell me about city number {i} and its museums."})
        messages.append(
            {"role": "assistant", "content": f"City {i} has " + "many fine museums and parks. " * 12}
        )
    messages.append({"role": "user", "content": "Which of them should I visit first?"})
    full = count_prompt("chat", MODEL, {"messages": messages})
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    completion = raw.parse()
    assert "context:history(" in raw.headers["x-tollgate-transforms"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens <= 600 < full
    # The first turn paid for the summary, which may cost more than it saved on that turn;
    # the same conversation again reads it from the store, and saves.
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert "context:history(" in raw.headers["x-tollgate-transforms"]
    assert Decimal(raw.headers["x-tollgate-baseline-usd"]) > Decimal(raw.headers["x-tollgate-cost-usd"])
