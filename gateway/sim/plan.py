"""What the simulated model decided to answer, before any wire format renders it."""

from __future__ import annotations

import os
import random
import string
from dataclasses import dataclass
from typing import Any

import tiktoken

from gateway.sim.request import ChatRequest

_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(slots=True, frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Choice:
    index: int
    text: str | None  # None when the choice is tool calls
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str  # "stop" | "length" | "tool_calls"
    completion_tokens: int
    # Seeds how this choice is cut into stream deltas, so streaming is as repeatable as the text.
    split_seed: int
    stop_sequence: str | None = None
    logprobs: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class ChatPlan:
    request: ChatRequest
    encoding: tiktoken.Encoding
    choices: list[Choice]
    prompt_tokens: int
    cached_tokens: int = 0
    # Anthropic's explicit caching: tokens written to the cache by this request.
    cache_creation_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


@dataclass(slots=True)
class CompletionPlan:
    model: str
    encoding: tiktoken.Encoding
    choices: list[Choice]
    prompt_tokens: int
    logprobs: int | None
    stream: bool
    include_usage: bool

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


@dataclass(slots=True, frozen=True)
class StreamItem:
    """One whole SSE event and the number of generated tokens it carries (for pacing)."""

    data: bytes
    tokens: int = 0


@dataclass(slots=True, frozen=True)
class Answer:
    """A rendered answer: a JSON body, or the events of a stream."""

    body: dict[str, Any] | None
    events: list[StreamItem] | None
    completion_tokens: int


def random_id(rng: random.Random | None = None, length: int = 24) -> str:
    """Base62 like the real ids; from `rng` when it must be repeatable, else from the OS."""
    value = rng.getrandbits(6 * length) if rng is not None else int.from_bytes(os.urandom(length))
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 62)
        chars.append(_ID_ALPHABET[digit])
    return "".join(chars)
