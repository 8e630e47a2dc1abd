"""The one decision of the semantic cache: which cached entry, if any, answers a query.

The semantic_cache stage and bench/semantic_cache_eval.py both call `best_match`, so the
precision and recall the benchmark reports are those of the code that serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.semantic.index import VectorIndex
from gateway.semantic.verify import verify as verify_pair

# Chosen from the curve of bench/semantic_cache_eval.py (docs/benchmarks.md, "Semantic cache"):
# the lowest step of 0.025 at which, with verification, at least 97% of the hits on GPTCache's
# held-out paraphrases serve the query's own fact (recall 0.64; 0.875 gives 96%, recall 0.73).
DEFAULT_THRESHOLD = 0.90


@dataclass(frozen=True, slots=True)
class Match:
    id: int
    similarity: float


def best_match(
    query: str,
    vector: np.ndarray,
    index: VectorIndex,
    text_of: Callable[[int], str | None],
    *,
    threshold: float,
    verify: bool = True,
    k: int = 4,
) -> Match | None:
    """The most similar entry at or above `threshold` that is still cached and passes `verify`.

    `vector` is the query's embedding; `text_of` gives an entry's query text, or None when
    the entry has been evicted since it was indexed.
    """
    for entry_id, similarity in index.search(vector, k):
        if similarity < threshold:
            break  # best first: nothing after this one clears the threshold either
        cached = text_of(entry_id)
        if cached is None:
            continue
        if verify and not verify_pair(query, cached).ok:
            continue
        return Match(id=entry_id, similarity=similarity)
    return None
