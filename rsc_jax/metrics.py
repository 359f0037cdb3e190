"""Small evaluation metrics: QTE, accuracy, standard errors and intervals, the paired
McNemar test, per-example correctness strings, monotonicity.

QTE (SPEC §4; Wu et al., ACM MM 2024) summarises a robustness curve A(eta) of accuracy
against attack strength eta by its normalised trapezoid area

    QTE = (1 / eta_max) * sum_k (eta_{k+1} - eta_k) (A(eta_{k+1}) + A(eta_k)) / 2,

which reads as a mean accuracy over [eta_0, eta_max] (over [0, eta_max] when the grid
starts at 0, as the default {0, 1, 2, 4, 8}/255 does). The best noise level sigma is the
one that maximises QTE.

NumPy and SciPy only (host-side); imports nothing else from the package.
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


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper-Pearson interval for a proportion of ``k`` successes in
    ``n`` trials (Clopper and Pearson, 1934), via ``scipy.stats.binomtest``: it covers the
    true accuracy with probability >= ``level`` for every p.

    Raises:
      ValueError: n < 1, k outside [0, n], or level outside (0, 1).
    """
    import scipy.stats
    if not (isinstance(n, (int, np.integer)) and n >= 1 and isinstance(k, (int, np.integer)) and 0 <= k <= n):
        raise ValueError(f"binomial_interval needs ints 0 <= k <= n, n >= 1; got k={k!r}, n={n!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} is not allowed; level must be in (0, 1)")
    ci = scipy.stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, float]:
    """Exact (binomial) McNemar test of two classifiers judged on the same examples.

    With b = #(A right, B wrong) and c = #(A wrong, B right), under H0 (equal accuracy)
    b ~ Bin(b + c, 1/2); the two-sided p-value is ``binomtest(b, b + c, 0.5)``'s (1 when
    b + c = 0). McNemar (1947); the exact form is the one to use for small b + c.

    Returns:
      dict with ``b``, ``c``, ``diff`` (accuracy of A minus B) and ``p_value``.
    """
    import scipy.stats
    a, bb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != bb.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"correct_a of shape {a.shape} and correct_b of shape {bb.shape} are not allowed; "
                         "need two [N] boolean arrays over the same N >= 1 examples")
    b, c = int(np.sum(a & ~bb)), int(np.sum(~a & bb))
    p = scipy.stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"b": b, "c": c, "diff": (b - c) / a.size, "p_value": float(p)}


def pack_correct(correct: Sequence[bool] | np.ndarray) -> str:
    """Per-example correctness ``[N]`` (bools, or floats/ints that are 0 or 1) as a string
    of ``"0"``/``"1"``, one character per example in order: the compact form of
    ``correct_avg`` in ``robustness.json`` (``unpack_correct`` reads it back)."""
    a = np.asarray(correct)
    if a.ndim != 1 or not np.all((a == 0) | (a == 1)):
        raise ValueError(f"correct of shape {a.shape} is not allowed; need a 1-D array of 0/1 (or bool) values")
    return "".join("1" if v else "0" for v in a.astype(bool).tolist())


def unpack_correct(s: str) -> np.ndarray:
    """The boolean ``[N]`` array of a ``pack_correct`` string (``"0110"`` -> F, T, T, F)."""
    if not isinstance(s, str) or not s or s.strip("01"):
        raise ValueError(f"correct string {str(s)[:40]!r} is not allowed; need a non-empty string of 0s and 1s")
    return np.frombuffer(s.encode("ascii"), np.uint8) == ord("1")


def max_increase(values: Sequence[float]) -> float:
    """Largest rise max_k (v_{k+1} - v_k) along a curve (<= 0 means non-increasing)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return 0.0
    return float(np.max(np.diff(v)))
