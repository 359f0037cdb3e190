"""Property-based tests (hypothesis) over random shapes and values: coding, LIF, the
attacks' projections and the Clopper-Pearson bound.

Example counts are kept small (each new shape compiles a few XLA ops) and deadlines
are off (compilation time varies on a loaded CPU); the seed is derived from the test,
so a run is reproducible.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rsc_jax import attacks, certify, coding, neurons

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
JAX_SETTINGS = settings(SETTINGS, max_examples=10)    # each new shape compiles: fewer examples

shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)
unit = st.floats(0.0, 1.0, width=32)


def images(shape_strategy=shapes):
    return shape_strategy.flatmap(lambda s: hnp.arrays(np.float32, s, elements=unit))


# --------------------------------------------------------------------------- encode


@JAX_SETTINGS
@given(x=images(), method=st.sampled_from(coding.METHODS), T=st.integers(1, 4),
       sigma=st.floats(0.0, 2.0), seed=st.integers(0, 2**31 - 1))
def test_encode_shape_dtype_and_determinism(x, method, T, sigma, seed):
    key = jax.random.key(seed)
    s = np.asarray(coding.encode(key, x, method=method, T=T, sigma=sigma))
    assert s.shape == (T, *x.shape) and s.dtype == np.float32
    np.testing.assert_array_equal(s, np.asarray(coding.encode(key, x, method=method, T=T, sigma=sigma)))
    assert np.all(np.isfinite(s))
    if method == "direct":
        np.testing.assert_array_equal(s, np.broadcast_to(x, s.shape))
    elif method == "poisson":
        assert set(np.unique(s)) <= {0.0, 1.0}
        assert np.all(s[:, x == 0.0] == 0.0) and np.all(s[:, x == 1.0] == 1.0)
    elif method == "rsc1":
        noise = s - x[None]
        np.testing.assert_allclose(noise, np.broadcast_to(noise[:1], noise.shape), atol=1e-6)
    if method in coding.GAUSSIAN_METHODS and sigma == 0.0:
        np.testing.assert_array_equal(s, np.broadcast_to(x, s.shape))


@settings(SETTINGS, max_examples=6)
@given(x=images(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4)),
       method=st.sampled_from(coding.METHODS), T=st.integers(1, 3), seed=st.integers(0, 2**31 - 1),
       pick=st.integers(0, 3))
def test_encode_per_example_codes_each_example_alone(x, method, T, seed, pick):
    keys = jax.random.split(jax.random.key(seed), x.shape[0])
    batch = np.asarray(coding.encode_per_example(keys, x, method=method, T=T, sigma=0.3))
    b = pick % x.shape[0]
    alone = np.asarray(coding.encode(keys[b], x[b:b + 1], method=method, T=T, sigma=0.3))[:, 0]
    np.testing.assert_allclose(batch[:, b], alone, rtol=1e-6, atol=1e-6)


@JAX_SETTINGS
@given(x=images(), T=st.integers(1, 3), method=st.sampled_from(coding.METHODS))
def test_encode_jacobian_is_identity_per_step(x, T, method):
    g = jax.grad(lambda x: coding.encode(jax.random.key(0), x, method=method, T=T, sigma=0.2).sum())(
        jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g), np.full(x.shape, float(T)), rtol=1e-6)


@SETTINGS
@given(bad=st.sampled_from([-0.1, float("nan"), float("inf")]), method=st.sampled_from(coding.GAUSSIAN_METHODS))
def test_encode_refuses_bad_sigma(bad, method):
    with pytest.raises(ValueError, match="sigma"):
        coding.encode(jax.random.key(0), np.zeros((2, 2), np.float32), method=method, T=2, sigma=bad)


# --------------------------------------------------------------------------- lif


def lif_reference(currents: np.ndarray, tau: float, v_th: float, reset: str) -> np.ndarray:
    """The LIF recurrence in float64 NumPy (module docstring of rsc_jax.neurons)."""
    v = np.zeros(currents.shape[1:])
    out = []
    for i in currents.astype(np.float64):
        u = (1.0 - 1.0 / tau) * v + i
        s = (u - v_th >= 0).astype(np.float64)
        v = u * (1.0 - s) if reset == "hard" else u - v_th * s
        out.append(s)
    return np.stack(out)


@JAX_SETTINGS
@given(currents=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6).flatmap(
           lambda s: hnp.arrays(np.float32, s, elements=st.floats(-2.0, 3.0, width=32))),
       tau=st.floats(1.0, 10.0), v_th=st.floats(0.1, 2.0), reset=st.sampled_from(neurons.RESETS),
       surrogate=st.sampled_from(neurons.SURROGATES))
def test_lif_matches_reference_and_spikes_are_binary(currents, tau, v_th, reset, surrogate):
    s = np.asarray(neurons.lif(jnp.asarray(currents), tau=tau, v_th=v_th, reset=reset, surrogate=surrogate))
    assert s.shape == currents.shape and set(np.unique(s)) <= {0.0, 1.0}
    ref = lif_reference(currents, tau, v_th, reset)
    # float32 vs float64 can flip a spike only when u lands within rounding of v_th
    assert np.mean(s != ref) <= 0.05, (s, ref)
    # no input above threshold ever, no spike ever (membrane stays below v_th)
    quiet = np.asarray(neurons.lif(jnp.minimum(jnp.asarray(currents), 0.0), tau=tau, v_th=v_th, reset=reset))
    assert not quiet.any()


@JAX_SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), surrogate=st.sampled_from(
    neurons.SURROGATES), x=st.floats(-3.0, 3.0))
def test_surrogate_gradient_finite_nonnegative(shape, surrogate, x):
    g = jax.grad(lambda v: neurons.spike(v, surrogate, neurons.resolve_alpha(surrogate, None)).sum())(
        jnp.full(shape, x, jnp.float32))
    g = np.asarray(g)
    assert g.shape == shape and np.all(np.isfinite(g)) and np.all(g >= 0)


# --------------------------------------------------------------------------- projections


deltas = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5).flatmap(
    lambda s: hnp.arrays(np.float32, s, elements=st.floats(-10.0, 10.0, width=32)))


@SETTINGS
@given(delta=deltas, eps=st.floats(0.0, 5.0))
def test_linf_projection(delta, eps):
    p = np.asarray(attacks.project(jnp.asarray(delta), eps, "linf"))
    assert p.shape == delta.shape and np.all(np.abs(p) <= np.float32(eps) * (1 + 1e-6))
    np.testing.assert_array_equal(np.asarray(attacks.project(jnp.asarray(p), eps, "linf")), p)   # idempotent
    inside = np.abs(delta) <= np.float32(eps)
    np.testing.assert_array_equal(p[inside], delta[inside])                                    # identity inside
    if np.float32(eps) > 0:                                                                   # (eps may underflow)
        assert np.all(np.sign(p[~inside]) == np.sign(delta[~inside]))                         # clipped, same side


@JAX_SETTINGS
@given(delta=deltas, eps=st.floats(1e-3, 5.0))
def test_l2_projection(delta, eps):
    p = np.asarray(attacks.project(jnp.asarray(delta), eps, "l2"), np.float64)
    d = delta.astype(np.float64)
    axes = tuple(range(1, d.ndim))
    n_in, n_out = np.sqrt((d ** 2).sum(axes)), np.sqrt((p ** 2).sum(axes))
    assert np.all(n_out <= eps * (1 + 1e-5) + 1e-6)
    for b in range(len(d)):
        if n_in[b] <= eps:
            np.testing.assert_allclose(p[b], d[b], rtol=1e-6, atol=1e-6)                       # unchanged
        else:
            np.testing.assert_allclose(n_out[b], eps, rtol=1e-5)                              # on the sphere
            np.testing.assert_allclose(p[b] * n_in[b], d[b] * n_out[b], rtol=1e-4, atol=1e-4)  # same direction


# --------------------------------------------------------------------------- Clopper-Pearson


@SETTINGS
@given(n=st.integers(1, 5000), frac=st.floats(0.0, 1.0), alpha=st.floats(1e-6, 0.5))
def test_clopper_pearson_lower_bound_properties(n, frac, alpha):
    k = int(round(frac * n))
    lo = float(certify.clopper_pearson_lower(k, n, alpha))
    assert 0.0 <= lo <= k / n + 1e-12
    if k == 0:
        assert lo == 0.0
    else:
        # exact definition: P(K >= k | p = lo) = alpha
        assert math.isclose(scipy.stats.binom.sf(k - 1, n, lo), alpha, rel_tol=1e-4, abs_tol=1e-9)
    if k == n:
        assert math.isclose(lo, alpha ** (1.0 / n), rel_tol=1e-9)
    if k < n:
        assert float(certify.clopper_pearson_lower(k + 1, n, alpha)) >= lo                 # monotone in k
    assert float(certify.clopper_pearson_lower(k, n, min(alpha * 2, 0.99))) >= lo           # looser level, higher bound


@SETTINGS
@given(k=hnp.arrays(np.int64, st.integers(1, 6), elements=st.integers(0, 50)), alpha=st.floats(1e-4, 0.4))
def test_clopper_pearson_vectorised_equals_scalar(k, alpha):
    v = certify.clopper_pearson_lower(k, 50, alpha)
    assert v.shape == k.shape
    for i, ki in enumerate(k):
        assert v[i] == float(certify.clopper_pearson_lower(int(ki), 50, alpha))


@SETTINGS
@given(k=st.integers(-3, 60), n=st.integers(-2, 50))
def test_clopper_pearson_refuses_impossible_counts(k, n):
    if 0 <= k <= n and n >= 1:
        return
    with pytest.raises(ValueError, match="0 <= k <= n"):
        certify.clopper_pearson_lower(k, n, 0.01)
