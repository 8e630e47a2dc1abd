"""The static embedder: the tokenizer's own word-pieces, pooled in bulk, one per process."""

from __future__ import annotations

import numpy as np

from gateway.routing.static_embedding import MAX_PIECES, StaticEmbedder, shared_static_embedder

TEXTS = [
    "Café résumé naïve",
    "cafe resume naive",
    "Hello, world! It's 3.14 o'clock; x_y=z.",
    "getWeather(city: str) -> dict\tand\nmore",
    "北京是中国的首都",
    "",
    "   ",
    "word " * 3000,
]


def _one_by_one(embedder: StaticEmbedder, text: str) -> np.ndarray:
    """The tokenizer on the whole text, mean-pooled: what the bulk path must equal."""
    ids = embedder._tokenizer.encode(text[:8_000], add_special_tokens=False).ids[:MAX_PIECES]
    if not ids:
        return np.zeros(embedder.dim, dtype=np.float32)
    vector = embedder._table[ids].astype(np.float32).mean(axis=0)
    return vector / np.linalg.norm(vector)


def test_bulk_vectors_equal_the_tokenizer_on_each_whole_text() -> None:
    embedder = shared_static_embedder()
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dim)
    for text, vector in zip(TEXTS, vectors, strict=True):
        assert np.allclose(vector, _one_by_one(embedder, text), atol=1e-5)
    assert not vectors[5].any() and not vectors[6].any()


def test_accents_and_case_are_normalised_as_the_tokenizer_does() -> None:
    accented, plain = shared_static_embedder().embed(TEXTS[:2])
    assert float(accented @ plain) > 0.999


def test_one_instance_serves_the_process() -> None:
    assert shared_static_embedder() is shared_static_embedder()
