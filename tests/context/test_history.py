"""History past the budget: MT-Bench conversations made long, and long synthetic ones.

The budget holds, the system prompt and the last turn arrive intact, the summary is written
once per conversation prefix, and its cost is taken off the saving."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.accounting.tokens import count_prompt
from gateway.context.history import SUMMARY_PREFIX, plan
from gateway.pipeline import RequestContext
from gateway.providers.base import ProviderResponse
from tests.context.support import SUMMARY, build, context

MT_BENCH = (
    Path(__file__).resolve().parents[3]
    / "shared/data/mt-bench/fastchat/llm_judge/data/mt_bench/question.jsonl"
)
SYSTEM = {
    "role": "system",
    "content": "You are a careful assistant. Answer in English, cite sources when asked.",
}
BUDGET = 2000


def mt_bench_conversations(count: int = 20) -> list[list[dict[str, Any]]]:
    """Several MT-Bench questions chained into one conversation, each answered at length."""
    if not MT_BENCH.exists():
        pytest.skip(f"MT-Bench data not found at {MT_BENCH}")
    questions = [json.loads(line) for line in MT_BENCH.read_text().splitlines() if line.strip()]
    rng = random.Random(3)
    out = []
    for _ in range(count):
        messages: list[dict[str, Any]] = [SYSTEM]
        for question in rng.sample(questions, 6):
            for turn in question["turns"]:
                messages.append({"role": "user", "content": turn})
                messages.append(
                    {"role": "assistant", "content": ("Here is a detailed answer. " + turn + " ") * 8}
                )
        messages[-1:] = []  # ends on the user's turn, as a request does
        out.append(messages)
    return out


def synthetic(turns: int, words: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [SYSTEM]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: " + "tell me more " * 5})
        messages.append({"role": "assistant", "content": f"Answer {i}: " + "lorem ipsum dolor " * words})
    messages.append({"role": "user", "content": "What did we conclude in the end?"})
    return messages


async def run(stage: Any, messages: list[dict[str, Any]]) -> tuple[RequestContext, list[dict[str, Any]]]:
    ctx = context({"messages": messages})
    seen: list[dict[str, Any]] = []

    async def downstream(c: RequestContext) -> ProviderResponse:
        seen.append(dict(c.request.body))
        return ProviderResponse.from_json({"choices": []})

    await stage(ctx, downstream)
    return ctx, seen[0]["messages"]


HISTORY = {"history": {"summary_model": "cheap", "budget_tokens": BUDGET, "keep_recent_turns": 3}}


@pytest.mark.anyio
@pytest.mark.parametrize("conversation", range(20))
async def test_mt_bench_made_long_holds_the_budget(conversation: int) -> None:
    messages = mt_bench_conversations()[conversation]
    assert count_prompt("chat", "gpt-4o", {"messages": messages}) > BUDGET
    stage, summariser, _ = build(HISTORY)
    ctx, sent = await run(stage, messages)
    assert count_prompt("chat", "gpt-4o", {"messages": sent}) <= BUDGET
    assert sent[0] == SYSTEM
    assert sent[-1] == messages[-1]
    assert sent[1]["content"] == SUMMARY_PREFIX + SUMMARY
    assert len(summariser.calls) == 1
    assert "context:history(" in ctx.response_headers["x-tollgate-transforms"]


@pytest.mark.anyio
@pytest.mark.parametrize(("turns", "words"), [(10, 100), (40, 60), (200, 20), (6, 1500)])
async def test_long_synthetic_conversations(turns: int, words: int) -> None:
    messages = synthetic(turns, words)
    stage, _, _ = build(HISTORY)
    ctx, sent = await run(stage, messages)
    assert sent[0] == SYSTEM and sent[-1] == messages[-1]
    record = ctx.records[-1].detail
    # The last turn alone may not fit (one answer of 1,500 words): then it is still sent whole.
    if not record["over_budget"]:
        assert count_prompt("chat", "gpt-4o", {"messages": sent}) <= BUDGET
    # Cuts fall on user turns: every kept message after the summary starts with a user turn.
    assert sent[2]["role"] == "user"


@pytest.mark.anyio
async def test_the_summary_is_written_once_per_prefix_and_extended_after() -> None:
    messages = synthetic(30, 60)
    stage, summariser, _ = build(HISTORY)
    first, _ = await run(stage, messages)
    await run(stage, messages)
    assert len(summariser.calls) == 1  # the same conversation again: from the store
    assert ctx_detail(first)["summary_cached"] is False
    longer = [
        *messages,
        {"role": "assistant", "content": "We concluded ipsum."},
        {"role": "user", "content": "Thanks, and next?"},
    ]
    again, _ = await run(stage, longer)
    assert len(summariser.calls) == 2
    # The cut moved on one turn: the stored summary was extended, not the whole history re-read.
    assert "(Summary of what came before:)" in summariser.calls[1]["messages"][1]["content"]
    assert ctx_detail(again)["summary_cached"] is False


def ctx_detail(ctx: RequestContext) -> Any:
    return next(r.detail for r in ctx.records if r.detail.get("transform") == "history")


@pytest.mark.anyio
async def test_the_summary_cost_is_taken_off_the_saving() -> None:
    messages = synthetic(30, 60)
    stage, _, _ = build(HISTORY)
    ctx, _ = await run(stage, messages)
    detail = ctx_detail(ctx)
    # 1,000 in + 20 out at 0.25/1.00 per Mtok = $0.00027, i.e. 108 input tokens of gpt-4o at 2.50.
    assert detail["summary_cost_usd"] == "0.00027"
    assert detail["summary_cost_as_input_tokens"] == 108
    record = next(r for r in ctx.records if r.detail.get("transform") == "history")
    assert record.saved_input_tokens == detail["tokens_before"] - detail["tokens_after"] - 108
    cached, _ = await run(stage, messages)
    assert ctx_detail(cached)["summary_cost_as_input_tokens"] == 0


@pytest.mark.anyio
async def test_a_conversation_under_the_budget_is_untouched() -> None:
    messages = synthetic(2, 10)
    stage, summariser, _ = build(HISTORY)
    ctx, sent = await run(stage, messages)
    assert sent == messages and not ctx.records and not summariser.calls


def test_history_is_off_without_a_summary_model() -> None:
    stage, _, _ = build()
    assert stage._overrides.defaults.history is False


def test_the_plan_never_cuts_before_the_first_turn() -> None:
    messages = [SYSTEM, {"role": "user", "content": "word " * 5000}]
    assert plan(messages, "gpt-4o", budget_tokens=500, keep_recent_turns=2, summary_tokens=100) is None


def test_the_plan_counts_the_whole_prompt_as_the_counter_does() -> None:
    messages = synthetic(12, 60)
    cut = plan(messages, "gpt-4o", budget_tokens=600, keep_recent_turns=2, summary_tokens=100)
    assert cut is not None
    assert cut.tokens == count_prompt("chat", "gpt-4o", {"messages": messages})
