"""What a router sees of a prompt: hashed word n-grams, a few structure counts, optionally MiniLM.

Three kinds of features, chosen per artifact by a `FeatureSpec`:

- `ngrams`: word unigrams and bigrams (numbers folded into a token per digit count) hashed
  with CRC-32 into `hash_dim` buckets, sublinear term frequency times an IDF learned at
  training, L2-normalised. CRC-32 and not Python's `hash`, which changes per process.
- `structure`: counts a reader would use to guess difficulty: length, numbers, operators,
  sentences, questions, code, lines; log-scaled, then standardised with the training mean.
- `static`: all-MiniLM-L6-v2's input word-piece vectors, mean-pooled (384-d, ~0.1 ms;
  gateway.routing.static_embedding).
- `embedding`: the full all-MiniLM-L6-v2 sentence vector (384-d). Costs 2-3.5 ms a prompt,
  alone past a routing decision's 2 ms budget; measured (docs/routing.md), not the default.

A prompt becomes one float32 row: [ngrams | structure | static | embedding], each part
present only if the spec names it.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FEATURE_VERSION = 1
KINDS = ("ngrams", "structure", "static", "embedding")

# Numbers (with decimal or thousands separators), words (with an apostrophe), single symbols.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[a-z]+(?:'[a-z]+)?|[^\s\w]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_OPERATOR = re.compile(r"[-+*/=^<>]")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|[{};]|\bimport ")
_QUESTION_WORD = re.compile(r"\b(?:how|what|which|who|when|where|why|find|calculate|compute)\b")
# A prompt is cut here before featurising: the cost stays bounded for a huge prompt, and the
# start of a prompt says what is asked.
MAX_CHARS = 8_000

STRUCTURE_NAMES = (
    "log_chars", "log_words", "log_numbers", "log_distinct_numbers", "log_max_number", "log_decimals",
    "log_operators", "log_sentences", "log_questions", "log_question_words", "log_code_marks",
    "log_lines", "log_currency", "log_percent", "mean_word_len",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """Which features, and their sizes; stored in the artifact."""

    kinds: tuple[str, ...] = ("structure", "static")
    hash_dim: int = 4096
    bigrams: bool = True
    version: int = FEATURE_VERSION

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"feature kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if self.hash_dim < 16 or self.hash_dim & (self.hash_dim - 1):
            raise ValueError(f"hash_dim must be a power of two >= 16, got {self.hash_dim}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kinds": list(self.kinds)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        if data.get("version") != FEATURE_VERSION:
            raise ValueError(
                f"router artifact has feature version {data.get('version')}; this build reads {FEATURE_VERSION}: "
                "train the router again"
            )
        return cls(kinds=tuple(data["kinds"]), hash_dim=int(data["hash_dim"]), bigrams=bool(data["bigrams"]))


def tokens(text: str) -> list[str]:
    """Lowercased word tokens; a number becomes `<n3>` (its digit count), so 250 and 731 agree."""
    out = []
    for token in _TOKEN.findall(text[:MAX_CHARS].lower()):
        if token[0].isdigit():
            digits = sum(c.isdigit() for c in token)
            token = f"<n{min(digits, 9)}{'.' if '.' in token else ''}>"
        out.append(token)
    return out


def hashed_counts(text: str, spec: FeatureSpec) -> dict[int, float]:
    """bucket -> count of the prompt's unigrams (and bigrams) hashed into spec.hash_dim buckets."""
    words = tokens(text)
    grams = words if not spec.bigrams else [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]
    mask = spec.hash_dim - 1
    counts: dict[int, float] = {}
    for gram in grams:
        bucket = zlib.crc32(gram.encode()) & mask
        counts[bucket] = counts.get(bucket, 0.0) + 1.0
    return counts


def structure(text: str) -> np.ndarray:
    """The STRUCTURE_NAMES counts of one prompt, log1p-scaled (raw, before standardising)."""
    text = text[:MAX_CHARS]
    lower = text.lower()
    numbers = _NUMBER.findall(text)
    words = text.split()
    largest = 0.0
    for number in numbers:
        try:
            largest = max(largest, float(number.replace(",", "")))
        except ValueError:  # "1.2.3": a version or a date, not a quantity
            continue
    raw = (
        len(text), len(words), len(numbers), len(set(numbers)), math.log1p(largest),
        sum("." in n for n in numbers), len(_OPERATOR.findall(text)), len(_SENTENCE_END.findall(text)) or 1,
        text.count("?"), len(_QUESTION_WORD.findall(lower)), len(_CODE.findall(text)), text.count("\n") + 1,
        text.count("$") + text.count("€") + text.count("£"), text.count("%") + lower.count("percent"),
    )  # fmt: skip
    mean_word_len = (sum(len(w) for w in words) / len(words)) if words else 0.0
    return np.array([math.log1p(v) for v in raw] + [mean_word_len], dtype=np.float64)


@dataclass(slots=True)
class Featurizer:
    """A FeatureSpec plus what was learned from the training prompts (IDF, standardisation)."""

    spec: FeatureSpec
    idf: np.ndarray  # [hash_dim] float64, ones when ngrams are off
    structure_mean: np.ndarray  # [len(STRUCTURE_NAMES)]
    structure_std: np.ndarray
    static: Any = None  # StaticEmbedder, only when "static" is a kind
    embedder: Any = None  # gateway.semantic.embedder.Embedder, only when "embedding" is a kind

    @classmethod
    def fit(
        cls, prompts: Sequence[str], spec: FeatureSpec, static: Any = None, embedder: Any = None
    ) -> Featurizer:
        idf = np.ones(spec.hash_dim)
        if "ngrams" in spec.kinds:
            document_frequency = np.zeros(spec.hash_dim)
            for prompt in prompts:
                document_frequency[list(hashed_counts(prompt, spec))] += 1.0
            # Smoothed IDF (as scikit-learn's): a bucket seen in every prompt still weighs 1.
            idf = np.log((1.0 + len(prompts)) / (1.0 + document_frequency)) + 1.0
        rows = np.stack([structure(p) for p in prompts]) if prompts else np.zeros((1, len(STRUCTURE_NAMES)))
        std = rows.std(axis=0)
        std[std < 1e-9] = 1.0  # a constant count carries nothing; keep it at zero, not NaN
        return cls(spec, idf, rows.mean(axis=0), std, *load_encoders(spec, static, embedder))

    @property
    def dim(self) -> int:
        size = 0
        if "ngrams" in self.spec.kinds:
            size += self.spec.hash_dim
        if "structure" in self.spec.kinds:
            size += len(STRUCTURE_NAMES)
        if "static" in self.spec.kinds:
            size += int(self.static.dim)
        if "embedding" in self.spec.kinds:
            size += int(self.embedder.dim)
        return size

    def transform(self, prompts: Sequence[str]) -> np.ndarray:
        """[len(prompts), dim] float32 rows."""
        out = np.zeros((len(prompts), self.dim), dtype=np.float32)
        for i, prompt in enumerate(prompts):
            self._row(prompt, out[i])
        if not prompts:
            return out
        end = self.dim
        if "embedding" in self.spec.kinds:
            out[:, end - int(self.embedder.dim) : end] = self.embedder.embed(list(prompts))
            end -= int(self.embedder.dim)
        if "static" in self.spec.kinds:
            out[:, end - int(self.static.dim) : end] = self.static.embed(list(prompts))
        return out

    def _row(self, prompt: str, row: np.ndarray) -> None:
        offset = 0
        if "ngrams" in self.spec.kinds:
            counts = hashed_counts(prompt, self.spec)
            if counts:
                buckets = np.fromiter(counts, dtype=np.int64, count=len(counts))
                weights = np.log1p(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
                weights *= self.idf[buckets]
                row[buckets] = weights / np.linalg.norm(weights)
            offset = self.spec.hash_dim
        if "structure" in self.spec.kinds:
            row[offset : offset + len(STRUCTURE_NAMES)] = (structure(prompt) - self.structure_mean) / self.structure_std

    def arrays(self) -> dict[str, np.ndarray]:
        return {"idf": self.idf, "structure_mean": self.structure_mean, "structure_std": self.structure_std}


def load_encoders(spec: FeatureSpec, static: Any = None, embedder: Any = None) -> tuple[Any, Any]:
    """The (static, full) sentence encoders `spec` needs, loaded unless given."""
    if "static" in spec.kinds and static is None:
        from gateway.routing.static_embedding import shared_static_embedder

        static = shared_static_embedder()
    if "embedding" in spec.kinds and embedder is None:
        from gateway.semantic.embedder import load_embedder

        embedder = load_embedder()
    return static, embedder
