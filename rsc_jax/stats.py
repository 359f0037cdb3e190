r"""Statistics for comparing two classifiers judged on the same test images, with the
training seed as the unit of replication: the tests and verdict rules behind the claims
ledger (``configs/claims.py``, ``scripts/verdicts.py``), usable on a user's own reports.

Data: ``a``, ``b`` boolean ``[S, N]``: whether run A (B) was right on test image i when
trained with seed s (the same N images for every seed and both runs; e.g. the
``correct_avg`` strings of ``robustness.json``). Per-cell differences
``D_si = a_si - b_si`` in {-1, 0, 1}; the estimate is the accuracy difference
``mean(D)``.

- ``clustered_test``: an image-clustered sign-flip test of H0 "A and B are exchangeable
  on every image" on ``d_i = sum_s D_si`` (the image is the cluster: its S cells share
  the image, so they are not independent). Statistic ``T = sum_i d_i``; under H0 each
  ``d_i`` is as likely as ``-d_i`` (Fisher, 1935; Good, *Permutation Tests*, 2005).
  Exact null distribution (ours): the ``d_i`` are integers, so with ``m_k`` images at
  ``|d_i| = k`` (k = 1..S), ``T = sum_k k (2 B_k - m_k)`` with independent
  ``B_k ~ Bin(m_k, 1/2)``, convolved exactly; with one seed this is the exact McNemar
  test. Monte-Carlo (``n_resamples`` sign flips from ``numpy.random.default_rng(seed)``,
  p = (1 + #{|T*| >= |T|}) / (1 + R), Phipson and Smyth, 2010) where the exact
  convolution would be large (``EXACT_LIMIT``).
- ``hierarchical_bootstrap``: the interval of ``mean(D)``, resampling seeds with
  replacement, then images with replacement within each drawn seed (Davison and Hinkley,
  1997, §3.8; two-stage bootstrap), percentile interval. With 3 seeds the seed stage
  has only 10 distinct draws: the interval is wide by design.
- ``holm``: Holm's (1979) step-down adjusted p-values over a family.
- ``tost``: two one-sided tests of equivalence within +-margin (Schuirmann, 1987), in
  the interval-inclusion form on bootstrap draws of the difference: p_lower =
  (1 + #{draw <= -margin}) / (1 + R), p_upper = (1 + #{draw >= margin}) / (1 + R),
  p = max of the two; p < alpha iff the (1 - 2 alpha) percentile interval lies inside
  (-margin, margin) (up to the +1). Its mirror, ``p_differ``, tests H0 |diff| <= margin
  against |diff| > margin: 2 min((1 + #{draw <= margin}), (1 + #{draw >= -margin})) /
  (1 + R), capped at 1 (ours: the two directions Bonferroni-combined).
- ``decide``: the verdict rules (module constants; ours, from issue 29):
  ``>`` (A more accurate than B): "holds" iff the clustered test rejects (Holm-adjusted
  p < alpha) with mean(D) > 0 AND no seed's own difference is < 0; "does not hold" iff
  it rejects with mean(D) < 0; otherwise "not shown either way" (with the interval).
  ``=`` (A and B alike within the claim's margin): "alike" iff TOST rejects
  (Holm-adjusted); "does not hold" iff ``p_differ`` rejects (the difference is shown to
  exceed the margin); otherwise "not shown either way" (a difference that is non-zero
  but may lie within the margin shows neither). A test that does not reject never shows
  equality.
- ``compare_reports``: the above on two users' runs from ``robustness.json`` files (one
  per seed, paired by position), by metric name.

Exact intervals of one accuracy (``clopper_pearson``) and the exact McNemar test of one
seed (``mcnemar_exact``) are ``metrics``'s. NumPy and SciPy only; imports ``metrics``.

Two of your own models, three training seeds each, evaluated on the same test images::

    from rsc_jax import stats
    r = stats.compare_reports([f"runs/a_seed{s}/robustness.json" for s in range(3)],
                              [f"runs/b_seed{s}/robustness.json" for s in range(3)],
                              "worst", direction=">")
    print(r["verdict"], r["diff"], r["ci95"], r["test"]["p_value"], r["per_seed"])
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from rsc_jax import metrics

ALPHA = 0.05
MARGIN = 0.03                  # ours: default equivalence margin, 3 accuracy points
N_RESAMPLES = 10_000           # ours: bootstrap draws (and Monte-Carlo sign flips)
EXACT_LIMIT = 50_000_000       # ours: exact sign-flip null when (#non-zero d_i) x (range of T) is below this

HOLDS, FAILS, ALIKE, UNSHOWN, NOT_RUN = "holds", "does not hold", "alike", "not shown either way", "not run"

clopper_pearson = metrics.binomial_interval
mcnemar_exact = metrics.mcnemar_exact


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """``a``, ``b`` as boolean ``[S, N]`` (a 1-D input is one seed); ValueError otherwise."""
    out = []
    for name, x in (("a", a), ("b", b)):
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.size == 0 or not np.all((x == 0) | (x == 1)):
            raise ValueError(f"{name} of shape {x.shape} is not allowed; need 0/1 (or bool) values shaped "
                             "[seeds, images] (or [images] for one seed)")
        out.append(x.astype(bool))
    if out[0].shape != out[1].shape:
        raise ValueError(f"a has shape {out[0].shape} but b has {out[1].shape}; both runs must be judged on the "
                         "same seeds and images")
    return out[0], out[1]


def _check_direction(direction: str) -> None:
    if direction not in (">", "="):
        raise ValueError(f"direction={direction!r} is not allowed; use '>' (A more accurate than B) or '=' (alike)")


# --------------------------------------------------------------------------- the clustered test


def _sign_flip_null(abs_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact null law of T = sum_i +-|d_i| (fair independent signs) for integer |d_i| >= 1:
    (values, probabilities) on the integer grid [-K, K], K = sum |d_i|."""
    import scipy.stats
    K = int(abs_d.sum())
    p = np.zeros(2 * K + 1)
    p[K] = 1.0                                   # index v + K holds P(T = v)
    for k, m in zip(*np.unique(abs_d, return_counts=True)):
        k, m = int(k), int(m)
        w = scipy.stats.binom.pmf(np.arange(m + 1), m, 0.5)
        new = np.zeros_like(p)
        L = p.size
        for j, wj in enumerate(w):
            s = k * (2 * j - m)                  # shift of T by k (2 B_k - m_k) with B_k = j
            if s >= 0:
                new[s:] += wj * p[:L - s]
            else:
                new[:L + s] += wj * p[-s:]
        p = new
    return np.arange(-K, K + 1), p


def clustered_test(a: Any, b: Any, *, method: str = "auto", n_resamples: int = N_RESAMPLES,
                   seed: int = 0) -> dict[str, Any]:
    """Image-clustered sign-flip test of A against B over seeds and images (module docstring).

    Args:
      a, b: 0/1 ``[S, N]`` (seeds x images; ``[N]`` for one seed), the same cells.
      method: ``"exact"`` (convolution of the null law), ``"monte_carlo"`` (``n_resamples``
        sign flips, seeded), or ``"auto"`` (exact unless its grid exceeds ``EXACT_LIMIT``).
      n_resamples, seed: for the Monte-Carlo method.

    Returns:
      dict: ``statistic`` (sum_i d_i = #(A right, B wrong) - #(A wrong, B right) over all
      cells), ``diff`` (mean(D)), ``p_value`` (two-sided, P(|T| >= |t|)), ``p_greater``
      (P(T >= t): A better), ``method``, ``n_resamples`` (0 when exact),
      ``n_informative`` (images with d_i != 0).
    """
    a, b = _pair(a, b)
    if method not in ("auto", "exact", "monte_carlo"):
        raise ValueError(f"method={method!r} is not allowed; use 'auto', 'exact' or 'monte_carlo'")
    if not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 1):
        raise ValueError(f"n_resamples={n_resamples!r} is not allowed; need an int >= 1")
    d = (a.astype(np.int64) - b.astype(np.int64)).sum(0)
    t = int(d.sum())
    nz = np.abs(d[d != 0])
    out = {"statistic": t, "diff": float(t / a.size), "n_informative": int(nz.size)}
    if nz.size == 0:
        return dict(out, p_value=1.0, p_greater=1.0, method="exact", n_resamples=0)
    if method == "auto":
        method = "exact" if nz.size * (2 * int(nz.sum()) + 1) <= EXACT_LIMIT else "monte_carlo"
    if method == "exact":
        v, p = _sign_flip_null(nz)
        two = float(min(1.0, p[np.abs(v) >= abs(t)].sum()))
        greater = float(min(1.0, p[v >= t].sum()))
        return dict(out, p_value=two, p_greater=greater, method="exact", n_resamples=0)
    rng = np.random.default_rng(seed)
    hits_two = hits_greater = 0
    for start in range(0, n_resamples, 1000):
        r = min(1000, n_resamples - start)
        sims = (rng.integers(0, 2, (r, nz.size), dtype=np.int8) * 2 - 1) @ nz
        hits_two += int(np.sum(np.abs(sims) >= abs(t)))
        hits_greater += int(np.sum(sims >= t))
    return dict(out, p_value=(1 + hits_two) / (1 + n_resamples), p_greater=(1 + hits_greater) / (1 + n_resamples),
                method="monte_carlo", n_resamples=int(n_resamples))


# --------------------------------------------------------------------------- bootstrap, Holm, TOST


def hierarchical_bootstrap(a: Any, b: Any, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                           level: float = 0.95, return_draws: bool = False) -> dict[str, Any]:
    """Two-stage bootstrap of the accuracy difference mean(D): per draw, S seeds with
    replacement, then N images with replacement within each drawn seed; percentile
    interval at ``level``. Draws come from ``numpy.random.default_rng(seed)``.

    Returns:
      dict: ``diff`` (mean(D) of the data), ``ci`` ([lo, hi]), ``level``, ``n_resamples``,
      ``seed``, ``se`` (standard deviation of the draws), and ``draws`` (``[R]``) when
      ``return_draws``.
    """
    a, b = _pair(a, b)
    if not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 2):
        raise ValueError(f"n_resamples={n_resamples!r} is not allowed; need an int >= 2")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} is not allowed; level must be in (0, 1)")
    D = a.astype(np.int8) - b.astype(np.int8)
    S, N = D.shape
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    chunk = max(1, 4_000_000 // (S * N))
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        s_idx = rng.integers(0, S, (r, S))
        i_idx = rng.integers(0, N, (r, S, N))
        draws[start:start + r] = D[s_idx[:, :, None], i_idx].mean(axis=(1, 2))
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    out = {"diff": float(D.mean()), "ci": [float(lo), float(hi)], "level": level, "n_resamples": int(n_resamples),
           "seed": int(seed), "se": float(draws.std(ddof=1))}
    return dict(out, draws=draws) if return_draws else out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: with p_(1) <= ... <= p_(m),
    p~_(j) = max_{i <= j} min(1, (m - i + 1) p_(i)). Rejecting where p~ < alpha controls
    the family-wise error rate at alpha (Holm, 1979). NaN is not allowed."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"pvalues={list(np.ravel(p))} is not allowed; need a 1-D list of numbers in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


def tost(draws: Sequence[float], margin: float = MARGIN) -> dict[str, float]:
    """Two one-sided tests of |difference| < ``margin`` on bootstrap ``draws`` of the
    difference (module docstring): ``p_lower`` (H0: diff <= -margin), ``p_upper``
    (H0: diff >= margin), ``p_value`` = their max, ``p_differ`` (H0: |diff| <= margin),
    ``margin``."""
    x = np.asarray(draws, dtype=np.float64)
    if x.ndim != 1 or x.size < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"draws of shape {x.shape} are not allowed; need a 1-D array of finite bootstrap draws")
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin={margin!r} is not allowed; need a finite margin > 0 "
                         "(accuracy units, 0.03 = 3 points)")
    lo = (1 + int(np.sum(x <= -margin))) / (1 + x.size)
    up = (1 + int(np.sum(x >= margin))) / (1 + x.size)
    above, below = (1 + int(np.sum(x <= margin))) / (1 + x.size), (1 + int(np.sum(x >= -margin))) / (1 + x.size)
    return {"p_lower": lo, "p_upper": up, "p_value": max(lo, up), "p_differ": min(1.0, 2 * min(above, below)),
            "margin": float(margin)}


# --------------------------------------------------------------------------- one comparison, verdicts


def per_seed(a: Any, b: Any, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Each seed's own result: ``seed``, ``diff`` (accuracy of A minus B), McNemar ``b``,
    ``c``, ``p_value``."""
    a, b = _pair(a, b)
    seeds = list(range(a.shape[0])) if seeds is None else list(seeds)
    if len(seeds) != a.shape[0]:
        raise ValueError(f"seeds={seeds} names {len(seeds)} seeds but the data have {a.shape[0]}")
    out = []
    for s, x, y in zip(seeds, a, b):
        t = mcnemar_exact(x, y)
        out.append({"seed": int(s), "diff": t["diff"], "b": t["b"], "c": t["c"], "p_value": t["p_value"]})
    return out


def compare(a: Any, b: Any, *, direction: str = ">", margin: float = MARGIN, seeds: Sequence[int] | None = None,
            n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Everything a verdict needs for A against B (unadjusted; ``decide`` applies the
    rules, ``decide_family`` Holm over a family).

    Returns:
      dict: ``direction``, ``margin``, ``n_seeds``, ``n_images``, ``acc_a``, ``acc_b``
      (over all cells), ``diff``, ``ci95`` (hierarchical bootstrap), ``ci90`` (the TOST
      interval), ``test`` (``clustered_test``), ``tost`` (for ``=``, else None),
      ``per_seed``, ``bootstrap`` (n_resamples, seed).
    """
    _check_direction(direction)
    a, b = _pair(a, b)
    boot = hierarchical_bootstrap(a, b, n_resamples=n_resamples, seed=seed, return_draws=True)
    draws = boot.pop("draws")
    lo90, hi90 = np.quantile(draws, [0.05, 0.95])
    return {"direction": direction, "margin": float(margin), "n_seeds": int(a.shape[0]), "n_images": int(a.shape[1]),
            "acc_a": float(a.mean()), "acc_b": float(b.mean()), "diff": boot["diff"], "ci95": boot["ci"],
            "ci90": [float(lo90), float(hi90)],
            "test": clustered_test(a, b, n_resamples=n_resamples, seed=seed),
            "tost": tost(draws, margin) if direction == "=" else None,
            "per_seed": per_seed(a, b, seeds), "bootstrap": {"n_resamples": boot["n_resamples"], "seed": boot["seed"]}}


def family_pvalues(result: dict[str, Any]) -> list[float]:
    """The p-values one comparison adds to its Holm family: for ``>`` the clustered
    test's; for ``=`` TOST's and ``p_differ`` (the clustered test is reported, not used)."""
    if result["direction"] == "=":
        return [result["tost"]["p_value"], result["tost"]["p_differ"]]
    return [result["test"]["p_value"]]


def decide(result: dict[str, Any], p_adjusted: Sequence[float] | None = None,
           alpha: float = ALPHA) -> tuple[str, str]:
    """The verdict of one ``compare`` result by the rules of the module docstring.

    Args:
      result: ``compare``'s dict.
      p_adjusted: Holm-adjusted ``family_pvalues(result)`` (default: unadjusted).

    Returns:
      ``(verdict, reason)``; verdict one of ``HOLDS``, ``FAILS``, ``ALIKE``, ``UNSHOWN``.
    """
    p = list(family_pvalues(result) if p_adjusted is None else p_adjusted)
    diff, (lo, hi) = result["diff"], result["ci95"]
    ci = f"difference {diff:+.3f}, 95 % interval [{lo:+.3f}, {hi:+.3f}]"
    if result["direction"] == "=":
        m = result["margin"]
        if p[0] < alpha:
            return ALIKE, f"TOST within +-{m:g} rejects (adjusted p = {p[0]:.2g}); {ci}"
        if p[1] < alpha:
            return FAILS, f"the difference exceeds +-{m:g} (adjusted p = {p[1]:.2g}); {ci}"
        return UNSHOWN, (f"neither TOST within +-{m:g} (adjusted p = {p[0]:.2g}) nor the test of a larger "
                         f"difference (adjusted p = {p[1]:.2g}) rejects; {ci}")
    rejects = p[0] < alpha
    against = [s["seed"] for s in result["per_seed"] if s["diff"] < 0]
    if rejects and diff < 0:
        return FAILS, f"the clustered test rejects in the opposite direction (adjusted p = {p[0]:.2g}); {ci}"
    if rejects and diff > 0:
        if against:
            return UNSHOWN, (f"the clustered test rejects (adjusted p = {p[0]:.2g}) but seed(s) "
                             f"{', '.join(map(str, against))} point the other way; {ci}")
        return HOLDS, f"the clustered test rejects in the claimed direction (adjusted p = {p[0]:.2g}); {ci}"
    return UNSHOWN, f"the clustered test does not reject (adjusted p = {p[0]:.2g}); {ci}"


def decide_family(results: Sequence[dict[str, Any] | None], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Holm over the p-values of every comparison of a family that ran (``family_pvalues``),
    then ``decide`` each; a None result (not run) gets ``NOT_RUN`` and adds nothing.

    Returns, per result: ``{"verdict", "reason", "p_adjusted", "family_size"}``.
    """
    flat = [(i, p) for i, r in enumerate(results) if r is not None for p in family_pvalues(r)]
    adj = holm([p for _, p in flat]) if flat else []
    by = {}
    for (i, _), q in zip(flat, adj):
        by.setdefault(i, []).append(q)
    out = []
    for i, r in enumerate(results):
        if r is None:
            out.append({"verdict": NOT_RUN, "reason": "not run", "p_adjusted": None, "family_size": len(flat)})
            continue
        v, why = decide(r, by[i], alpha)
        out.append({"verdict": v, "reason": why, "p_adjusted": by[i], "family_size": len(flat)})
    return out


# --------------------------------------------------------------------------- reports


def metric_key(row: dict[str, Any]) -> str | None:
    """The metric name of a ``robustness.json`` row: ``clean_attacked``,
    ``<attack>@<eps x 255>`` (l_inf), ``l2@<eps>`` (l_2 PGD curve); None for the
    huge-budget sanity attack and other curves."""
    if row["name"] == "clean":
        return "clean_attacked"
    if row["norm"] == "linf" and row["name"] != "sanity-pgd":
        return f"{row['name']}@{row['eps_255']:g}"
    if row["norm"] == "l2" and row.get("curve") == "pgd-l2":
        return f"l2@{row['eps']:g}"
    return None


def report_metrics(rob: dict[str, Any]) -> dict[str, np.ndarray | None]:
    """Per-image correctness of the M-averaged logits of every row of a loaded
    ``robustness.json`` (``metric_key`` names) and of its worst cases (``worst@E``, E in
    /255; ``worst_common@E`` over the attacks every model runs, where the report has it);
    None where the report has no ``correct_avg``."""
    out: dict[str, np.ndarray | None] = {}
    for r in rob.get("results", []):
        k = metric_key(r)
        if k is not None:
            out[k] = metrics.unpack_correct(r["correct_avg"]) if r.get("correct_avg") else None
    for w in rob.get("worst_case", []):
        out[f"worst@{w['eps_255']:g}"] = metrics.unpack_correct(w["correct_avg"]) if w.get("correct_avg") else None
    for w in rob.get("worst_case_common", []):
        out[f"worst_common@{w['eps_255']:g}"] = (metrics.unpack_correct(w["correct_avg"]) if w.get("correct_avg")
                                                 else None)
    return out


def compare_reports(paths_a: str | Sequence[str], paths_b: str | Sequence[str], metric: str, *,
                    direction: str = ">", margin: float = MARGIN, alpha: float = ALPHA,
                    n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Compares two of a user's models from their ``robustness.json`` files.

    Args:
      paths_a, paths_b: one file, or one per training seed (paired by position: the i-th
        of A with the i-th of B; each pair judged on the same test images).
      metric: a ``metric_key`` name (``clean_attacked``, ``apgd-ce@8``, ``worst@8``) or
        ``worst`` (the largest eps every file has).
      direction, margin, alpha: the claim (``>`` or ``=``), the equivalence margin, the level.

    Returns:
      ``compare``'s dict with ``metric``, ``verdict`` and ``reason`` (a family of one: no
      multiplicity correction; correct over your own family with ``decide_family``).

    Raises:
      ValueError: one line naming the file, metric or count that does not fit.
    """
    _check_direction(direction)
    pa = [paths_a] if isinstance(paths_a, str) else list(paths_a)
    pb = [paths_b] if isinstance(paths_b, str) else list(paths_b)
    if not pa or len(pa) != len(pb):
        raise ValueError(f"paths_a has {len(pa)} files and paths_b {len(pb)}; give one robustness.json per seed, "
                         "the same number for both")
    loaded = []
    for p in pa + pb:
        try:
            with open(p) as f:
                loaded.append(report_metrics(json.load(f)))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{p}: not a readable robustness.json ({type(e).__name__}: {e})") from None
    key = metric
    if metric == "worst":
        common = set.intersection(*(set(m) for m in loaded))
        worst = sorted((k for k in common if k.startswith("worst@")), key=lambda k: float(k.split("@")[1]))
        if not worst:
            raise ValueError("metric='worst': the files share no worst case")
        key = worst[-1]
    for p, m in zip(pa + pb, loaded):
        if key not in m:
            raise ValueError(f"{p}: no metric {key!r}; it has {sorted(m)}")
        if m[key] is None:
            raise ValueError(f"{p}: metric {key!r} has no per-image results (correct_avg); re-run the evaluation")
    a = [m[key] for m in loaded[:len(pa)]]
    b = [m[key] for m in loaded[len(pa):]]
    for p, q, x, y in zip(pa, pb, a, b):
        if x.size != y.size:
            raise ValueError(f"{p} has {x.size} images but {q} has {y.size}; pair reports on the same images")
    if len({x.size for x in a}) != 1:
        raise ValueError(f"the seeds were judged on different numbers of images ({[x.size for x in a]})")
    r = compare(np.stack(a), np.stack(b), direction=direction, margin=margin, n_resamples=n_resamples, seed=seed)
    v, why = decide(r, alpha=alpha)
    return dict(r, metric=key, verdict=v, reason=why, files_a=[os.fspath(p) for p in pa],
                files_b=[os.fspath(p) for p in pb])
