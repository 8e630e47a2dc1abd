"""Stale tool results: an old tool output the conversation has moved past becomes a stub.

A tool result is stale once a later user turn exists: the model has read it and answered
the turn it served, and the answer (kept in the history) says what mattered. Its content is
replaced by a one-line stub that keeps the `tool_call_id`, so the call/result pairing that
providers check stays valid. Results of the turn in progress (no user turn after them) are
never touched, nor results shorter than `min_tokens`. The rule depends only on the messages
before the last user turn, so once a result is stubbed it stays stubbed on every later turn:
the prompt prefix changes once, and a provider's prompt cache warms again from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.accounting.tokens import content_text, count_text

STUB = "[tool result pruned by the gateway: {tokens} tokens, already used to answer an earlier turn]"


@dataclass(frozen=True, slots=True)
class Pruned:
    messages: list[Any]
    count: int  # tool results replaced
    tokens_before: int  # their tokens
    tokens_after: int  # their stubs' tokens
    ids: tuple[str, ...]  # their tool_call_ids


def _text(content: Any) -> str | None:
    """The content's text, or None when any part of it is not text (an image, a file)."""
    if isinstance(content, str) or (
        isinstance(content, list) and all(isinstance(p, Mapping) and p.get("type") == "text" for p in content)
    ):
        return content_text(content)
    return None


def prune_tool_results(messages: Sequence[Any], model: str, *, min_tokens: int) -> Pruned:
    last_user = max(
        (i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "user"), default=-1
    )
    out = list(messages)
    count = before = after = 0
    ids: list[str] = []
    for i in range(last_user):
        message = messages[i]
        if not isinstance(message, Mapping) or message.get("role") not in ("tool", "function"):
            continue
        text = _text(message.get("content"))
        if text is None or text.startswith("[tool result pruned"):
            continue
        tokens = count_text(model, text)
        if tokens < min_tokens:
            continue
        stub = STUB.format(tokens=tokens)
        out[i] = {**message, "content": stub}
        count += 1
        before += tokens
        after += count_text(model, stub)
        if isinstance(message.get("tool_call_id"), str):
            ids.append(message["tool_call_id"])
    return Pruned(out, count, before, after, tuple(ids))
