"""Input codings for spiking networks: direct, Poisson (rate) and Gaussian RSC.

An SNN sees a static image x in [0, 1] through a coding over T time steps. Poisson
coding draws s_t ~ Bernoulli(x), i.e. s_t = x + n_t with zero-mean noise of variance
x(1 - x); randomized smoothing coding (RSC, Wu et al., ACM MM 2024, arXiv:2407.20099)
replaces that noise by Gaussian noise of tunable level sigma:

- ``"direct"``: s_t = x for every step.
- ``"poisson"``: s_t ~ Bernoulli(x), with a straight-through gradient (forward
  Bernoulli, backward identity: d s_t / d x = 1 for every step).
- ``"rsc1"`` (RSC-I): s_t = x + eps, one eps ~ N(0, sigma^2 I) shared by all steps.
- ``"rsc2"`` (RSC-II): s_t = x + eps_t, a fresh eps_t ~ N(0, sigma^2 I) per step.

Two more entries are gradient estimators for attacking Poisson coding (``attack_only``:
a config cannot train or certify with them). Both draw the logistic noise
L = log u - log(1 - u), u ~ U(0, 1), so that 1[logit(x) + L > 0] ~ Bernoulli(x), and use
the Gumbel-sigmoid (binary Concrete) relaxation sigmoid((logit(x) + L) / tau) of that
spike (Maddison et al., ICLR 2017; Jang et al., ICLR 2017), with the temperature tau
passed as ``sigma``:

- ``"poisson_gumbel"``: the exact Poisson spikes forward (the same law as ``"poisson"``),
  the relaxation's derivative backward (straight-through Gumbel-sigmoid): a white-box
  attack on the Poisson model with another gradient than the straight-through identity.
- ``"poisson_relaxed"``: the relaxation forward and backward: a differentiable copy of
  the model that attacks transfer from (its inputs tend to Poisson spikes as tau -> 0).

Gaussian codings are not clamped to [0, 1] (SPEC §1): the noise lives in pixel space
and the dataset normalisation is a layer of the model, after the coding.

Each coding is one entry of ``CODINGS`` (``Coding``): how it draws, its moments and its
certificate; the rest of the package asks the registry instead of naming methods.
This module imports only ``validation`` from the package.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from rsc_jax import validation

Array = jax.Array


# --------------------------------------------------------------------------- the codings


def _direct(key: Array, steps: Array, sigma: Any) -> Array:
    del key, sigma
    return steps


def _poisson(key: Array, steps: Array, sigma: Any) -> Array:
    del sigma
    # Bernoulli(p) needs p in [0, 1]; out-of-range pixels fire always or never.
    spikes = jax.random.bernoulli(key, jnp.clip(steps, 0.0, 1.0)).astype(steps.dtype)
    return _straight_through(steps, spikes)


def _rsc1(key: Array, steps: Array, sigma: Any) -> Array:
    eps = jax.random.normal(key, steps.shape[1:], steps.dtype)
    return steps + jnp.asarray(sigma, steps.dtype) * eps[None]


def _rsc2(key: Array, steps: Array, sigma: Any) -> Array:
    eps = jax.random.normal(key, steps.shape, steps.dtype)
    return steps + jnp.asarray(sigma, steps.dtype) * eps


def _logistic_relaxation(key: Array, steps: Array, tau: Any) -> tuple[Array, Array]:
    """(hard spikes 1[logit(x) + L > 0], soft sigmoid((logit(x) + L) / tau)) of one draw of
    L ~ Logistic(0, 1). The hard spikes are exactly Bernoulli(clip(x, 0, 1)). The soft ones
    see x clipped to [1e-4, 1 - 1e-4] (logit(0) is -inf) with the clip's derivative taken as
    1, so pixels at 0 or 1 (most of MNIST) keep the relaxation's gradient at the clip."""
    noise = jax.random.logistic(key, steps.shape, steps.dtype)
    p = jnp.clip(steps, 0.0, 1.0)
    hard = jnp.where(p <= 0, 0.0, jnp.where(p >= 1, 1.0, (jnp.log(p) - jnp.log1p(-p) + noise > 0)))
    q = steps + jax.lax.stop_gradient(jnp.clip(steps, 1e-4, 1.0 - 1e-4) - steps)
    soft = jax.nn.sigmoid((jnp.log(q) - jnp.log1p(-q) + noise) / jnp.asarray(tau, steps.dtype))
    return hard.astype(steps.dtype), soft


def _poisson_gumbel(key: Array, steps: Array, tau: Any) -> Array:
    hard, soft = _logistic_relaxation(key, steps, tau)
    return soft + jax.lax.stop_gradient(hard - soft)     # value: hard; derivative: soft's


def _poisson_relaxed(key: Array, steps: Array, tau: Any) -> Array:
    return _logistic_relaxation(key, steps, tau)[1]


@dataclasses.dataclass(frozen=True)
class Coding:
    """What the package knows of one coding.

    Attributes:
      name: the ``method`` string.
      label: the paper's name.
      gaussian: draws Gaussian noise of level sigma (then sigma must be > 0).
      draw: ``(key, steps [T, ...], sigma) -> [T, ...]``, the noisy sequence.
      step_var: ``(x, sigma^2 as an array like x) -> Var(s_t)``.
      cross_cov: ``(x, sigma^2) -> Cov(s_t, s_t')`` for t != t'.
      radius_divisor: ``T -> d(T)`` of the certified l2 radius
        ``R = sigma Phi^-1(p_A) / d(T)`` (``certify.py`` derives it), or None.
      radius_formula: that radius as text, for reports.
      no_certificate: why randomized smoothing certifies nothing, where it does not.
      sigma_rule: what ``sigma`` is and what is allowed, or None when the coding ignores
        it (then any finite sigma >= 0 passes); a coding with a rule needs sigma > 0.
      attack_only: a gradient estimator for attacks, not a coding to train or certify
        with (not in ``METHODS``; ``Classifier.with_coding`` accepts it).
      ann_mean: an ANN (no time axis) fed this coding sees the mean of the T coded
        frames, the SNN's time average (the Poisson codings: the noise-matched control of
        a T-step Poisson SNN, variance x(1-x)/T); otherwise the first frame (the Gaussian
        ANN controls are matched by sigma instead, and certified with T = 1). Ours.
    """
    name: str
    label: str
    gaussian: bool
    draw: Callable[[Array, Array, Any], Array]
    step_var: Callable[[Array, Array], Array]
    cross_cov: Callable[[Array, Array], Array]
    radius_divisor: Callable[[int], float] | None = None
    radius_formula: str | None = None
    no_certificate: str | None = None
    sigma_rule: str | None = None
    attack_only: bool = False
    ann_mean: bool = False


_GAUSSIAN_RULE = "Gaussian codings (rsc1, rsc2) need a finite sigma > 0"
_TEMPERATURE_RULE = "the Gumbel-sigmoid codings take the relaxation temperature as sigma, finite and > 0"
_NO_POISSON_CERTIFICATE = ("Poisson coding draws s_t ~ Bernoulli(x): its noise is discrete, bounded and its law "
                           "depends on x, so it is not a Gaussian translation family and randomized smoothing "
                           "gives no l2 certificate for it")


def _zeros(x: Array, s2: Array) -> Array:
    return jnp.zeros_like(x)


def _sigma2(x: Array, s2: Array) -> Array:
    return s2


def _bernoulli_var(x: Array, s2: Array) -> Array:
    return x * (1 - x)


CODINGS: dict[str, Coding] = {c.name: c for c in (
    Coding("direct", "direct", False, _direct, _zeros, _zeros,
           no_certificate="direct coding adds no noise, so the smoothed classifier is the deterministic "
                          "base network and sampling certifies nothing"),
    Coding("poisson", "Poisson (rate)", False, _poisson, _bernoulli_var, _zeros,
           no_certificate=_NO_POISSON_CERTIFICATE, ann_mean=True),
    Coding("rsc1", "RSC-I", True, _rsc1, _sigma2, _sigma2,
           radius_divisor=lambda T: 1.0, radius_formula="sigma * Phi^-1(p_A)", sigma_rule=_GAUSSIAN_RULE),
    Coding("rsc2", "RSC-II", True, _rsc2, _sigma2, _zeros,
           radius_divisor=math.sqrt, radius_formula="sigma * Phi^-1(p_A) / sqrt(T)", sigma_rule=_GAUSSIAN_RULE),
    Coding("poisson_gumbel", "Poisson, Gumbel-sigmoid gradient", False, _poisson_gumbel, _bernoulli_var,
           _zeros, no_certificate=_NO_POISSON_CERTIFICATE, sigma_rule=_TEMPERATURE_RULE, attack_only=True,
           ann_mean=True),
    Coding("poisson_relaxed", "relaxed Poisson (Gumbel-sigmoid)", False, _poisson_relaxed, _bernoulli_var,
           _zeros, no_certificate=_NO_POISSON_CERTIFICATE, sigma_rule=_TEMPERATURE_RULE, attack_only=True,
           ann_mean=True),
)}
# Codings a config can train and evaluate with (the attack-only estimators left out).
METHODS: tuple[str, ...] = tuple(n for n, c in CODINGS.items() if not c.attack_only)
GAUSSIAN_METHODS: tuple[str, ...] = tuple(n for n, c in CODINGS.items() if c.gaussian)
CERTIFIABLE_METHODS: tuple[str, ...] = tuple(n for n, c in CODINGS.items() if c.radius_divisor is not None)


def get(method: str, name: str = "coding method") -> Coding:
    """The registry entry of ``method`` (attack-only entries included); ``ValueError``
    naming ``name`` if unknown."""
    validation.check_choice(name, method, tuple(CODINGS))
    return CODINGS[method]


def check_method(method: str) -> None:
    """Raises ``ValueError`` unless ``method`` is one of ``METHODS``."""
    get(method)


def check_sigma(sigma: Any, method: str, name: str = "coding sigma") -> None:
    """One rule (``validation.check_sigma``): finite, > 0 for the codings that use it
    (Gaussian noise level, Gumbel-sigmoid temperature), >= 0 for the codings that ignore
    it. A traced sigma is let through."""
    c = get(method)
    validation.check_sigma(name, sigma, positive=c.sigma_rule is not None, rule=c.sigma_rule)


def check_T(T: Any, name: str = "coding T") -> None:
    validation.check_int(name, T, 1)


@jax.custom_jvp
def _straight_through(x: Array, spikes: Array) -> Array:
    """Returns ``spikes`` forward; its derivative with respect to ``x`` is the identity."""
    del x
    return spikes


@_straight_through.defjvp
def _straight_through_jvp(primals, tangents):
    x, spikes = primals
    x_dot, _ = tangents
    return spikes, jnp.broadcast_to(x_dot, spikes.shape).astype(spikes.dtype)


def encode(key: Array, x: Array, *, method: str, T: int, sigma: float | Array = 0.0) -> Array:
    """Codes images ``x`` as a sequence of T network inputs.

    Args:
      key: a PRNG key (unused by ``"direct"``).
      x: float images in [0, 1], any shape (usually ``[B, H, W, C]``).
      method: one of ``CODINGS`` (``METHODS`` plus the attack-only Gumbel-sigmoid
        estimators); static under ``jit``.
      T: number of time steps (>= 1); static under ``jit``.
      sigma: Gaussian noise level for ``"rsc1"``/``"rsc2"``, the relaxation temperature
        for ``"poisson_gumbel"``/``"poisson_relaxed"``, > 0 (ignored otherwise).

    Returns:
      ``[T, *x.shape]`` array of the dtype of ``x``. Differentiable in ``x``: the
      Gaussian codings have Jacobian I per step, Poisson uses the straight-through
      estimator (derivative 1 per step), the Gumbel-sigmoid ones the relaxation's
      derivative (module docstring).

    Raises:
      TypeError: integer images (e.g. uint8 0-255).
      ValueError: unknown method, T < 1, sigma not finite (or <= 0 for a Gaussian coding).
    """
    coding = get(method)
    check_T(T)
    validation.check_float_dtype("x", x)
    check_sigma(sigma, method)
    x = jnp.asarray(x)
    out = coding.draw(key, jnp.broadcast_to(x, (T, *x.shape)), sigma)
    chex.assert_shape(out, (T, *x.shape))
    return out


def encode_per_example(keys: Array, x: Array, *, method: str, T: int,
                       sigma: float | Array = 0.0) -> Array:
    """``encode`` with one key per example along axis 0 of ``x``.

    Row b of the result depends only on ``keys[b]`` and ``x[b]``, so the noise an
    example sees does not depend on the batch it is in, nor on how the batch is
    sharded across devices. Column b equals ``encode(keys[b], x[b:b+1], ...)[:, 0]``:
    a batch of per-example keys means the same as coding each example alone.

    Args:
      keys: ``[B]`` PRNG keys.
      x: ``[B, ...]`` float images in [0, 1].

    Returns:
      ``[T, B, ...]``.
    """
    if keys.shape[:1] != x.shape[:1]:
        raise ValueError(f"keys has leading shape {keys.shape[:1]} but x has {x.shape[:1]}; "
                         "encode_per_example needs one key per example")
    return jax.vmap(lambda k, xi: encode(k, xi[None], method=method, T=T, sigma=sigma)[:, 0],
                    out_axes=1)(keys, x)


def moments(x: Array, *, method: str, T: int, sigma: float = 0.0) -> dict[str, Array]:
    """Closed-form moments of the coded sequence (the paper's covariance analysis).

    With s_t the coded input at step t and s_bar = (1/T) sum_t s_t:

    ===========  ========  ==============  ================  =================
    method       mean      step_var        cross_cov (t!=t')  mean_var
    ===========  ========  ==============  ================  =================
    direct       x         0               0                 0
    poisson      x         x(1-x)          0                 x(1-x)/T
    rsc1         x         sigma^2         sigma^2           sigma^2
    rsc2         x         sigma^2         0                 sigma^2/T
    ===========  ========  ==============  ================  =================

    The Poisson row assumes x in [0, 1]. Returns a dict of arrays shaped like ``x``
    with keys ``mean``, ``step_var``, ``cross_cov``, ``mean_var``.
    """
    coding = get(method)
    check_sigma(sigma, method)
    check_T(T)
    x = jnp.asarray(x, jnp.result_type(float))
    s2 = jnp.full_like(x, float(sigma) ** 2)
    step_var, cross = coding.step_var(x, s2), coding.cross_cov(x, s2)
    # Var(mean) = (T var + T(T-1) cov) / T^2.
    mean_var = (step_var + (T - 1) * cross) / T
    return {"mean": x, "step_var": step_var, "cross_cov": cross, "mean_var": mean_var}
