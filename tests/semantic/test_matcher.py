"""best_match: the threshold, the verifier and evicted entries, with the real embedder."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.env import prepare_offline_environment

prepare_offline_environment()

from gateway.semantic.embedder import Embedder, load_embedder  # noqa: E402
from gateway.semantic.index import VectorIndex  # noqa: E402
from gateway.semantic.matcher import DEFAULT_THRESHOLD, Match, best_match  # noqa: E402

CACHED = [
    "How many calories are in 5 apples?",
    "What is the capital of France?",
    "How do I reverse a list in Python?",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture(scope="module")
def index(embedder: Embedder) -> VectorIndex:
    index = VectorIndex(embedder.dim)
    index.add(range(len(CACHED)), embedder.embed(CACHED))
    return index


def ask(embedder: Embedder, index: VectorIndex, query: str, **options: object) -> Match | None:
    text_of = options.pop("text_of", lambda i: CACHED[i])
    options.setdefault("threshold", DEFAULT_THRESHOLD)
    return best_match(query, embedder.embed([query])[0], index, text_of, **options)  # type: ignore[arg-type]


def test_a_paraphrase_above_the_threshold_is_served(embedder: Embedder, index: VectorIndex) -> None:
    match = ask(embedder, index, "What's the capital of France?")
    assert match is not None and match.id == 1 and DEFAULT_THRESHOLD <= match.similarity <= 1.0


def test_nothing_below_the_threshold(embedder: Embedder, index: VectorIndex) -> None:
    query = "What's the capital of France?"
    similarity = float(embedder.embed([query])[0] @ embedder.embed([CACHED[1]])[0])
    assert ask(embedder, index, query, threshold=similarity + 0.001) is None
    assert ask(embedder, index, query, threshold=similarity - 0.001) == Match(1, pytest.approx(similarity, abs=1e-4))
    assert ask(embedder, index, "Write a haiku about autumn leaves.") is None


def test_the_verifier_refuses_what_the_embedding_accepts(embedder: Embedder, index: VectorIndex) -> None:
    query = "How many calories are in 7 apples?"
    unchecked = ask(embedder, index, query, verify=False, threshold=0.8)
    assert unchecked is not None and unchecked.id == 0  # the embedding alone would serve 5 apples' answer
    assert ask(embedder, index, query, threshold=0.8) is None


def test_evicted_entries_are_skipped(embedder: Embedder) -> None:
    texts = ["What is the capital of France?", "Tell me the capital city of France."]
    index = VectorIndex(embedder.dim)
    index.add([0, 1], embedder.embed(texts))
    query = "What's the capital of France?"
    best = ask(embedder, index, query, text_of=lambda i: texts[i])
    assert best is not None
    evicted = best.id
    other = ask(embedder, index, query, text_of=lambda i: None if i == evicted else texts[i], threshold=0.8)
    assert other is not None and other.id == 1 - evicted
    assert ask(embedder, index, query, text_of=lambda i: None) is None


def test_a_refused_candidate_lets_the_next_one_serve(embedder: Embedder) -> None:
    texts = ["How many calories are in 7 apples?", "How many calories do 5 apples have?"]
    index = VectorIndex(embedder.dim)
    index.add([0, 1], embedder.embed(texts))
    match = ask(embedder, index, "How many calories are in 5 apples?", text_of=texts.__getitem__, threshold=0.8)
    assert match is not None and match.id == 1


def test_an_empty_index_matches_nothing(embedder: Embedder) -> None:
    assert ask(embedder, VectorIndex(embedder.dim), "anything") is None


def test_the_default_threshold_is_a_similarity() -> None:
    assert 0.0 < DEFAULT_THRESHOLD < 1.0 and np.isfinite(DEFAULT_THRESHOLD)
