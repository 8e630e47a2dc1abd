"""all-MiniLM-L6-v2's input word-piece vectors, mean-pooled: a sentence vector for ~0.1 ms.

The full encoder costs 2-3.5 ms a prompt; its first layer alone (the word-piece table the
transformer starts from) keeps much of what a router needs (the topic and the kind of task)
at a small fraction of the cost. The table is read from the bundled model's safetensors file
with numpy (no torch): 30,522 x 384 float32, kept as float16 (22 MiB).

Thread-safe: the table is read-only and the tokenizer's settings never change after load.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.semantic.embedder import _default_model_dir

NAME = "all-MiniLM-L6-v2:word-embeddings-mean"
_TENSOR = "embeddings.word_embeddings.weight"
MAX_PIECES = 512


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
        self.dim = int(self._table.shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = self._tokenizer.encode(text[:8_000], add_special_tokens=False).ids[:MAX_PIECES]
            if ids:
                vector = self._table[ids].astype(np.float32).mean(axis=0)
                out[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return out
