"""Certified l2 robustness of RSC-coded networks by randomized smoothing.

Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via Randomized
Smoothing", ICML 2019 (arXiv:1902.02918), applied to a spiking network fed by a
randomized-smoothing input coding (Wu et al., ACM MM 2024, arXiv:2407.20099; SPEC §4).

The base classifier ``f`` is one noisy forward pass, ``logits_fn(key, x) -> [B, K]``
(it draws the coding noise itself, and may be random in other ways too, e.g. Bernoulli
draws inside it). The smoothed classifier is

    g(x) = argmax_c  P_noise( argmax_k logits_fn(noise, x)_k = c ).

**Theorem (Cohen et al., Thm. 1).** Let ``h`` be any (possibly random) classifier of
``z in R^D`` and ``G(z) = argmax_c P(h(z + eta) = c)`` with ``eta ~ N(0, sigma^2 I_D)``.
If ``P(h(z + eta) = c_A) >= p_A > 1/2`` then ``G(z + u) = c_A`` for every
``|u|_2 < sigma Phi^{-1}(p_A)`` (the bound with p_B = 1 - p_A, as in CERTIFY).

**Which radius holds in image space depends on the coding (SPEC §4).** x has d pixels;
the network sees a T-step sequence.

- ``"rsc1"``: s_t = x + eps for all t, one eps ~ N(0, sigma^2 I_d). The network is a
  function of z = x + eps alone: Cohen's setting with D = d and u = delta, hence
  ``R = sigma Phi^{-1}(p_A)``.
- ``"rsc2"``: s_t = x + eps_t, eps_t iid N(0, sigma^2 I_d). Write the input as
  z = A x + eta in R^{T d}, with A x = (x, ..., x) the T-fold copy and
  eta = (eps_1, ..., eps_T) ~ N(0, sigma^2 I_{T d}) isotropic. The network is a
  function h(z), so the theorem applies in R^{T d} around A x. An image perturbation
  delta moves the input by u = A delta with |A delta|_2 = sqrt(T) |delta|_2. The
  prediction is therefore constant whenever sqrt(T) |delta| < sigma Phi^{-1}(p_A), i.e.
  ``R = sigma Phi^{-1}(p_A) / sqrt(T)``.
  Tightness: for a linear classifier of the time mean, sign(w . mean_t s_t + b), the
  time mean is x + eps_bar with eps_bar ~ N(0, sigma^2/T I), so
  p_A = Phi(sqrt(T) m / sigma) with m = |w . x + b| / |w| the distance to the decision
  hyperplane, and the formula gives exactly R = m: the bound cannot be improved.
- ``"poisson"``: s_t ~ Bernoulli(x). The noise is not an additive translation family
  (its law changes with x, is discrete and bounded), so the Neyman-Pearson argument
  behind the Gaussian certificate does not apply: refused.
- ``"direct"``: no noise at all; the "smoothed" classifier is the base network, which
  has no certificate from sampling: refused.

**Algorithms** (Cohen et al., Alg. "PREDICT" and "CERTIFY"):

- CERTIFY(x): counts0 from n0 draws, c_A = argmax counts0 (selection); counts from n
  fresh draws (estimation); n_A = counts[c_A];
  p_A = lower Clopper-Pearson bound = Beta.ppf(alpha; n_A, n - n_A + 1) (one-sided,
  level 1 - alpha); abstain (-1, radius 0) if p_A <= 1/2, else c_A with the radius
  above. With probability >= 1 - alpha over the draws, a non-abstained answer is g(x)
  and g is constant on the l2 ball of that radius.
- PREDICT(x): counts from n draws, top two classes n_A >= n_B; return c_A if the
  two-sided binomial test ``binomtest(n_A, n_A + n_B, 0.5).pvalue <= alpha``, else
  abstain. Returns a class other than g(x) with probability <= alpha.

Defaults n0 = 100, n = 10,000, alpha = 0.001 are SPEC §4's (Cohen et al. used
n = 100,000). The chunk sizes (``batch``, ``image_batch``), ``num_examples`` and the
radius grid are our defaults.

**Sampling on device.** Counts are accumulated by a jitted ``lax.fori_loop`` over chunks
of ``batch`` draws, vectorised over the images of a batch. Image b with global index
i_b gets key k_b = fold_in(stream_key, i_b) (``parallel.example_keys``), and its draw j
gets key fold_in(k_b, j) and is classified alone (``parallel.per_example``). So the
counts of an image depend only on (seed, its index, its pixels): not on the image
batch size, the device count or the chunk size. Streams: selection fold_in(key, 0),
estimation fold_in(key, 1), PREDICT fold_in(key, 2).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.stats

from rsc_jax import backend, parallel

Array = jax.Array
LogitsFn = Callable[[Array, Array], Array]

CERTIFIABLE_CODINGS: tuple[str, ...] = ("rsc1", "rsc2")
_REFUSED: dict[str, str] = {
    "poisson": ("Poisson coding draws s_t ~ Bernoulli(x): its noise is discrete, bounded and "
                "its law depends on x, so it is not a Gaussian translation family and "
                "randomized smoothing gives no l2 certificate for it"),
    "direct": ("direct coding adds no noise, so the smoothed classifier is the deterministic "
               "base network and sampling certifies nothing"),
}
_STREAM_SELECT, _STREAM_ESTIMATE, _STREAM_PREDICT = 0, 1, 2

# Our defaults (not the paper's): draws per chunk per image.
DEFAULT_BATCH = 100


# ---------------------------------------------------------------------------
# Argument checks (all run on concrete Python values, before any tracing).
# ---------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed; {name} must be an int >= {minimum}")


def _check_alpha(alpha: Any, name: str = "alpha") -> None:
    try:
        ok = 0.0 < float(alpha) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}={alpha!r} is not allowed; {name} must be a float in (0, 1)")


def _check_sigma(sigma: Any, name: str = "sigma") -> None:
    try:
        ok = math.isfinite(float(sigma)) and float(sigma) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}={sigma!r} is not allowed; {name} must be a finite float > 0")


def check_coding(coding: Any, name: str = "coding") -> None:
    """Raises ``ValueError`` unless ``coding`` has a Gaussian certificate ("rsc1"/"rsc2")."""
    if coding in _REFUSED:
        raise ValueError(f"{name}={coding!r} cannot be certified: {_REFUSED[coding]}; "
                         f"allowed: {list(CERTIFIABLE_CODINGS)}")
    if coding not in CERTIFIABLE_CODINGS:
        raise ValueError(f"{name}={coding!r} is not a known coding; allowed: "
                         f"{list(CERTIFIABLE_CODINGS)} (refused: {list(_REFUSED)})")


def _check_images(x: Any) -> None:
    chex.assert_rank(x, 4)
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"x has dtype {jnp.result_type(x)}; expected float images in [0, 1] "
                        "[B, H, W, C]")


# ---------------------------------------------------------------------------
# Statistics (host side, NumPy/SciPy).
# ---------------------------------------------------------------------------

def clopper_pearson_lower(k: Any, n: Any, alpha: float) -> np.ndarray:
    """One-sided lower Clopper-Pearson bound: ``Beta.ppf(alpha; k, n - k + 1)``, 0 if k = 0.

    P(p < bound) <= alpha for K ~ Bin(n, p), for every p (Clopper and Pearson, 1934).
    Equals ``statsmodels.proportion_confint(k, n, alpha=2 alpha, method="beta")[0]``,
    the bound of Cohen et al.'s code. Special cases: k = n gives alpha^(1/n); k = 1 gives
    1 - (1 - alpha)^(1/n).

    Args:
      k: successes, int array-like, 0 <= k <= n.
      n: trials, int array-like >= 1 (broadcast with k).
      alpha: level in (0, 1).

    Returns:
      float64 array of the broadcast shape of k and n (a 0-d array for scalars).
    """
    _check_alpha(alpha)
    k = np.asarray(k, np.int64)
    n = np.asarray(n, np.int64)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"clopper_pearson_lower needs 0 <= k <= n and n >= 1; got k={k}, n={n}")
    safe_k = np.maximum(k, 1)
    bound = scipy.stats.beta.ppf(alpha, safe_k, n - safe_k + 1)
    return np.where(k == 0, 0.0, bound).astype(np.float64)


def radius(p_lower: Any, *, sigma: float, coding: str, T: int) -> np.ndarray:
    """Certified l2 radius in image space from a lower bound p_A on P(f = c_A).

    - "rsc1": R = sigma Phi^{-1}(p_A) (Cohen et al., Thm. 1).
    - "rsc2": R = sigma Phi^{-1}(p_A) / sqrt(T) (the T-fold copy of x; module docstring).
    R = 0 where p_A <= 1/2 (abstention). ``p_lower`` may be any array in [0, 1];
    p_A = 1 gives inf.

    Raises:
      ValueError: "poisson"/"direct" (no certificate) or unknown coding, sigma <= 0,
        T < 1, p_lower outside [0, 1].
    """
    check_coding(coding)
    _check_sigma(sigma)
    _check_int("T", T, 1)
    p = np.asarray(p_lower, np.float64)
    if np.any(~(p >= 0.0) | ~(p <= 1.0)):
        raise ValueError(f"p_lower={p_lower!r} is not allowed; it must lie in [0, 1]")
    r = float(sigma) * scipy.stats.norm.ppf(np.where(p > 0.5, p, 0.5))
    if coding == "rsc2":
        r = r / math.sqrt(T)
    return np.where(p > 0.5, r, 0.0)


@dataclasses.dataclass(frozen=True)
class PredictResult:
    """PREDICT output for B images and K classes (NumPy arrays).

    prediction [B] int64 (-1 = abstain); counts [B, K] int64; n_A, n_B [B] top-two
    counts; p_value [B] two-sided binomial p-value of n_A out of n_A + n_B at 1/2.
    """
    prediction: np.ndarray
    counts: np.ndarray
    n_A: np.ndarray
    n_B: np.ndarray
    p_value: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CertifyResult:
    """CERTIFY output for B images and K classes (NumPy arrays).

    prediction [B] int64 (-1 = abstain); p_lower [B] Clopper-Pearson lower bound of
    P(f = c_A); radius [B] certified l2 radius (0 where abstaining); counts_selection
    [B, K] (n0 draws); counts [B, K] (n draws); n_A [B] = counts[b, c_A].
    """
    prediction: np.ndarray
    p_lower: np.ndarray
    radius: np.ndarray
    counts_selection: np.ndarray
    counts: np.ndarray
    n_A: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


def predict_from_counts(counts: Any, *, alpha: float) -> PredictResult:
    """PREDICT's decision from counts [B, K]: two-sided binomial test of the top two."""
    _check_alpha(alpha)
    counts = np.asarray(counts, np.int64)
    chex.assert_rank(counts, 2)
    order = np.argsort(-counts, axis=1, kind="stable")     # ties: lowest class first
    c_a, c_b = order[:, 0], order[:, 1] if counts.shape[1] > 1 else order[:, 0]
    rows = np.arange(len(counts))
    n_a = counts[rows, c_a]
    n_b = counts[rows, c_b] if counts.shape[1] > 1 else np.zeros_like(n_a)
    pval = np.array([scipy.stats.binomtest(int(a), int(a + b), 0.5).pvalue if a + b > 0 else 1.0
                     for a, b in zip(n_a, n_b)], np.float64)
    pred = np.where(pval <= alpha, c_a, -1).astype(np.int64)
    return PredictResult(prediction=pred, counts=counts, n_A=n_a, n_B=n_b, p_value=pval)


def certify_from_counts(counts_selection: Any, counts: Any, *, alpha: float, sigma: float,
                        coding: str, T: int) -> CertifyResult:
    """CERTIFY's decision from selection counts [B, K] and estimation counts [B, K]."""
    _check_alpha(alpha)
    c0 = np.asarray(counts_selection, np.int64)
    c1 = np.asarray(counts, np.int64)
    chex.assert_rank([c0, c1], 2)
    chex.assert_equal_shape([c0, c1])
    c_a = np.argmax(c0, axis=1)
    n = c1.sum(axis=1)
    n_a = c1[np.arange(len(c1)), c_a]
    p_low = clopper_pearson_lower(n_a, n, alpha)
    r = radius(p_low, sigma=sigma, coding=coding, T=T)
    pred = np.where(p_low > 0.5, c_a, -1).astype(np.int64)
    return CertifyResult(prediction=pred, p_lower=p_low, radius=np.where(pred >= 0, r, 0.0),
                         counts_selection=c0, counts=c1, n_A=n_a)


# ---------------------------------------------------------------------------
# Sampling on device.
# ---------------------------------------------------------------------------

class _ByIdentity:
    """Wraps an unhashable callable so it can be a static argument of ``jax.jit``."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def _static(fn: Callable) -> Callable:
    try:
        hash(fn)
        return fn
    except TypeError:
        return _ByIdentity(fn)


def _class_counts(logits_fn: LogitsFn, keys: Array, x: Array, *, num: int, batch: int) -> Array:
    """Counts [B, K] int32 of argmax_k logits over draws j = 0..num-1 of each image.

    Draw j of image b uses key fold_in(keys[b], j) and classifies x[b] alone, so the
    result does not depend on B or on ``batch`` (the chunk size, clipped to num).
    """
    batch = min(batch, num)
    num_chunks = -(-num // batch)
    one = parallel.per_example(logits_fn)                            # (keys[B], x[B]) -> [B, K]
    num_classes = jax.eval_shape(one, keys, x).shape[-1]

    def body(c: Array, acc: Array) -> Array:
        j = c * batch + jnp.arange(batch, dtype=jnp.int32)           # [batch] draw ids
        draw_keys = jax.vmap(lambda k: jax.vmap(lambda jj: jax.random.fold_in(k, jj))(j))(keys)
        logits = jax.vmap(one, in_axes=(1, None))(draw_keys, x)      # [batch, B, K]
        pred = jnp.argmax(logits, axis=-1)                           # [batch, B]
        hits = jax.nn.one_hot(pred, num_classes, dtype=jnp.int32)    # [batch, B, K]
        valid = (j < num).astype(jnp.int32)[:, None, None]
        return acc + jnp.sum(hits * valid, axis=0)

    init = jnp.zeros((x.shape[0], num_classes), jnp.int32)
    return jax.lax.fori_loop(0, num_chunks, body, init)


@functools.partial(backend.jit, static_argnames=("logits_fn", "n0", "n", "batch"))
def _certify_counts(key: Array, indices: Array, x: Array, *, logits_fn: LogitsFn, n0: int,
                    n: int, batch: int) -> tuple[Array, Array]:
    """(selection counts [B, K] from n0 draws, estimation counts [B, K] from n draws)."""
    k0 = parallel.example_keys(jax.random.fold_in(key, _STREAM_SELECT), indices)
    k1 = parallel.example_keys(jax.random.fold_in(key, _STREAM_ESTIMATE), indices)
    return (_class_counts(logits_fn, k0, x, num=n0, batch=batch),
            _class_counts(logits_fn, k1, x, num=n, batch=batch))


@functools.partial(backend.jit, static_argnames=("logits_fn", "n", "batch"))
def _predict_counts(key: Array, indices: Array, x: Array, *, logits_fn: LogitsFn, n: int,
                    batch: int) -> Array:
    k = parallel.example_keys(jax.random.fold_in(key, _STREAM_PREDICT), indices)
    return _class_counts(logits_fn, k, x, num=n, batch=batch)


def _indices_for(x: Array, indices: Any) -> np.ndarray:
    if indices is None:
        return np.arange(x.shape[0], dtype=np.int32)
    idx = np.asarray(indices, np.int32)
    chex.assert_shape(idx, (x.shape[0],))
    return idx


def predict(logits_fn: LogitsFn, key: Array, x: Array, *, n: int, alpha: float,
            batch: int = DEFAULT_BATCH, indices: Any = None) -> PredictResult:
    """Cohen et al.'s PREDICT for a batch of images.

    Args:
      logits_fn: one draw of the noisy base classifier, ``(key, x[B, H, W, C]) -> [B, K]``;
        it applies the coding itself and must treat examples independently.
      key: PRNG key (the seed).
      x: float images [B, H, W, C] in [0, 1].
      n: draws per image (>= 1).
      alpha: test level in (0, 1); a wrong non-abstained answer has probability <= alpha.
      batch: draws per chunk per image (ours: 100); memory ~ B * batch forward passes.
      indices: global example indices [B] keying the noise (default 0..B-1).

    Returns:
      ``PredictResult``: prediction [B] (-1 = abstain), counts [B, K], n_A, n_B, p_value.
    """
    _check_int("n", n, 1)
    _check_alpha(alpha)
    _check_int("batch", batch, 1)
    _check_images(x)
    idx = _indices_for(x, indices)
    counts = _predict_counts(key, idx, x, logits_fn=_static(logits_fn), n=int(n), batch=int(batch))
    return predict_from_counts(jax.device_get(counts), alpha=alpha)


def certify(logits_fn: LogitsFn, key: Array, x: Array, *, sigma: float, coding: str, T: int,
            n0: int = 100, n: int = 10_000, alpha: float = 0.001, batch: int = DEFAULT_BATCH,
            indices: Any = None) -> CertifyResult:
    """Cohen et al.'s CERTIFY for a batch of images.

    Args:
      logits_fn: one draw of the noisy base classifier, ``(key, x[B, H, W, C]) -> [B, K]``,
        which must apply the coding named by (coding, sigma, T) itself.
      key: PRNG key (the seed).
      x: float images [B, H, W, C] in [0, 1].
      sigma, coding, T: the Gaussian coding the classifier uses; they set the radius
        (``radius``): "rsc1" sigma Phi^-1(p_A), "rsc2" sigma Phi^-1(p_A) / sqrt(T).
      n0: selection draws (SPEC: 100). n: estimation draws (SPEC: 10,000).
      alpha: failure probability (SPEC: 0.001).
      batch: draws per chunk per image (ours: 100).
      indices: global example indices [B] keying the noise (default 0..B-1).

    Returns:
      ``CertifyResult``: prediction [B] (-1 = abstain), p_lower [B], radius [B]
      (0 where abstaining), counts_selection [B, K], counts [B, K], n_A [B].

    Raises:
      ValueError: "poisson"/"direct" coding (no Gaussian certificate), unknown coding,
        sigma <= 0, T < 1, n0 < 1, n < 1, alpha outside (0, 1), batch < 1; before tracing.
    """
    check_coding(coding)
    _check_sigma(sigma)
    _check_int("T", T, 1)
    _check_int("n0", n0, 1)
    _check_int("n", n, 1)
    _check_alpha(alpha)
    _check_int("batch", batch, 1)
    _check_images(x)
    idx = _indices_for(x, indices)
    c0, c1 = _certify_counts(key, idx, x, logits_fn=_static(logits_fn), n0=int(n0), n=int(n),
                             batch=int(batch))
    c0, c1 = jax.device_get((c0, c1))
    return certify_from_counts(c0, c1, alpha=alpha, sigma=sigma, coding=coding, T=T)


# ---------------------------------------------------------------------------
# Orchestration: config, sharded runner, files, report.
# ---------------------------------------------------------------------------

def default_config() -> ml_collections.ConfigDict:
    """The ``config.certify`` section.

    n0, n, alpha are SPEC §4's (after Cohen et al.); batch (draws per chunk per image),
    image_batch (images per step, divisible by the device count), num_examples (first N
    test images; -1 = all), seed and the radius grid are our defaults.
    """
    c = ml_collections.ConfigDict()
    c.n0 = 100
    c.n = 10_000
    c.alpha = 0.001
    c.batch = DEFAULT_BATCH
    c.image_batch = 4
    c.num_examples = 32
    c.seed = 0
    c.radii = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    return c


def _section(cfg: Any) -> Any:
    """Accepts the full config (with a ``certify`` field) or the section itself."""
    if isinstance(cfg, Mapping) and "certify" in cfg:
        return cfg["certify"]
    if hasattr(cfg, "certify") and not isinstance(cfg, Mapping):
        return cfg.certify
    return cfg


def validate_config(cfg: Any) -> None:
    """Raises ``ValueError`` naming ``config.certify.<field>`` for a bad setting."""
    c = _section(cfg)
    p = "config.certify."
    for field in ("n0", "n", "alpha", "batch", "image_batch", "num_examples", "seed", "radii"):
        if field not in c:
            raise ValueError(f"{p}{field} is missing")
    _check_int(p + "n0", c["n0"], 1)
    _check_int(p + "n", c["n"], 1)
    _check_alpha(c["alpha"], p + "alpha")
    _check_int(p + "batch", c["batch"], 1)
    _check_int(p + "image_batch", c["image_batch"], 1)
    ne = c["num_examples"]
    if not _is_int(ne) or (ne != -1 and ne < 1):
        raise ValueError(f"{p}num_examples={ne!r} is not allowed; it must be -1 (all) or an int >= 1")
    _check_int(p + "seed", c["seed"], 0)
    radii = c["radii"]
    try:
        r = np.asarray(list(radii), np.float64)
    except (TypeError, ValueError):
        r = np.asarray([np.nan])
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0) \
            or np.any(np.diff(r) <= 0):
        raise ValueError(f"{p}radii={radii!r} is not allowed; it must be a non-empty, strictly "
                         "increasing list of finite radii >= 0")


def _coding_of(classifier: Any) -> tuple[str, float, int]:
    try:
        cod = classifier.config["coding"]
        method, sigma, T = cod["method"], cod["sigma"], cod["T"]
    except (AttributeError, KeyError, TypeError) as e:
        raise ValueError("classifier.config['coding'] must hold 'method', 'sigma' and 'T'") from e
    check_coding(method, "config.coding.method")
    _check_sigma(sigma, "config.coding.sigma")
    _check_int("config.coding.T", T, 1)
    return str(method), float(sigma), int(T)


def _timed(batches: Iterator[tuple[np.ndarray, int]], log: list[tuple[int, float]],
           bar: Any) -> Iterator[tuple[np.ndarray, int]]:
    """Records (valid, seconds) per batch; ``map_examples`` finishes a batch before the next."""
    t = time.perf_counter()
    for idx, valid in batches:
        yield idx, valid
        now = time.perf_counter()
        log.append((valid, now - t))
        t = now
        if bar is not None:
            bar.update(valid)


def certified_accuracy(radii_grid: Sequence[float], radius_: np.ndarray,
                       correct: np.ndarray) -> np.ndarray:
    """Fraction of examples with a correct prediction and radius >= r, per r (Cohen et al.)."""
    rad = np.asarray(radius_, np.float64)
    ok = np.asarray(correct, bool)
    return np.array([float(np.mean(ok & (rad >= r))) for r in radii_grid])


def _plot(path: str, radii_grid: Sequence[float], acc: np.ndarray, rad: np.ndarray,
          correct: np.ndarray, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    finite = rad[np.isfinite(rad)]
    top = max(float(max(radii_grid)), float(finite.max()) if finite.size else 0.0) * 1.05 + 1e-3
    grid = np.linspace(0.0, top, 400)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(grid, certified_accuracy(grid, rad, correct), lw=1.5, label="certified")
    ax.plot(list(radii_grid), acc, "o", ms=4, label="grid")
    ax.set_xlabel("l2 radius")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(classifier: Any, images: np.ndarray, labels: np.ndarray, cfg: Any, *, workdir: str,
        mesh: jax.sharding.Mesh, progress: bool = True) -> dict[str, Any]:
    """Certifies the first ``num_examples`` test images, sharded over ``mesh``.

    Args:
      classifier: has ``.logits(key, x[B, H, W, C]) -> [B, K]`` (one noisy draw,
        inference mode) and ``.config['coding'] = {'method', 'sigma', 'T'}``.
      images: [N, H, W, C] uint8 (0-255) or float in [0, 1]. labels: [N] ints.
      cfg: the ``config.certify`` section (``default_config``) or a config holding it.
      workdir: output folder. mesh: 1-D ``data`` mesh (``parallel.make_mesh``).
      progress: show a tqdm bar (images/s).

    Writes ``certify.jsonl`` (one line per example), ``certified.json`` (the returned
    dict) and ``certified.png`` into ``workdir``. Per-example seconds are the wall time
    of its image batch divided by the batch's images (the first includes compilation).

    Returns:
      dict with settings, radii, certified_accuracy, acr (mean of radius * correct),
      abstain_rate, seconds, images_per_second, radius_formula.
    """
    method, sigma, T = _coding_of(classifier)          # refuses poisson/direct first
    validate_config(cfg)
    c = _section(cfg)
    n0, n, alpha, batch = int(c["n0"]), int(c["n"]), float(c["alpha"]), int(c["batch"])
    image_batch, seed = int(c["image_batch"]), int(c["seed"])
    radii_grid = [float(r) for r in c["radii"]]
    devices = int(mesh.devices.size)
    if image_batch % devices:
        raise ValueError(f"config.certify.image_batch={image_batch} is not allowed; it must be "
                         f"divisible by the device count {devices}")
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    chex.assert_rank(images, 4)
    if len(labels) != len(images):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    num = len(images) if int(c["num_examples"]) == -1 else min(int(c["num_examples"]), len(images))
    if num < 1:
        raise ValueError("run got no images to certify")
    images, labels = images[:num], labels[:num]
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images have dtype {images.dtype}; expected uint8 or float in [0, 1]")
    if not (np.all(np.isfinite(images)) and images.min() >= 0.0 and images.max() <= 1.0):
        raise ValueError(f"images have values in [{images.min()}, {images.max()}]; float images must lie in [0, 1]")
    k = getattr(classifier, "num_classes", None)
    if isinstance(k, int) and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels lie in [{labels.min()}, {labels.max()}] but the classifier has {k} classes")

    logits_fn = _static(classifier.logits)
    key = parallel.replicate(jax.random.key(seed), mesh)

    def fn(indices: Array, x: Array) -> tuple[Array, Array]:
        return _certify_counts(key, indices, x, logits_fn=logits_fn, n0=n0, n=n, batch=batch)

    log: list[tuple[int, float]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num, unit="img", desc=f"certify {method} sigma={sigma:g}")
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    try:
        c0, c1 = parallel.map_examples(fn, [images], batch_size=image_batch, mesh=mesh,
                                       progress=lambda it: _timed(it, log, bar))
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    res = certify_from_counts(c0, c1, alpha=alpha, sigma=sigma, coding=method, T=T)
    per_example = np.concatenate([np.full(v, s / v) for v, s in log])
    correct = res.prediction == labels

    primary = parallel.is_primary()    # every host holds the gathered counts; one writes
    with open(os.path.join(workdir, "certify.jsonl") if primary else os.devnull, "w") as f:
        for i in range(num):
            f.write(json.dumps({
                "index": i, "label": int(labels[i]), "prediction": int(res.prediction[i]),
                "correct": bool(correct[i]), "p_A": float(res.p_lower[i]),
                "radius": float(res.radius[i]), "n_A": int(res.n_A[i]),
                "counts_selection": res.counts_selection[i].tolist(),
                "counts": res.counts[i].tolist(), "seconds": float(per_example[i])}) + "\n")

    acc = certified_accuracy(radii_grid, res.radius, correct)
    steady = [(v, s) for v, s in log[1:]]
    formula = ("sigma * Phi^-1(p_A)" if method == "rsc1" else "sigma * Phi^-1(p_A) / sqrt(T)")
    result = {
        "settings": {"coding": method, "sigma": sigma, "T": T, "n0": n0, "n": n, "alpha": alpha,
                     "batch": batch, "image_batch": image_batch, "num_examples": num,
                     "seed": seed, "devices": devices},
        "radii": radii_grid,
        "certified_accuracy": [float(a) for a in acc],
        "acr": float(np.mean(res.radius * correct)),
        "abstain_rate": float(np.mean(res.prediction == -1)),
        "num_examples": num,
        "seconds": seconds,
        "images_per_second": num / seconds if seconds > 0 else float("inf"),
        "images_per_second_after_first_batch": (sum(v for v, _ in steady) / sum(s for _, s in steady)
                                                if steady and sum(s for _, s in steady) > 0 else None),
        "radius_formula": formula,
    }
    if not primary:
        return result
    with open(os.path.join(workdir, "certified.json"), "w") as f:
        json.dump(result, f, indent=2)
    _plot(os.path.join(workdir, "certified.png"), radii_grid, acc, res.radius, correct,
          f"{method}, sigma={sigma:g}, T={T}, n={n}, alpha={alpha:g}, {num} images")
    return result


def markdown(result: Mapping[str, Any]) -> str:
    """The certification section of report.md for a ``run`` result."""
    s = result["settings"]
    lines = [
        "## Certified robustness (randomized smoothing)",
        "",
        f"Cohen et al. (ICML 2019) CERTIFY on the "
        f"{ {'rsc1': 'RSC-I', 'rsc2': 'RSC-II'}.get(s['coding'], s['coding'])}-coded network as base "
        f"classifier: sigma = {s['sigma']:g}, T = {s['T']}, n0 = {s['n0']}, n = {s['n']}, "
        f"alpha = {s['alpha']:g}, {s['num_examples']} test images, seed {s['seed']}. "
        f"Certified l2 radius R = {result['radius_formula']} in [0, 1] pixel space, "
        "abstaining when the Clopper-Pearson lower bound p_A <= 1/2.",
        "",
        "| radius | " + " | ".join(f"{r:g}" for r in result["radii"]) + " |",
        "|---|" + "---|" * len(result["radii"]),
        "| certified accuracy | " + " | ".join(f"{100 * a:.1f}%" for a in
                                               result["certified_accuracy"]) + " |",
        "",
        f"- Average certified radius (ACR): {result['acr']:.3f}",
        f"- Abstain rate: {100 * result['abstain_rate']:.1f}%",
        f"- Throughput: {result['images_per_second']:.3g} images/s "
        f"({s['devices']} device(s), {result['seconds']:.1f} s in all, compilation included)",
        "",
        "![certified accuracy vs radius](certified.png)",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "CERTIFIABLE_CODINGS", "CertifyResult", "PredictResult", "certified_accuracy", "certify",
    "certify_from_counts", "check_coding", "clopper_pearson_lower", "default_config",
    "markdown", "predict", "predict_from_counts", "radius", "run", "validate_config",
]
