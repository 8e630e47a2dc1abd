"""all-MiniLM-L6-v2's input word-piece vectors, mean-pooled: a sentence vector for ~0.1 ms.

The full encoder costs 2-3.5 ms a prompt; its first layer alone (the word-piece table the
transformer starts from) keeps much of what a router needs (the topic and the kind of task)
at a small fraction of the cost. The table is read from the bundled model's safetensors file
with numpy (no torch): 30,522 x 384 float32, kept as float16 (22 MiB).

Made for many short texts at once (compression scores every sentence of a block): a text is
split at whitespace, each word's word-pieces are looked up by the model's tokenizer once and
remembered (its normalisation included: lower case, accents stripped), and every text of a
call is pooled in one numpy gather. One instance serves the process (`shared_static_embedder`).

Thread-safe: the table is read-only, the tokenizer's settings never change after load, and
the word memo only grows (a lost race recomputes a word).
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.semantic.embedder import _default_model_dir

NAME = "all-MiniLM-L6-v2:word-embeddings-mean"
_TENSOR = "embeddings.word_embeddings.weight"
MAX_PIECES = 512
MAX_CHARS = 8_000
_MEMO_LIMIT = 200_000


def _read_tensor(path: Path, name: str) -> np.ndarray:
    """One float32 tensor of a safetensors file: 8-byte header size, JSON header, raw data."""
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
        entry = next((v for k, v in header.items() if k.endswith(name)), None)
        if entry is None or entry.get("dtype") != "F32":
            raise ValueError(f"{path} holds no float32 tensor {name!r}")
        start, end = entry["data_offsets"]
        handle.seek(8 + header_size + start)
        data = handle.read(end - start)
    return np.frombuffer(data, dtype=np.float32).reshape(entry["shape"])


class StaticEmbedder:
    name = NAME

    def __init__(self, model_dir: Path | None = None) -> None:
        import tokenizers

        directory = model_dir or _default_model_dir()
        self._table = _read_tensor(directory / "model.safetensors", _TENSOR).astype(np.float16)  # [V, D]
        self._tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._memo: dict[str, list[int]] = {}
        self.dim = int(self._table.shape[1])

    def _pieces(self, word: str) -> list[int]:
        ids = self._memo.get(word)
        if ids is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            ids = self._memo[word] = self._tokenizer.encode(word, add_special_tokens=False).ids
        return ids

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text ([N, D]); a text with no word-piece is all zeros.

        A text counts up to its first MAX_CHARS characters and MAX_PIECES word-pieces."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids: list[int] = []
        starts: list[int] = []
        rows: list[int] = []
        for row, text in enumerate(texts):
            # The tokenizer splits at whitespace first: word by word, the pieces are the same.
            pieces = [i for word in text[:MAX_CHARS].split() for i in self._pieces(word)][:MAX_PIECES]
            if pieces:
                rows.append(row)
                starts.append(len(ids))
                ids.extend(pieces)
        if not ids:
            return out
        gathered = self._table[np.asarray(ids)].astype(np.float32)  # [P, D]
        sums = np.add.reduceat(gathered, np.asarray(starts), axis=0)  # [R, D]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        out[rows] = sums / np.maximum(norms, 1e-12)
        return out


_SHARED: dict[Path | None, StaticEmbedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_static_embedder(model_dir: Path | None = None) -> StaticEmbedder:
    """One static embedder per model for the whole process: routing, tool selection and
    compression share its table (22 MiB), its word memo and its load time (~0.4 s). Thread-safe."""
    with _SHARED_LOCK:
        embedder = _SHARED.get(model_dir)
        if embedder is None:
            embedder = _SHARED[model_dir] = StaticEmbedder(model_dir)
        return embedder
