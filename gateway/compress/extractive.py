"""Query-aware extractive compression: keep the sentences of a long block that the question needs.

Each sentence is scored against the question by three cheap signals, each standardised
within the block so that none dominates by scale:

- lexical: BM25 of the question's content words over the block's sentences (idf from the
  block itself, so a word every sentence shares weighs nothing);
- entities: the question's names and numbers found verbatim in the sentence;
- meaning: cosine of all-MiniLM-L6-v2's mean word-piece vectors (gateway.routing's
  static embedder, ~0.1 ms a sentence). The full encoder costs 2-3.5 ms a sentence, over
  the budget of 10 ms per 1k tokens by itself (bench/compression_eval.py compares them).

A sentence next to a strong one gets a share of its score (answers often sit beside the
sentence that names the topic). Sentences are then taken best first until the target
share of the block's tokens is reached and emitted in their original order; protected
regions are always kept whole, and a run of dropped sentences leaves one `…` behind.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway.compress.text import Sentence, sentences

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")
_STOP = frozenset(
    """a an the of to in on at for and or but is are was were be been being by with as it its this that these
    those from into than then there their they them he she his her we our you your i me my do does did done
    have has had not no what which who whom whose when where why how can could would should will shall may
    might must about after before over under between during if so such also any all some each other more most
    many much very up down out off only just one two first last same own s t""".split()
)
# How much each signal counts once standardised (bench/compression_eval.py chose them).
W_LEXICAL = 1.0
W_ENTITY = 0.6
W_MEANING = 0.5
NEIGHBOUR_SHARE = 0.25
GAP = "… "


class SentenceEmbedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Extract:
    text: str
    tokens_before: int
    tokens_after: int
    sentences: int
    dropped: int


def _stem(word: str) -> str:
    word = word.lower()
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text) if w.lower() not in _STOP]


def _entities(question: str) -> set[str]:
    """Names and numbers of the question: capitalised words not opening it, and digits."""
    words = _WORD.findall(question)
    found = {w for i, w in enumerate(words) if any(c.isdigit() for c in w)}
    found |= {w for i, w in enumerate(words) if i > 0 and w[0].isupper() and w.lower() not in _STOP}
    return found


def _standardise(values: np.ndarray) -> np.ndarray:
    spread = float(values.std())
    return (values - values.mean()) / spread if spread > 1e-9 else np.zeros_like(values)


def _bm25(docs: list[list[str]], query: list[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    n = len(docs)
    frequencies = [Counter(doc) for doc in docs]
    lengths = np.array([len(doc) for doc in docs], dtype=np.float64)
    average = float(lengths.mean()) or 1.0
    scores = np.zeros(n)
    for term in set(query):
        holding = sum(1 for f in frequencies if term in f)
        if not holding:
            continue
        idf = math.log(1 + (n - holding + 0.5) / (holding + 0.5))
        for i, f in enumerate(frequencies):
            tf = f.get(term, 0)
            if tf:
                scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / average))
    return scores


def score(parts: list[Sentence], question: str, embedder: SentenceEmbedder | None) -> np.ndarray:
    """One relevance score per sentence (protected regions get +inf: always kept)."""
    prose = [i for i, part in enumerate(parts) if not part.protected]
    scores = np.full(len(parts), np.inf)
    if not prose:
        return scores
    texts = [parts[i].text for i in prose]
    combined = W_LEXICAL * _standardise(_bm25([_terms(t) for t in texts], _terms(question)))
    entities = _entities(question)
    if entities:
        hits = np.array([sum(1 for e in entities if e in t) for t in texts], dtype=np.float64)
        combined += W_ENTITY * _standardise(hits)
    if embedder is not None:
        vectors = embedder.embed([question, *texts])  # [1 + S, D], unit rows
        combined += W_MEANING * _standardise(vectors[1:] @ vectors[0])
    # A share of the better neighbour's score, when it is above the block's mean.
    padded = np.pad(combined, 1, constant_values=-np.inf)
    neighbours = np.maximum(padded[:-2], padded[2:])
    combined = combined + NEIGHBOUR_SHARE * np.clip(neighbours, 0, None)
    scores[prose] = combined
    return scores


def compress(
    text: str,
    question: str,
    keep_ratio: float,
    count: Callable[[str], int],
    embedder: SentenceEmbedder | None,
    *,
    min_tokens: int = 0,
) -> Extract:
    """Keep about `keep_ratio` of `text`'s tokens: the sentences that serve `question` best.

    A text under `min_tokens` (counted sentence by sentence) is returned as it is."""
    parts = sentences(text)
    sizes = [count(part.text) for part in parts]
    total = sum(sizes)
    if len(parts) < 2 or total < min_tokens or not question.strip():
        return Extract(text, total, total, len(parts), 0)
    scores = score(parts, question, embedder)
    budget = keep_ratio * total
    keep = [part.protected for part in parts]
    used = sum(size for size, kept in zip(sizes, keep, strict=True) if kept)
    for i in np.argsort(-scores, kind="stable"):
        if keep[i]:
            continue
        if used + sizes[i] <= budget or used == 0:
            keep[i] = True
            used += sizes[i]
    pieces: list[str] = []
    gap_newline: bool | None = None  # None: no gap open
    for part, kept in zip(parts, keep, strict=True):
        if kept:
            if gap_newline is not None and pieces:
                pieces.append(GAP.rstrip() + ("\n" if gap_newline else " "))
            pieces.append(part.text)
            gap_newline = None
        else:
            gap_newline = bool(gap_newline) or "\n" in part.text
    if gap_newline is not None and pieces:
        pieces.append(GAP.rstrip())
    compressed = "".join(pieces)
    dropped = keep.count(False)
    if not dropped:
        return Extract(text, total, total, len(parts), 0)
    return Extract(compressed, total, count(compressed), len(parts), dropped)
