"""Stale tool results become stubs; the turn in progress and short results are untouched."""

from __future__ import annotations

from typing import Any

from gateway.context.prune import prune_tool_results

BIG = "row: " + " ".join(f"value{i}" for i in range(400))


def call(call_id: str, name: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}],
    }


def conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You answer from the database."},
        {"role": "user", "content": "How many orders last week?"},
        call("c1", "query"),
        {"role": "tool", "tool_call_id": "c1", "content": BIG},
        {"role": "tool", "tool_call_id": "c2", "content": "ok"},
        {"role": "assistant", "content": "412 orders."},
        {"role": "user", "content": "And this week?"},
        call("c3", "query"),
        {"role": "tool", "tool_call_id": "c3", "content": BIG},
    ]


def test_an_answered_tool_result_becomes_a_stub() -> None:
    messages = conversation()
    pruned = prune_tool_results(messages, "gpt-4o", min_tokens=50)
    assert pruned.count == 1
    assert pruned.ids == ("c1",)
    stub = pruned.messages[3]
    assert stub["tool_call_id"] == "c1" and stub["role"] == "tool"
    assert stub["content"].startswith("[tool result pruned")
    assert pruned.tokens_before > 400 > pruned.tokens_after
    # short results, the turn in progress and everything else are unchanged
    assert pruned.messages[4] == messages[4]
    assert pruned.messages[8] == messages[8]
    assert [m for i, m in enumerate(pruned.messages) if i != 3] == [
        m for i, m in enumerate(messages) if i != 3
    ]
    assert messages[3]["content"] == BIG  # the input is not mutated


def test_pruning_is_stable_from_turn_to_turn() -> None:
    once = prune_tool_results(conversation(), "gpt-4o", min_tokens=50).messages
    again = prune_tool_results(once, "gpt-4o", min_tokens=50)
    assert again.count == 0 and again.messages == once


def test_nothing_is_pruned_before_a_later_user_turn() -> None:
    messages = conversation()[:4]
    assert prune_tool_results(messages, "gpt-4o", min_tokens=50).count == 0


def test_results_under_the_threshold_stay() -> None:
    assert prune_tool_results(conversation(), "gpt-4o", min_tokens=10_000).count == 0
