"""Tool selection: of many tool definitions, send the few the conversation needs.

Each tool is embedded once from its name, description and parameter names; vectors are kept
by a hash of the definition, so a changed definition is embedded again and an unchanged one
never is. The query is the conversation's last user turn (with the turn before it when the
last is only a few words, "yes, do that"). The `top_k` most similar tools are kept, and
always, whatever their score: every tool the conversation has already called, and the tool
`tool_choice` forces. Kept tools stay in the client's order. `tool_choice` is never changed:
a conversation no kept tool fits is answered in words, as it would have been
(bench/tool_selection_eval.py measures both on BFCL).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gateway.accounting.tokens import content_text
from gateway.cache.keys import digest

_WORD_SPLIT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[_.\-/]+")
# A last user turn this short ("yes", "do it for Paris too") borrows the turn before it.
_SHORT_QUERY_WORDS = 6


class TextEmbedder(Protocol):
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Selection:
    kept: tuple[int, ...]  # indices into the request's tools, in the client's order
    removed: tuple[str, ...]  # names of the tools left out
    pinned: tuple[str, ...]  # names kept whatever their score (used before, or forced)


def function_of(tool: Any) -> Mapping[str, Any] | None:
    """The `function` object of a `{"type": "function", "function": {...}}` tool, else None."""
    if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
        function: Mapping[str, Any] = tool["function"]
        if isinstance(function.get("name"), str):
            return function
    return None


def tool_name(tool: Any) -> str | None:
    function = function_of(tool)
    return None if function is None else str(function["name"])


def tool_key(tool: Any) -> str:
    """A hash of the whole definition: an edited tool is a new tool."""
    return digest(tool, size=16)


def _words(name: str) -> str:
    return " ".join(part for part in _WORD_SPLIT.split(name) if part)


def tool_text(tool: Any) -> str:
    """What is embedded for a tool: its name as words, its description, its parameters' names."""
    function = function_of(tool)
    if function is None:
        return ""
    parts = [_words(str(function["name"])), str(function.get("description") or "")]
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if isinstance(properties, Mapping):
        parts.append("parameters: " + ", ".join(_words(str(p)) for p in properties))
    return ". ".join(p for p in parts if p)


def query_text(messages: Sequence[Any]) -> str:
    """The last user turn's text; with the previous user turn's when it is only a few words."""
    turns = [
        content_text(m.get("content")) for m in messages if isinstance(m, Mapping) and m.get("role") == "user"
    ]
    turns = [t for t in turns if t.strip()]
    if not turns:
        return ""
    query = turns[-1]
    if len(query.split()) < _SHORT_QUERY_WORDS and len(turns) > 1:
        query = turns[-2] + "\n" + query
    return query


def pinned_names(body: Mapping[str, Any]) -> set[str]:
    """Tools that must stay: those the conversation already called, and the one forced."""
    names: set[str] = set()
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            names |= _called_names(message)
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


class ToolVectors:
    """Tool vectors kept by definition hash, least recently used dropped past `max_entries`.

    Thread-safe: the stage embeds on a worker thread.
    """

    def __init__(self, embedder: TextEmbedder, *, max_entries: int = 20_000) -> None:
        self.embedder = embedder
        self._max = max_entries
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def of(self, tools: Sequence[Any]) -> np.ndarray:
        """[len(tools), D] unit vectors; only definitions not seen before are embedded."""
        keys = [tool_key(t) for t in tools]
        out = np.zeros((len(tools), self.embedder.dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                vector = self._vectors.get(key)
                if vector is None:
                    missing.append(i)
                else:
                    self._vectors.move_to_end(key)
                    out[i] = vector
        if missing:
            # A definition repeated within the request is embedded once.
            first = {keys[i]: i for i in reversed(missing)}
            fresh = dict(
                zip(first, self.embedder.embed([tool_text(tools[i]) for i in first.values()]), strict=True)
            )
            with self._lock:
                for i in missing:
                    out[i] = fresh[keys[i]]
                    self._vectors[keys[i]] = fresh[keys[i]]
                while len(self._vectors) > self._max:
                    self._vectors.popitem(last=False)
        return out


def rank(vectors: ToolVectors, tools: Sequence[Any], query: str) -> list[int]:
    """Tool indices from the most to the least similar to `query`."""
    if not query.strip():
        return list(range(len(tools)))
    matrix = vectors.of(tools)  # [T, D]
    q = vectors.embedder.embed([query])[0]  # [D]
    scores = matrix @ q
    return [int(i) for i in np.argsort(-scores, kind="stable")]


def select(vectors: ToolVectors, body: Mapping[str, Any], top_k: int) -> Selection | None:
    """The tools to send, or None when the request's tools cannot be selected among (a tool
    that is not a function, a missing name) or no query text exists."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    names = [tool_name(t) for t in tools]
    if any(n is None for n in names):
        return None
    messages = body.get("messages")
    query = query_text(messages if isinstance(messages, list) else [])
    if not query.strip():
        return None
    pinned = pinned_names(body)
    keep = {i for i, n in enumerate(names) if n in pinned}
    for i in rank(vectors, tools, query)[:top_k]:
        keep.add(i)
    kept = tuple(sorted(keep))
    removed = tuple(str(names[i]) for i in range(len(tools)) if i not in keep)
    return Selection(kept=kept, removed=removed, pinned=tuple(sorted(n for n in pinned if n in names)))


def called_tools(answer: Mapping[str, Any]) -> set[str]:
    """Names of the tools a chat completion's choices call."""
    names: set[str] = set()
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if isinstance(message, Mapping):
            names |= _called_names(message)
    return names


def _called_names(message: Mapping[str, Any]) -> set[str]:
    """Names of the functions an assistant message calls (`tool_calls`, or the legacy
    `function_call`)."""
    names: set[str] = set()
    calls = message.get("tool_calls")
    functions = (
        [c.get("function") for c in calls if isinstance(c, Mapping)] if isinstance(calls, list) else []
    )
    functions.append(message.get("function_call"))
    for function in functions:
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names
