"""L2-regularised logistic regression in numpy, fitted with L-BFGS.

Small on purpose: a decision is one sparse dot product, the fit is deterministic (no random
start, no mini-batches) and needs nothing past numpy. Labels may be soft (in [0, 1]), so a
score gap can be a target as well as a right/wrong outcome.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    out = np.empty_like(z, dtype=np.float64)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    out[~positive] = e / (1.0 + e)
    return out


@dataclass(slots=True)
class LogisticModel:
    weights: np.ndarray  # [dim] float64
    bias: float

    def decision(self, features: np.ndarray) -> np.ndarray:
        """[n, dim] -> [n] probabilities of the positive label."""
        return sigmoid(features.astype(np.float64) @ self.weights + self.bias)


def _loss_and_gradient(
    params: np.ndarray, features: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    weights, bias = params[:-1], params[-1]
    logits = features @ weights + bias  # [n]
    # log(1 + e^z) - y z, stable for large |z|
    loss = float(np.sum(sample_weight * (np.logaddexp(0.0, logits) - labels * logits)))
    residual = sample_weight * (sigmoid(logits) - labels)  # [n]
    gradient = np.empty_like(params)
    gradient[:-1] = features.T @ residual + l2 * weights
    gradient[-1] = residual.sum()
    return loss + 0.5 * l2 * float(weights @ weights), gradient


def fit_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    l2: float = 1.0,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 300,
    tolerance: float = 1e-6,
) -> LogisticModel:
    """Minimise sum_i w_i BCE(y_i, sigmoid(x_i . w + b)) / sum(w) + l2/2 |w|^2 / n (bias unpenalised).

    `l2` is per example (like scikit-learn's 1/C scaled by n), so one value suits any data size.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features [n, dim] and labels [n] expected, got {x.shape} and {y.shape}")
    if x.shape[0] == 0:
        raise ValueError("cannot fit a router on no examples")
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    weight = weight / weight.sum()  # mean loss: the step sizes do not depend on n
    penalty = l2 / len(y)
    params = np.zeros(x.shape[1] + 1)
    base = float(np.clip(np.sum(weight * y), 1e-6, 1 - 1e-6))
    params[-1] = np.log(base / (1 - base))  # start at the label rate: fewer iterations
    loss, gradient = _loss_and_gradient(params, x, y, weight, penalty)
    history: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=10)
    for _ in range(max_iter):
        direction = _two_loop(gradient, history)
        step, slope = 1.0, float(gradient @ direction)
        if slope >= 0:  # not a descent direction (numerical noise): restart from the gradient
            history.clear()
            direction, slope = -gradient, -float(gradient @ gradient)
        while True:  # backtracking line search (Armijo)
            candidate = params + step * direction
            new_loss, new_gradient = _loss_and_gradient(candidate, x, y, weight, penalty)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, g = candidate - params, new_gradient - gradient
        curvature = float(s @ g)
        if curvature > 1e-12:
            history.append((s, g, 1.0 / curvature))
        params, gradient, previous, loss = candidate, new_gradient, loss, new_loss
        if abs(previous - loss) <= tolerance * max(1.0, abs(loss)) or np.abs(gradient).max() < tolerance:
            break
    return LogisticModel(weights=params[:-1].copy(), bias=float(params[-1]))


def _two_loop(gradient: np.ndarray, history: deque[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """The L-BFGS direction -H gradient from the last few (step, gradient change) pairs."""
    q = gradient.copy()
    alphas = []
    for s, g, rho in reversed(history):
        alpha = rho * float(s @ q)
        q -= alpha * g
        alphas.append(alpha)
    if history:
        s, g, _ = history[-1]
        q *= float(s @ g) / float(g @ g)
    for (s, g, rho), alpha in zip(history, reversed(alphas), strict=True):
        beta = rho * float(g @ q)
        q += (alpha - beta) * s
    return -q
