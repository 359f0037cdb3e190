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

Gaussian codings are not clamped to [0, 1] (SPEC §1): the noise lives in pixel space
and the dataset normalisation is a layer of the model, after the coding.

This module imports nothing else from the package.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

METHODS: tuple[str, ...] = ("direct", "poisson", "rsc1", "rsc2")
GAUSSIAN_METHODS: tuple[str, ...] = ("rsc1", "rsc2")

Array = jax.Array


def check_method(method: str) -> None:
    """Raises ``ValueError`` unless ``method`` is one of ``METHODS``."""
    if method not in METHODS:
        raise ValueError(f"coding method={method!r} is not known; allowed: {list(METHODS)}")


def check_sigma(sigma: Any) -> None:
    """Raises ``ValueError`` for a negative or non-finite concrete sigma.

    A traced sigma (under ``jit`` with sigma as an argument) cannot be inspected and is
    let through; validate configs before tracing.
    """
    if isinstance(sigma, jax.core.Tracer):
        return
    s = np.asarray(sigma)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"coding sigma={sigma!r} is not allowed; sigma must be finite and >= 0")


def _check_images(x: Array, name: str = "x") -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(
            f"{name} has dtype {jnp.result_type(x)}; encode expects float images in [0, 1] "
            "(convert uint8 images with x.astype(jnp.float32) / 255)")


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
      method: one of ``METHODS``; static under ``jit``.
      T: number of time steps (>= 1); static under ``jit``.
      sigma: Gaussian noise level for ``"rsc1"``/``"rsc2"`` (ignored otherwise).

    Returns:
      ``[T, *x.shape]`` array of the dtype of ``x``. Differentiable in ``x``: the
      Gaussian codings have Jacobian I per step, Poisson uses the straight-through
      estimator (derivative 1 per step).

    Raises:
      TypeError: integer images (e.g. uint8 0-255).
      ValueError: unknown method, T < 1, negative sigma.
    """
    check_method(method)
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"coding T={T!r} is not allowed; T must be an int >= 1")
    _check_images(x)
    check_sigma(sigma)
    x = jnp.asarray(x)
    steps = jnp.broadcast_to(x, (T, *x.shape))
    if method == "direct":
        out = steps
    elif method == "poisson":
        # Bernoulli(p) needs p in [0, 1]; out-of-range pixels fire always or never.
        p = jnp.clip(steps, 0.0, 1.0)
        spikes = jax.random.bernoulli(key, p).astype(x.dtype)
        out = _straight_through(steps, spikes)
    elif method == "rsc1":
        eps = jax.random.normal(key, x.shape, x.dtype)
        out = steps + jnp.asarray(sigma, x.dtype) * eps[None]
    else:  # rsc2
        eps = jax.random.normal(key, (T, *x.shape), x.dtype)
        out = steps + jnp.asarray(sigma, x.dtype) * eps
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
    check_method(method)
    check_sigma(sigma)
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"coding T={T!r} is not allowed; T must be an int >= 1")
    x = jnp.asarray(x, jnp.result_type(float))
    zeros = jnp.zeros_like(x)
    s2 = jnp.full_like(x, float(sigma) ** 2)
    if method == "direct":
        step_var, cross = zeros, zeros
    elif method == "poisson":
        step_var, cross = x * (1 - x), zeros
    elif method == "rsc1":
        step_var, cross = s2, s2
    else:
        step_var, cross = s2, zeros
    # Var(mean) = (T var + T(T-1) cov) / T^2.
    mean_var = (step_var + (T - 1) * cross) / T
    return {"mean": x, "step_var": step_var, "cross_cov": cross, "mean_var": mean_var}
