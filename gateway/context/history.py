"""History past a token budget: the system prompt, a summary of the middle, the recent turns.

The conversation is cut at user turns only, so a tool call always stays with its result.
The leading system (and developer) messages are kept word for word, then one system message
holding a summary of everything between them and the cut, then the last turns word for word:
`keep_recent_turns` of them, fewer when they alone would break the budget, never fewer than
the last one. A summary is kept per conversation prefix (a hash of every message before the
cut and of the model that wrote it), so the next turn of the same conversation reuses it;
when the cut has moved on, the newest stored summary of a shorter prefix is extended with the
turns since, instead of summarising the whole conversation again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from gateway.accounting.tokens import content_text, count_prompt, message_tokens
from gateway.cache.keys import digest

SUMMARY_PREFIX = "Summary of the earlier part of this conversation (written by the gateway):\n"
INSTRUCTIONS = (
    "You condense a conversation so that it can be continued without the original. Write a "
    "concise summary of the conversation below: the user's goals and constraints, facts, "
    "names, numbers and decisions established, questions still open, and what tools returned "
    "that is still relevant. Write plain prose or short bullet points; do not address the user."
)
# Stored summaries of shorter prefixes looked for before summarising from the start.
MAX_PREFIX_LOOKUPS = 8


@dataclass(frozen=True, slots=True)
class Cut:
    head: int  # messages[:head] are the leading system prompt, kept
    cut: int  # messages[head:cut] are summarised, messages[cut:] kept
    over_budget: bool  # even the last turn alone leaves no room under the budget
    tokens: int = 0  # the whole conversation's prompt tokens


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, Mapping) else None


def plan(
    messages: Sequence[Any], model: str, *, budget_tokens: int, keep_recent_turns: int, summary_tokens: int
) -> Cut | None:
    """Where to cut, or None when the conversation fits or has no middle to summarise."""
    # Each message is counted once; a stretch of messages costs the sum of theirs.
    base = count_prompt("chat", model, {})
    ends = [0, *accumulate(message_tokens(model, m) for m in messages)]  # ends[i]: messages[:i]
    total = base + ends[-1]
    if total <= budget_tokens:
        return None
    head = 0
    while head < len(messages) and _role(messages[head]) in ("system", "developer"):
        head += 1
    starts = [i for i in range(head, len(messages)) if _role(messages[i]) == "user"]
    # The first turn cannot be cut before: nothing lies between the system prompt and it.
    candidates = [s for s in starts[-keep_recent_turns:] if s > head] or [s for s in starts[-1:] if s > head]
    if not candidates:
        return None
    head_tokens = base + ends[head]
    # The summary message: its text, its framing, and the prefix line.
    room = budget_tokens - head_tokens - summary_tokens - 32
    for cut in candidates:  # the most turns kept first
        if base + ends[-1] - ends[cut] <= room:
            return Cut(head, cut, over_budget=False, tokens=total)
    return Cut(head, candidates[-1], over_budget=True, tokens=total)


def prefix_key(summary_model: str, messages: Sequence[Any], end: int) -> str:
    """The store key of the summary of `messages[:end]` written by `summary_model`."""
    return "ctx:summary:" + digest([summary_model, list(messages[:end])])


def earlier_ends(messages: Sequence[Any], cut: Cut) -> list[int]:
    """Shorter prefixes whose stored summary could be extended, newest first."""
    starts = [i for i in range(cut.head + 1, cut.cut) if _role(messages[i]) == "user"]
    return starts[::-1][:MAX_PREFIX_LOOKUPS]


def transcript(messages: Sequence[Any]) -> str:
    """The messages as plain text for the summariser; tool calls shown by name and arguments."""
    lines: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = str(message.get("role") or "unknown")
        content = content_text(message.get("content"))
        if content:
            lines.append(f"{role}: {content}")
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                lines.append(f"{role} called {function.get('name')}({function.get('arguments')})")
    return "\n".join(lines)


def summary_request(previous: str | None, messages: Sequence[Any], max_tokens: int) -> list[dict[str, str]]:
    text = transcript(messages)
    if previous:
        text = f"(Summary of what came before:)\n{previous}\n\n(The conversation continues:)\n{text}"
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": text}]


def rebuild(messages: Sequence[Any], cut: Cut, summary: str) -> list[Any]:
    return [
        *messages[: cut.head],
        {"role": "system", "content": SUMMARY_PREFIX + summary},
        *messages[cut.cut :],
    ]
