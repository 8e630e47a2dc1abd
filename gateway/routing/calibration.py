"""From held-out scores to thresholds: the least share of strong calls that keeps a quality target.

A router scores each prompt (higher: the strong model is more needed) and sends it to the
strong model when `score > threshold`. Over a labelled set, each threshold gives a share of
strong calls and a quality: the mean, over prompts, of the chosen model's score. Quality is
stated relative to sending every prompt to the strong model, so a team's target reads "keep
95% of the strong model's quality" (RouteLLM's curves, with quality where they use PGR).

Only cuts between two distinct scores are thresholds that can be deployed: prompts with
equal scores go the same way, so ties are never split here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# Scores are probabilities: a threshold of 1.0 sends nothing to the strong model, -1.0 all.
NEVER_STRONG = 1.0
ALWAYS_STRONG = -1.0
DEFAULT_TARGETS = (0.80, 0.85, 0.90, 0.925, 0.95, 0.97, 0.98, 0.99, 1.0)


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float  # strong iff score > threshold
    strong_share: float  # fraction of prompts sent to the strong model
    quality: float  # mean score of the chosen model
    relative_quality: float  # quality / quality with every prompt on the strong model


def quality_curve(scores: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> list[CurvePoint]:
    """Every deployable cut, from no strong call to all strong calls."""
    scores, strong, weak = (np.asarray(a, dtype=np.float64) for a in (scores, strong, weak))
    n = len(scores)
    if n == 0 or strong.shape != (n,) or weak.shape != (n,):
        raise ValueError(f"scores, strong and weak must be equal non-empty vectors, got {n}, {strong.shape}, {weak.shape}")
    strong_quality = float(strong.mean())
    if strong_quality <= 0:
        raise ValueError("the strong model's mean score is not positive: quality relative to it is undefined")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    gain = np.concatenate([[0.0], np.cumsum(strong[order] - weak[order])])  # [n + 1]
    base = float(weak.sum())
    cuts = [0, *(k for k in range(1, n) if ranked[k - 1] > ranked[k]), n]
    points = []
    for k in cuts:
        if k == 0:
            threshold = NEVER_STRONG
        elif k == n:
            threshold = ALWAYS_STRONG
        else:
            threshold = float((ranked[k - 1] + ranked[k]) / 2.0)
        quality = (base + gain[k]) / n
        points.append(CurvePoint(threshold, k / n, quality, quality / strong_quality))
    return points


def cheapest_point(curve: list[CurvePoint], target: float) -> CurvePoint:
    """The point with the least strong share whose relative quality reaches `target`.

    If no point reaches it (the weak model beats the strong one nowhere and the target is above
    1.0), the best-quality point: the target cannot be met, and the closest is all strong calls.
    """
    meeting = [p for p in curve if p.relative_quality >= target - 1e-12]
    if not meeting:
        return max(curve, key=lambda p: (p.relative_quality, -p.strong_share))
    return min(meeting, key=lambda p: (p.strong_share, -p.relative_quality))


def calibration_table(
    scores: np.ndarray, strong: np.ndarray, weak: np.ndarray, targets: tuple[float, ...] = DEFAULT_TARGETS
) -> dict[str, dict[str, float]]:
    """target -> {threshold, strong_share, relative_quality}, measured on held-out scores."""
    curve = quality_curve(scores, strong, weak)
    table = {}
    for target in targets:
        point = cheapest_point(curve, target)
        table[f"{target:g}"] = {
            "threshold": point.threshold,
            "strong_share": point.strong_share,
            "relative_quality": point.relative_quality,
        }
    return table


def random_share(target: float, strong_quality: float, weak_quality: float) -> float:
    """Strong share random routing needs, in expectation, for `target` of the strong quality."""
    if strong_quality <= weak_quality:
        return 0.0 if weak_quality >= target * strong_quality else 1.0
    return float(np.clip((target * strong_quality - weak_quality) / (strong_quality - weak_quality), 0.0, 1.0))


def area_under_curve(curve: list[CurvePoint]) -> float:
    """Mean relative quality over strong shares 0..1 (step curve: each cut holds until the next)."""
    area = 0.0
    for left, right in itertools.pairwise(curve):
        area += (right.strong_share - left.strong_share) * (left.relative_quality + right.relative_quality) / 2.0
    return area
