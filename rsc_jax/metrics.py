"""Small evaluation metrics: QTE, accuracy, standard errors, monotonicity.

QTE (SPEC §4; Wu et al., ACM MM 2024) summarises a robustness curve A(eta) of accuracy
against attack strength eta by its normalised trapezoid area

    QTE = (1 / eta_max) * sum_k (eta_{k+1} - eta_k) (A(eta_{k+1}) + A(eta_k)) / 2,

which reads as a mean accuracy over [eta_0, eta_max] (over [0, eta_max] when the grid
starts at 0, as the default {0, 1, 2, 4, 8}/255 does). The best noise level sigma is the
one that maximises QTE.

NumPy only (host-side); imports nothing else from the package.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def qte(etas: Sequence[float], accuracies: Sequence[float]) -> float:
    """Normalised trapezoid area under accuracy vs attack strength (see module docstring).

    Args:
      etas: attack strengths, strictly increasing, >= 0, at least 2, max > 0.
      accuracies: accuracies at ``etas`` (same length, finite; any unit, e.g. [0, 1]).

    Returns:
      sum_k (eta_{k+1} - eta_k)(A_{k+1} + A_k)/2 / max(eta), a float.

    Raises:
      ValueError: naming the argument, its value and what is allowed.
    """
    e = np.asarray(etas, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"etas={list(np.ravel(e))} is not allowed; need a 1-D grid of at least 2 points")
    if a.shape != e.shape:
        raise ValueError(f"accuracies has {a.size} values but etas has {e.size}; they must have the same length")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError(f"etas={e.tolist()} is not allowed; etas must be finite and >= 0")
    if np.any(np.diff(e) <= 0):
        raise ValueError(f"etas={e.tolist()} is not allowed; etas must be strictly increasing (sorted)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"accuracies={a.tolist()} is not allowed; accuracies must be finite")
    area = float(np.sum(np.diff(e) * (a[1:] + a[:-1]) / 2.0))
    return area / float(e[-1])


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``predictions`` equal to ``labels``; ``predictions`` may be class
    indices ``[N]`` or logits ``[N, C]`` (argmax taken)."""
    p = np.asarray(predictions)
    y = np.asarray(labels)
    if p.ndim == 2:
        p = p.argmax(-1)
    if p.shape != y.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"predictions of shape {p.shape} and labels of shape {y.shape} do not match; "
                         "need [N] (or [N, C] logits) and [N] with N >= 1")
    return float(np.mean(p == y))


def standard_error(p: float, n: int) -> float:
    """Binomial standard error sqrt(p (1 - p) / n) of an accuracy p over n examples."""
    if n < 1:
        raise ValueError(f"n={n} is not allowed; n must be >= 1")
    p = min(max(float(p), 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / n)


def max_increase(values: Sequence[float]) -> float:
    """Largest rise max_k (v_{k+1} - v_k) along a curve (<= 0 means non-increasing)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return 0.0
    return float(np.max(np.diff(v)))
