"""The learned router: train from labelled prompts, save and load the artifact, decide per prompt.

The model is a logistic regression over `gateway.routing.features`. Its default label is the
strong model's expected gain, soft: (strong - weak + R) / 2R in [0, 1], R the span of the
scores in the data (1 for right/wrong), so the score ranks prompts by E[strong - weak], which
is what the quality curve rewards. The earlier label, 1 where the strong score is higher,
treats "both right" and "only the weak one right" alike; it stays available (`needs_strong`).

Thresholds come from held-out (k-fold, out-of-fold) predictions: for each quality target,
the threshold with the least share of strong calls that still keeps the target
(gateway.routing.calibration). The final model is then fitted on every prompt, with the
same label and regularisation as the folds.

Artifact: a directory with `router.json` (format, feature spec, encoder names, models,
calibration table, data summary) and `model.npz` (weights, bias, IDF, standardisation).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.routing.calibration import DEFAULT_TARGETS, CurvePoint, calibration_table, quality_curve
from gateway.routing.data import LabelledSet
from gateway.routing.features import FeatureSpec, Featurizer, load_encoders
from gateway.routing.model import LogisticModel, fit_logistic

ARTIFACT_FORMAT = "tollgate-router/1"
META_FILE = "router.json"
WEIGHTS_FILE = "model.npz"
DEFAULT_L2 = 1.0
DEFAULT_TARGET = 0.95


@dataclass(frozen=True, slots=True)
class Decision:
    use_strong: bool
    score: float  # the model's output in [0, 1]: higher, the strong model is more needed
    threshold: float  # strong iff score > threshold
    target: float  # the calibrated target whose threshold was used


@dataclass(slots=True)
class TrainingReport:
    held_out_scores: np.ndarray  # [n] out-of-fold scores
    curve: list[CurvePoint]
    folds: int
    seconds: float


class Router:
    """A trained router. Thread-safe: decide() reads the model and writes nothing."""

    def __init__(self, featurizer: Featurizer, model: LogisticModel, meta: dict[str, Any]) -> None:
        self.featurizer = featurizer
        self.model = model
        self.meta = meta
        table = meta["calibration"]
        self._targets = sorted((float(k), float(v["threshold"])) for k, v in table.items())
        if not self._targets:
            raise ValueError("router artifact has an empty calibration table")

    @property
    def strong_model(self) -> str:
        return str(self.meta["strong_model"])

    @property
    def weak_model(self) -> str:
        return str(self.meta["weak_model"])

    @property
    def targets(self) -> list[float]:
        return [t for t, _ in self._targets]

    def threshold_for(self, target: float = DEFAULT_TARGET) -> tuple[float, float]:
        """(calibrated target, threshold): the least stored target >= `target` (never below it).

        A target above every stored one gets the highest stored one: the closest available.
        """
        for stored, threshold in self._targets:
            if stored >= target - 1e-9:
                return stored, threshold
        return self._targets[-1]

    def score(self, prompt: str) -> float:
        features = self.featurizer.transform([prompt])
        return float(self.model.decision(features)[0])

    def decide(self, prompt_text: str, target: float = DEFAULT_TARGET) -> Decision:
        stored, threshold = self.threshold_for(target)
        score = self.score(prompt_text)
        return Decision(use_strong=score > threshold, score=score, threshold=threshold, target=stored)

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {"weights": self.model.weights, "bias": np.array([self.model.bias]), **self.featurizer.arrays()}
        np.savez(out / WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]
        (out / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | Path, static: Any = None, embedder: Any = None) -> Router:
        """Read an artifact; `static`/`embedder` reuse encoders already loaded by the process."""
        path = Path(directory)
        meta_path, weights_path = path / META_FILE, path / WEIGHTS_FILE
        if not meta_path.is_file() or not weights_path.is_file():
            raise ValueError(f"{path} is not a router artifact: it needs {META_FILE} and {WEIGHTS_FILE}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, this build reads {ARTIFACT_FORMAT!r}")
        spec = FeatureSpec.from_json(meta["features"])
        with np.load(weights_path) as arrays:
            static, embedder = load_encoders(spec, static, embedder)
            featurizer = Featurizer(
                spec, arrays["idf"], arrays["structure_mean"], arrays["structure_std"], static, embedder
            )
            model = LogisticModel(weights=arrays["weights"].copy(), bias=float(arrays["bias"][0]))
        if model.weights.shape != (featurizer.dim,):
            raise ValueError(f"{weights_path}: {model.weights.shape[0]} weights for {featurizer.dim} features")
        return cls(featurizer, model, meta)


def needs_strong(data: LabelledSet) -> np.ndarray:
    """Hard label: 1 where the strong model scores strictly higher (ties: the weak one is enough)."""
    return (data.strong > data.weak).astype(np.float64)


def expected_gain(data: LabelledSet) -> np.ndarray:
    """Soft label: the strong model's gain mapped onto [0, 1]; 0.5 where both score the same.

    (strong - weak + R) / 2R with R the span of every score in the data (1 for right/wrong,
    9 for a 1-10 judge). A logistic fit of it estimates (E[strong - weak] + R) / 2R, monotone
    in the expected gain: "only the weak one right" now counts against the strong model.
    """
    scores = np.concatenate([data.strong, data.weak])
    span = float(scores.max() - scores.min()) if len(scores) else 0.0
    if span <= 0:
        return np.full(len(data), 0.5)
    gain: np.ndarray = (data.strong - data.weak + span) / (2.0 * span)
    return gain


LABELS = {"expected_gain": expected_gain, "needs_strong": needs_strong}
LABEL_TEXT = {"expected_gain": "(strong - weak + span) / (2 span)", "needs_strong": "strong_score > weak_score"}
DEFAULT_LABEL = "expected_gain"


def labels_for(data: LabelledSet, label: str) -> np.ndarray:
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    return LABELS[label](data)


def _fit(prompts: list[str], labels: np.ndarray, spec: FeatureSpec, l2: float, encoders: tuple[Any, Any]) -> tuple[Featurizer, LogisticModel]:
    featurizer = Featurizer.fit(prompts, spec, *encoders)
    return featurizer, fit_logistic(featurizer.transform(prompts), labels, l2=l2)


def fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """[n] fold index per example: a seeded shuffle, folds as equal as n allows."""
    return np.random.default_rng(seed).permutation(n) % folds


def held_out_scores(
    data: LabelledSet,
    spec: FeatureSpec,
    l2: float,
    folds: int,
    seed: int = 0,
    encoders: tuple[Any, Any] = (None, None),
    label: str = DEFAULT_LABEL,
) -> np.ndarray:
    """Out-of-fold scores: each prompt scored by a router that never saw it."""
    if folds < 2 or folds > len(data):
        raise ValueError(f"folds must be between 2 and the number of prompts ({len(data)}), got {folds}")
    encoders = load_encoders(spec, *encoders)
    labels = labels_for(data, label)
    ids = fold_ids(len(data), folds, seed)
    scores = np.zeros(len(data))
    for fold in range(folds):
        train = np.flatnonzero(ids != fold)
        test = np.flatnonzero(ids == fold)
        featurizer, model = _fit([data.prompts[i] for i in train], labels[train], spec, l2, encoders)
        scores[test] = model.decision(featurizer.transform([data.prompts[i] for i in test]))
    return scores


def train_router(
    data: LabelledSet,
    strong_model: str,
    weak_model: str,
    spec: FeatureSpec | None = None,
    l2: float = DEFAULT_L2,
    folds: int = 5,
    seed: int = 0,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    encoders: tuple[Any, Any] = (None, None),
    label: str = DEFAULT_LABEL,
) -> tuple[Router, TrainingReport]:
    """Calibrate on out-of-fold scores, then fit the served model on every prompt."""
    started = time.perf_counter()
    spec = spec or FeatureSpec()
    labels = labels_for(data, label)
    encoders = load_encoders(spec, *encoders)
    scores = held_out_scores(data, spec, l2, folds, seed, encoders, label)
    featurizer, model = _fit(data.prompts, labels, spec, l2, encoders)
    curve = quality_curve(scores, data.strong, data.weak)
    meta = {
        "format": ARTIFACT_FORMAT,
        "strong_model": strong_model,
        "weak_model": weak_model,
        "features": spec.to_json(),
        "encoders": {
            "static": getattr(featurizer.static, "name", None),
            "embedding": getattr(featurizer.embedder, "name", None),
        },
        "model": {"kind": "logistic_regression", "label": LABEL_TEXT[label], "label_kind": label, "l2": l2},
        "calibration": calibration_table(scores, data.strong, data.weak, targets),
        "calibration_method": f"{folds}-fold out-of-fold scores, seed {seed}",
        "training_data": data.summary(),
        "trained_at_unix": int(time.time()),
    }
    report = TrainingReport(scores, curve, folds, time.perf_counter() - started)
    return Router(featurizer, model, meta), report
