"""Sentence vectors for extraction: all-MiniLM-L6-v2's word-piece table, mean-pooled, in bulk.

The same vectors as gateway.routing's `StaticEmbedder`, made for many short texts at once:
a word's word-pieces are looked up once and remembered (a block's words repeat), and every
sentence of a block is pooled in one numpy gather. Per-sentence tokenizer calls made the
static embedder cost ~4 ms per 1k tokens here; this costs well under 1 ms.

Thread-safe enough for its use: the memo only grows, and a lost race recomputes a word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.routing.static_embedding import _TENSOR, _read_tensor
from gateway.semantic.embedder import _default_model_dir

# BERT's basic tokenisation: runs of word characters, and each punctuation mark on its own.
_WORD = re.compile(r"\w+|[^\w\s]")
_MEMO_LIMIT = 200_000


class WordPieceVectors:
    name = "all-MiniLM-L6-v2:word-embeddings-mean"

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
        """Unit vectors, one row per text ([N, D]); a text with no word-piece is all zeros."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids: list[int] = []
        starts: list[int] = []
        rows: list[int] = []
        for row, text in enumerate(texts):
            normalised = unicodedata.normalize("NFKD", text.lower())
            pieces = [i for word in _WORD.findall(normalised) for i in self._pieces(word)]
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
