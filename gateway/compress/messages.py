"""Compression of a chat request's messages: which text may change, and how, in what order.

What may change (docs/compression.md):
- earlier user turns, assistant turns, tool and function results: all their text;
- the system (or developer) prompt and the last user turn: only text inside
  `<document>`, `<doc>` or `<context>` tags; in a last user turn made of several text
  parts, also every text part but the last (the part boundary delimits the document from
  the question). Everything else in them, the instructions and the question, is never touched;
- nowhere: fenced code blocks, `<protect>` regions, and content parts that carry a
  `cache_control` marker (their bytes are a provider cache's key).

Passes, in order: lossless (whitespace, JSON), de-duplication, then, only when the level is
a ratio, extractive compression of each editable piece of at least `min_block_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.compress import extractive
from gateway.compress.text import has_protected, minify_json, normalize_whitespace, regions

_DOCUMENT = re.compile(r"(?s)(<(document|doc|context)\b[^>]*>)(.*?)(</\2\s*>)")
_PARAGRAPH_BREAK = re.compile(r"(\n[ \t]*\n)")
_WORDS = re.compile(r"\S+")
_FREE_ROLES = frozenset({"user", "assistant", "tool", "function"})
_GUARDED_ROLES = frozenset({"system", "developer"})
# A repeated paragraph is replaced only when it is at least this long: the reference that
# replaces it costs ~20 tokens.
DEDUPE_MIN_TOKENS = 60


@dataclass(frozen=True, slots=True)
class Options:
    keep_ratio: float | None  # None: lossless only
    min_block_tokens: int
    whitespace: bool = True
    minify_json: bool = True
    dedupe: bool = True


@dataclass(slots=True)
class Piece:
    text: str
    editable: bool
    message: int
    is_tool: bool = False
    referenced: bool = False  # an earlier copy a later reference points at: kept verbatim


@dataclass(slots=True)
class Outcome:
    messages: list[Any]
    # transform name -> tokens it removed (sum over pieces, counted piece by piece)
    saved_by_transform: dict[str, int] = field(default_factory=dict)
    # what was removed, without the text itself: one entry per change
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed_messages: list[int] = field(default_factory=list)
    extractive_before: int = 0
    extractive_after: int = 0

    @property
    def transforms(self) -> list[str]:
        return [name for name, saved in self.saved_by_transform.items() if saved > 0]


def question_of(messages: Sequence[Any]) -> str:
    """The current question: the last user turn's text outside documents (its last text part)."""
    index = _last_user(messages)
    if index is None:
        return ""
    content = messages[index].get("content")
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        content = next((t for t in reversed(texts) if isinstance(t, str)), "")
    return _DOCUMENT.sub(" ", content) if isinstance(content, str) else ""


def _last_user(messages: Sequence[Any]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], Mapping) and messages[i].get("role") == "user":
            return i
    return None


def compress_messages(
    messages: Sequence[Any],
    options: Options,
    count: Callable[[str], int],
    embedder: extractive.SentenceEmbedder | None = None,
) -> Outcome:
    last_user = _last_user(messages)
    # slot: (message index, part index or None) -> its pieces, joined back in order
    slots: dict[tuple[int, int | None], list[Piece]] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        guarded = role in _GUARDED_ROLES or i == last_user
        if not guarded and role not in _FREE_ROLES:
            continue
        content = message.get("content")
        is_tool = role in ("tool", "function")
        if isinstance(content, str):
            slots[(i, None)] = _pieces(content, i, guarded, is_tool)
        elif isinstance(content, list):
            text_parts = [
                j for j, p in enumerate(content) if isinstance(p, Mapping) and p.get("type") == "text"
            ]
            for j in text_parts:
                part = content[j]
                if not isinstance(part.get("text"), str) or "cache_control" in part:
                    continue
                # A last user turn's earlier text parts are documents; its last one is the question.
                whole = not guarded or (i == last_user and j != text_parts[-1])
                slots[(i, j)] = _pieces(part["text"], i, not whole, is_tool)
    outcome = Outcome(messages=list(messages))
    pieces = [piece for slot in slots.values() for piece in slot]
    _lossless(pieces, options, count, outcome)
    if options.dedupe:
        _dedupe(pieces, count, outcome)
    if options.keep_ratio is not None:
        question = question_of(messages)
        if question.strip():
            _extract(pieces, question, options, count, embedder, outcome)
    _rebuild(messages, slots, outcome)
    return outcome


def _pieces(text: str, message: int, guarded: bool, is_tool: bool) -> list[Piece]:
    if not guarded:
        return [Piece(text, True, message, is_tool)]
    out: list[Piece] = []
    position = 0
    for match in _DOCUMENT.finditer(text):
        out.append(Piece(text[position : match.start(3)], False, message))
        out.append(Piece(match.group(3), True, message))
        position = match.end(3)
    out.append(Piece(text[position:], False, message))
    return out


def _note(outcome: Outcome, transform: str, piece: Piece, before: int, after: int, **extra: Any) -> None:
    outcome.saved_by_transform[transform] = outcome.saved_by_transform.get(transform, 0) + before - after
    outcome.removed.append(
        {
            "transform": transform,
            "message": piece.message,
            "tokens_before": before,
            "tokens_after": after,
            **extra,
        }
    )


def _lossless(pieces: list[Piece], options: Options, count: Callable[[str], int], outcome: Outcome) -> None:
    for piece in pieces:
        if not piece.editable or not piece.text:
            continue
        if options.minify_json:
            minified = minify_json(piece.text)
            if minified is not None:
                before, after = count(piece.text), count(minified)
                if after < before:
                    _note(outcome, "json", piece, before, after)
                    piece.text = minified
                continue  # a JSON document has no prose to normalise
        if options.whitespace:
            normalized = normalize_whitespace(piece.text)
            if normalized != piece.text:
                before, after = count(piece.text), count(normalized)
                if after < before:
                    _note(outcome, "whitespace", piece, before, after)
                    piece.text = normalized


def _paragraph_key(paragraph: str) -> str:
    return " ".join(_WORDS.findall(paragraph))


def _dedupe(pieces: list[Piece], count: Callable[[str], int], outcome: Outcome) -> None:
    """A paragraph repeated verbatim (whitespace aside) in a later editable piece becomes a
    reference to its first copy, which is then kept verbatim. Paragraphs holding protected
    regions, and copies within one message, are left alone."""
    first_seen: dict[str, tuple[int, Piece]] = {}
    for piece in pieces:
        chunks = _PARAGRAPH_BREAK.split(piece.text)
        changed = False
        for k in range(0, len(chunks), 2):
            paragraph = chunks[k]
            if len(paragraph) < 4 * DEDUPE_MIN_TOKENS or has_protected(paragraph):
                continue
            key = _paragraph_key(paragraph)
            earlier = first_seen.get(key)
            if earlier is None:
                first_seen[key] = (piece.message, piece)
                continue
            if not piece.editable or earlier[0] == piece.message:
                continue
            before = count(paragraph)
            if before < DEDUPE_MIN_TOKENS:
                continue
            opening = " ".join(key.split(" ")[:6])
            reference = (
                f'[repeated: the same text as in message {earlier[0] + 1} above, beginning "{opening}…"]'
            )
            after = count(reference)
            earlier[1].referenced = True
            _note(outcome, "dedupe", piece, before, after, same_as_message=earlier[0])
            chunks[k] = reference
            changed = True
        if changed:
            piece.text = "".join(chunks)


def _extract(
    pieces: list[Piece],
    question: str,
    options: Options,
    count: Callable[[str], int],
    embedder: extractive.SentenceEmbedder | None,
    outcome: Outcome,
) -> None:
    assert options.keep_ratio is not None
    for piece in pieces:
        if not piece.editable or piece.referenced or len(piece.text) < 2 * options.min_block_tokens:
            continue
        if all(region.protected for region in regions(piece.text)):
            continue
        result = extractive.compress(
            piece.text, question, options.keep_ratio, count, embedder, min_tokens=options.min_block_tokens
        )
        if result.tokens_before < options.min_block_tokens:
            continue
        outcome.extractive_before += result.tokens_before
        outcome.extractive_after += result.tokens_after
        if result.dropped:
            _note(
                outcome, "extractive", piece, result.tokens_before, result.tokens_after,
                sentences=result.sentences, sentences_dropped=result.dropped,
            )  # fmt: skip
            piece.text = result.text


def _rebuild(
    messages: Sequence[Any], slots: dict[tuple[int, int | None], list[Piece]], outcome: Outcome
) -> None:
    new_messages = outcome.messages
    for (i, j), slot in slots.items():
        text = "".join(piece.text for piece in slot)
        message = new_messages[i]
        if j is None:
            if text == message.get("content"):
                continue
            new_messages[i] = {**message, "content": text}
        else:
            content = list(message.get("content"))
            if text == content[j].get("text"):
                continue
            content[j] = {**content[j], "text": text}
            new_messages[i] = {**message, "content": content}
        if i not in outcome.changed_messages:
            outcome.changed_messages.append(i)
