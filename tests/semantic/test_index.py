"""VectorIndex: exact below the size limit, HNSW above, the same answers either way."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.semantic.index import VectorIndex

DIM = 32


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return unit(np.random.default_rng(0).standard_normal((600, DIM)))


def noisy(vectors: np.ndarray, seed: int = 1) -> np.ndarray:
    return unit(vectors + 0.05 * np.random.default_rng(seed).standard_normal(vectors.shape))


def test_exact_and_hnsw_agree_on_the_nearest(data: np.ndarray) -> None:
    exact, hnsw = VectorIndex(DIM), VectorIndex(DIM, exact_below=0)
    exact.add(range(len(data)), data)
    hnsw.add(range(len(data)), data)
    assert (exact.kind, hnsw.kind) == ("exact", "hnsw")
    queries = noisy(data[:200])
    for n, query in enumerate(queries):
        (exact_id, exact_sim), *_ = exact.search(query, 4)
        (hnsw_id, hnsw_sim), *_ = hnsw.search(query, 4)
        assert exact_id == hnsw_id == n
        # The graph keeps float16 vectors: its similarity is within 1e-3 of the exact one.
        assert abs(exact_sim - hnsw_sim) < 1e-3


@pytest.mark.parametrize("exact_below", [4096, 0])
def test_results_are_best_first_with_cosine_similarity(data: np.ndarray, exact_below: int) -> None:
    index = VectorIndex(DIM, exact_below=exact_below)
    index.add(range(len(data)), data)
    found = index.search(data[7], 5)
    assert found[0][0] == 7 and found[0][1] == pytest.approx(1.0, abs=1e-3)
    similarities = [s for _, s in found]
    assert similarities == sorted(similarities, reverse=True)
    assert len(index) == len(data) and index.nbytes > 0


@pytest.mark.parametrize("exact_below", [4096, 0])
def test_remove_and_replace(data: np.ndarray, exact_below: int) -> None:
    index = VectorIndex(DIM, exact_below=exact_below)
    index.add([10, 11, 12], data[:3])
    index.remove([11, 999])  # an absent id is ignored
    assert len(index) == 2 and 11 not in index and 10 in index
    assert all(i != 11 for i, _ in index.search(data[1], 3))
    index.add([10], data[5:6])  # re-adding an id replaces its vector
    assert len(index) == 2
    assert index.search(data[5], 1)[0][0] == 10
    assert all(not (i == 10 and s > 0.99) for i, s in index.search(data[0], 3))


def test_the_last_vector_given_for_an_id_wins(data: np.ndarray) -> None:
    index = VectorIndex(DIM)
    index.add([3, 3], data[:2])
    assert len(index) == 1 and index.search(data[1], 1)[0] == (3, pytest.approx(1.0, abs=1e-5))


def test_crossing_exact_below_migrates_both_ways(data: np.ndarray) -> None:
    index = VectorIndex(DIM, exact_below=100)
    index.add(range(99), data[:99])
    assert index.kind == "exact"
    index.add([99], data[99:100])
    assert index.kind == "hnsw" and len(index) == 100
    for n in (0, 50, 99):
        assert index.search(noisy(data[n : n + 1])[0], 1)[0][0] == n
    index.remove(range(60))  # 40 left: below half the limit, back to the exact matrix
    assert index.kind == "exact" and len(index) == 40
    assert index.search(data[70], 1)[0] == (70, pytest.approx(1.0, abs=1e-3))


@pytest.mark.parametrize("exact_below", [4096, 0])
def test_an_empty_index_finds_nothing(exact_below: int) -> None:
    index = VectorIndex(DIM, exact_below=exact_below)
    assert index.search(np.ones(DIM, dtype=np.float32) / DIM**0.5, 4) == []
    index.add([1], unit(np.ones((1, DIM))))
    index.remove([1])
    assert index.search(np.ones(DIM, dtype=np.float32), 4) == [] and len(index) == 0


def test_k_larger_than_the_index_returns_everything(data: np.ndarray) -> None:
    index = VectorIndex(DIM)
    index.add(range(3), data[:3])
    assert sorted(i for i, _ in index.search(data[0], 10)) == [0, 1, 2]
    assert index.search(data[0], 0) == []


def test_bad_input_is_refused(data: np.ndarray) -> None:
    index = VectorIndex(DIM)
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        index.add([1], np.ones((1, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="2 ids for 1 vectors"):
        index.add([1, 2], data[:1])
    with pytest.raises(ValueError, match="non-negative"):
        index.add([-1], data[:1])
    with pytest.raises(ValueError, match="32 dimensions"):
        index.search(np.ones(8, dtype=np.float32), 1)
