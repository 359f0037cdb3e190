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

**What n and alpha allow.** All n draws agreeing gives p_A = alpha^(1/n), so the radius
cannot exceed ``max_radius(n, alpha, ...)`` (for sigma Phi^-1(p_A): 3.20 sigma at n =
10,000 and 3.81 sigma at n = 100,000, alpha = 0.001, before RSC-II's 1/sqrt(T)); a 0
beyond it is the sample size's, not the model's. **l_inf.** An l2 certificate r also
certifies the l_inf ball of radius r / sqrt(d), d = H W C (``linf_equivalent``), a bound.

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
from typing import Any, Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from rsc_jax import backend, parallel, validation
from rsc_jax import coding as coding_lib

Array = jax.Array
LogitsFn = Callable[[Array, Array], Array]

_STREAM_SELECT, _STREAM_ESTIMATE, _STREAM_PREDICT = 0, 1, 2

# Our defaults (not the paper's): draws per chunk per image.
DEFAULT_BATCH = 100


def check_coding(method: Any, name: str = "coding") -> None:
    """Raises ``ValueError`` unless ``method`` has a Gaussian certificate (the coding
    registry's ``radius_divisor``; Poisson and direct say why they have none)."""
    c = coding_lib.get(method, name)
    if c.no_certificate:
        raise ValueError(f"{name}={method!r} cannot be certified: {c.no_certificate}; "
                         f"allowed: {list(coding_lib.CERTIFIABLE_METHODS)}")


def _check_alpha(alpha: Any, name: str = "alpha") -> None:
    validation.check_number(name, alpha, low=0.0, high=1.0, low_open=True, high_open=True)


def _check_images(x: Any, expected: tuple[int, ...] | None = None) -> None:
    """A batch of float images ``[B, H, W, C]`` (one line otherwise: one image without its
    batch axis says so), of the classifier's image shape when it is known."""
    shape = tuple(np.shape(x))
    if len(shape) != 4:
        one = len(shape) == 3 and (expected is None or shape == tuple(expected))
        raise ValueError(f"x has shape {shape}; a batch of images [B, H, W, C] is required"
                         + (" (one image: pass x[None])" if one else ""))
    if expected is not None and shape[1:] != tuple(expected):
        raise ValueError(f"x has images of shape {shape[1:]}; the classifier takes {tuple(expected)}")
    validation.check_float_dtype("x", x)


def classifier_coding(classifier: Any) -> dict[str, Any] | None:
    """``{"method", "sigma", "T"}`` of the coding a classifier applies, or None.

    ``classifier`` is a ``classifier.Classifier``, its bound ``logits`` method, or any
    object (or bound method of one) with ``config["coding"]``. ``T`` is the number of
    coded frames the network sees: 1 for an ANN (``config["model"]["spiking"]`` False),
    which sees one frame of the coding."""
    owner = getattr(classifier, "__self__", classifier)
    conf = getattr(owner, "config", None)
    if not isinstance(conf, dict) or not isinstance(conf.get("coding"), dict):
        return None
    cod = conf["coding"]
    model = conf.get("model")
    spiking = not isinstance(model, dict) or model.get("spiking", True)
    return {"method": cod["method"], "sigma": float(cod["sigma"]), "T": int(cod["T"]) if spiking else 1}


def resolve_coding(classifier: Any, *, method: str | None = None, sigma: float | None = None,
                   T: int | None = None, coding: str | None = None) -> tuple[str, float, int]:
    """The (method, sigma, T) a certificate for ``classifier`` must use.

    From the classifier when it carries its coding (``classifier_coding``): a value given
    as well must equal it (a different sigma would give a wrong radius: one line, a
    ``ValueError``). For a plain logits function all three are required. ``coding`` is
    the older name of ``method`` (so ``certify(..., **clf.config["coding"])`` works)."""
    if coding is not None and method is not None and coding != method:
        raise ValueError(f"method={method!r} and coding={coding!r} disagree; give one of them")
    method = method if method is not None else coding
    given = {"method": method, "sigma": sigma, "T": T}
    own = classifier_coding(classifier)
    if own is None:
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing: a plain logits function does not say how it codes "
                             "its input; pass method=, sigma= and T= of that coding, or pass the Classifier "
                             "(or clf.logits), whose coding is used")
        return str(method), sigma, T
    for k, v in given.items():
        if v is None:
            continue
        same = (np.isclose(float(v), own[k], rtol=1e-9, atol=0.0) if k == "sigma" and validation.is_number(v)
                else v == own[k])
        if not same:
            raise ValueError(
                f"{k}={v!r} is not allowed; the classifier codes its input with method={own['method']!r}, "
                f"sigma={own['sigma']!r}, T={own['T']!r} (T = the frames the network sees), and a certificate "
                f"holds only for that coding: leave {k} out (it is taken from the classifier)")
    return own["method"], own["sigma"], own["T"]


def _logits_of(classifier: Any) -> LogitsFn:
    """A classifier's ``logits`` method, or ``classifier`` itself when it is a function."""
    if not callable(classifier) and callable(getattr(classifier, "logits", None)):
        return classifier.logits
    return classifier


def _expected_shape(classifier: Any) -> tuple[int, ...] | None:
    conf = getattr(getattr(classifier, "__self__", classifier), "config", None)
    try:
        return tuple(conf["dataset"]["image_shape"])
    except (TypeError, KeyError):
        return None


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
    coding_lib.check_sigma(sigma, coding, "sigma")
    validation.check_int("T", T, 1)
    p = np.asarray(p_lower, np.float64)
    if np.any(~(p >= 0.0) | ~(p <= 1.0)):
        raise ValueError(f"p_lower={p_lower!r} is not allowed; it must lie in [0, 1]")
    r = float(sigma) * scipy.stats.norm.ppf(np.where(p > 0.5, p, 0.5))
    r = r / coding_lib.get(coding).radius_divisor(T)
    return np.where(p > 0.5, r, 0.0)


def max_radius(n: int, alpha: float, *, sigma: float, coding: str, T: int) -> float:
    """The largest l2 radius CERTIFY can return with n estimation draws at level alpha.

    Even when all n draws agree, p_A is at most the Clopper-Pearson bound
    ``clopper_pearson_lower(n, n, alpha) = alpha^(1/n)``, so no radius above
    ``radius(alpha^(1/n))`` can be certified: a certified accuracy of 0 beyond it is
    caused by n and alpha, not by the model. E.g. RSC-II sigma 0.2, T 4, alpha 0.001:
    0.270 at n = 2,000, 0.381 at n = 100,000.
    """
    validation.check_int("n", n, 1)
    _check_alpha(alpha)
    return float(radius(clopper_pearson_lower(n, n, alpha), sigma=sigma, coding=coding, T=T))


def linf_equivalent(radius_l2: Any, input_dim: int) -> np.ndarray:
    """The l_inf radius an l2 certificate of radius ``radius_l2`` implies, in [0, 1] pixels.

    For u in R^d, |u|_2 <= sqrt(d) |u|_inf, so the l_inf ball of radius r / sqrt(d) lies
    inside the l2 ball of radius r: a smoothed classifier certified constant on the l2
    ball of radius r is constant on that l_inf ball. ``r / sqrt(d)`` is therefore a
    *lower bound* on the certified l_inf radius (it is what the l2 certificate proves,
    not the classifier's true l_inf robustness), with d = H * W * C the number of pixel
    values of an image. Multiply by 255 for /255 units. Example: digits 8x8x1, d = 64,
    r = 0.5 -> 0.0625 = 15.94/255; MNIST 28x28x1, d = 784, r = 0.5 -> 0.01786 = 4.55/255.

    Args:
      radius_l2: l2 radii (array-like, >= 0; inf stays inf).
      input_dim: d = H * W * C (int >= 1).

    Returns:
      float64 array of r / sqrt(d), the shape of ``radius_l2``.
    """
    validation.check_int("input_dim", input_dim, 1)
    r = np.asarray(radius_l2, np.float64)
    if np.any(~(r >= 0.0)):
        raise ValueError(f"radius_l2={radius_l2!r} is not allowed; radii must be >= 0")
    return r / np.sqrt(float(input_dim))


class _Result:
    def as_dict(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PredictResult(_Result):
    """PREDICT output for B images and K classes (NumPy arrays).

    prediction [B] int64 (-1 = abstain); counts [B, K] int64; n_A, n_B [B] top-two
    counts; p_value [B] two-sided binomial p-value of n_A out of n_A + n_B at 1/2.
    """
    prediction: np.ndarray
    counts: np.ndarray
    n_A: np.ndarray
    n_B: np.ndarray
    p_value: np.ndarray


@dataclasses.dataclass(frozen=True)
class CertifyResult(_Result):
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


def static_fn(fn: Callable) -> Callable:
    """``fn`` itself when hashable, else wrapped (hashed by identity): a static jit argument."""
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
def certify_counts(key: Array, indices: Array, x: Array, *, logits_fn: LogitsFn, n0: int,
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


def predict(logits_fn: Any, key: Array, x: Array, *, n: int, alpha: float,
            batch: int = DEFAULT_BATCH, indices: Any = None) -> PredictResult:
    """Cohen et al.'s PREDICT for a batch of images.

    Args:
      logits_fn: one draw of the noisy base classifier, ``(key, x[B, H, W, C]) -> [B, K]``;
        it applies the coding itself and must treat examples independently. A
        ``Classifier`` stands for its ``logits``.
      key: PRNG key (the seed).
      x: float images [B, H, W, C] in [0, 1].
      n: draws per image (>= 1).
      alpha: test level in (0, 1); a wrong non-abstained answer has probability <= alpha.
      batch: draws per chunk per image (ours: 100); memory ~ B * batch forward passes.
      indices: global example indices [B] keying the noise (default 0..B-1).

    Returns:
      ``PredictResult``: prediction [B] (-1 = abstain), counts [B, K], n_A, n_B, p_value.
    """
    validation.check_int("n", n, 1)
    _check_alpha(alpha)
    validation.check_int("batch", batch, 1)
    _check_images(x, _expected_shape(logits_fn))
    idx = _indices_for(x, indices)
    counts = _predict_counts(key, idx, x, logits_fn=static_fn(_logits_of(logits_fn)), n=int(n),
                             batch=int(batch))
    return predict_from_counts(jax.device_get(counts), alpha=alpha)


def certify(logits_fn: Any, key: Array, x: Array, *, method: str | None = None, sigma: float | None = None,
            T: int | None = None, n0: int = 100, n: int = 10_000, alpha: float = 0.001,
            batch: int = DEFAULT_BATCH, indices: Any = None, coding: str | None = None) -> CertifyResult:
    """Cohen et al.'s CERTIFY for a batch of images.

        res = certify(clf, key, x)                           # the coding is clf's
        res = certify(clf.logits, key, x, **clf.config["coding"])   # the same (checked)
        res = certify(fn, key, x, method="rsc2", sigma=0.25, T=4)   # a plain function

    Args:
      logits_fn: a ``Classifier`` (or its bound ``logits``): one draw of the noisy base
        classifier ``(key, x[B, H, W, C]) -> [B, K]`` whose coding sets the radius; or a
        plain function of that signature that applies the coding (method, sigma, T) itself.
      key: PRNG key (the seed).
      x: float images [B, H, W, C] in [0, 1] (one image: ``x[None]``).
      method, sigma, T: the Gaussian coding; taken from a classifier (given values must
        equal its own: ``resolve_coding``), required for a plain function. They set the
        radius (``radius``): "rsc1" sigma Phi^-1(p_A), "rsc2" sigma Phi^-1(p_A) / sqrt(T).
      n0: selection draws (SPEC: 100). n: estimation draws (SPEC: 10,000).
      alpha: failure probability (SPEC: 0.001).
      batch: draws per chunk per image (ours: 100).
      indices: global example indices [B] keying the noise (default 0..B-1).
      coding: the older name of ``method``.

    Returns:
      ``CertifyResult``: prediction [B] (-1 = abstain), p_lower [B], radius [B]
      (0 where abstaining), counts_selection [B, K], counts [B, K], n_A [B].

    Raises:
      ValueError: a coding that differs from the classifier's, or is missing for a plain
        function; "poisson"/"direct" coding (no Gaussian certificate), unknown coding,
        sigma <= 0, T < 1, n0 < 1, n < 1, alpha outside (0, 1), batch < 1, images not
        [B, H, W, C]; all before tracing.
    """
    method, sigma, T = resolve_coding(logits_fn, method=method, sigma=sigma, T=T, coding=coding)
    check_coding(method)
    coding_lib.check_sigma(sigma, method, "sigma")
    for name, v in (("T", T), ("n0", n0), ("n", n), ("batch", batch)):
        validation.check_int(name, v, 1)
    _check_alpha(alpha)
    _check_images(x, _expected_shape(logits_fn))
    idx = _indices_for(x, indices)
    c0, c1 = certify_counts(key, idx, x, logits_fn=static_fn(_logits_of(logits_fn)), n0=int(n0), n=int(n),
                             batch=int(batch))
    c0, c1 = jax.device_get((c0, c1))
    return certify_from_counts(c0, c1, alpha=alpha, sigma=sigma, coding=method, T=T)


def certified_accuracy(radii_grid: Sequence[float], radius_: np.ndarray,
                       correct: np.ndarray) -> np.ndarray:
    """Fraction of examples with a correct prediction and radius >= r, per r (Cohen et al.)."""
    rad = np.asarray(radius_, np.float64)
    ok = np.asarray(correct, bool)
    return np.array([float(np.mean(ok & (rad >= r))) for r in radii_grid])


__all__ = [
    "CertifyResult", "PredictResult", "certified_accuracy", "certify", "certify_counts",
    "certify_from_counts", "check_coding", "classifier_coding", "resolve_coding",
    "clopper_pearson_lower", "linf_equivalent", "max_radius", "predict",
    "predict_from_counts", "radius", "static_fn",
]
