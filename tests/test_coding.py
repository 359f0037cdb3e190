"""encode and moments: shapes, determinism, sampled moments against the closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import coding

KEY = jax.random.key(0)


@pytest.mark.parametrize("method", coding.METHODS)
def test_shape_dtype_determinism(method):
    x = jax.random.uniform(jax.random.key(1), (2, 5, 5, 3))
    a = coding.encode(KEY, x, method=method, T=3, sigma=0.3)
    b = coding.encode(KEY, x, method=method, T=3, sigma=0.3)
    c = coding.encode(jax.random.key(7), x, method=method, T=3, sigma=0.3)
    assert a.shape == (3, 2, 5, 5, 3) and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)
    if method == "direct":
        np.testing.assert_array_equal(a, jnp.broadcast_to(x, a.shape))
    else:
        assert not np.array_equal(a, c)


def test_poisson_values_are_spikes_and_rsc1_shares_noise():
    x = jax.random.uniform(jax.random.key(1), (50,))
    s = coding.encode(KEY, x, method="poisson", T=4)
    assert set(np.unique(s)) <= {0.0, 1.0}
    r1 = coding.encode(KEY, x, method="rsc1", T=4, sigma=0.5)
    np.testing.assert_allclose(r1 - r1[0], 0.0)          # one draw for all steps
    r2 = coding.encode(KEY, x, method="rsc2", T=4, sigma=0.5)
    assert np.abs(r2[1] - r2[0]).min() > 0               # a fresh draw per step
    assert (r1.min() < 0) and (r1.max() > 1)             # Gaussian codings are not clamped


@pytest.mark.parametrize("method", coding.METHODS)
def test_sampled_moments_match_closed_form(method):
    # 20,000 draws per pixel at 8 intensities. For Gaussian sample variance the
    # standard error is sigma^2 sqrt(2/n) = 0.0009 (sigma^2 = 0.09); for the mean,
    # sigma/sqrt(n) = 0.0021. Tolerances are about 5 standard errors.
    T, sigma, n = 3, 0.3, 20_000
    x = jnp.linspace(0.05, 0.95, 8)
    keys = jax.random.split(KEY, n)
    s = np.asarray(jax.vmap(lambda k: coding.encode(k, x, method=method, T=T, sigma=sigma))(keys))  # [n, T, 8]
    m = coding.moments(x, method=method, T=T, sigma=sigma)
    np.testing.assert_allclose(s.mean(0)[0], m["mean"], atol=0.012)
    np.testing.assert_allclose(s[:, 0].var(0), m["step_var"], atol=0.006)
    cov = ((s[:, 0] - s[:, 0].mean(0)) * (s[:, 1] - s[:, 1].mean(0))).mean(0)
    np.testing.assert_allclose(cov, m["cross_cov"], atol=0.006)
    np.testing.assert_allclose(s.mean(1).var(0), m["mean_var"], atol=0.006)


def test_moments_closed_forms_by_hand():
    x = jnp.array([0.25])
    p = coding.moments(x, method="poisson", T=4)
    np.testing.assert_allclose([p["step_var"][0], p["mean_var"][0]], [0.1875, 0.1875 / 4])
    r1 = coding.moments(x, method="rsc1", T=4, sigma=0.5)
    np.testing.assert_allclose([r1["step_var"][0], r1["cross_cov"][0], r1["mean_var"][0]], [0.25, 0.25, 0.25])
    r2 = coding.moments(x, method="rsc2", T=4, sigma=0.5)
    np.testing.assert_allclose([r2["cross_cov"][0], r2["mean_var"][0]], [0.0, 0.0625])


@pytest.mark.parametrize("method", coding.METHODS)
def test_gradient_is_identity_per_step(method):
    # Gaussian codings: d s_t / d x = I exactly; Poisson: straight-through, also 1.
    x = jax.random.uniform(jax.random.key(2), (6,))
    jac = jax.jacobian(lambda x: coding.encode(KEY, x, method=method, T=3, sigma=0.4))(x)  # [3, 6, 6]
    np.testing.assert_allclose(jac, np.broadcast_to(np.eye(6), (3, 6, 6)))


def test_jit_with_static_method_and_T():
    f = jax.jit(coding.encode, static_argnames=("method", "T"))
    x = jnp.full((4,), 0.5)
    np.testing.assert_allclose(f(KEY, x, method="rsc2", T=2, sigma=0.1),
                               coding.encode(KEY, x, method="rsc2", T=2, sigma=0.1), rtol=1e-6)


def test_per_example_equals_alone():
    x = jax.random.uniform(jax.random.key(3), (3, 4, 4, 1))
    keys = jax.random.split(KEY, 3)
    batch = coding.encode_per_example(keys, x, method="rsc2", T=2, sigma=1.0)
    alone = coding.encode(keys[2], x[2:3], method="rsc2", T=2, sigma=1.0)[:, 0]
    np.testing.assert_array_equal(batch[:, 2], alone)


def test_bad_inputs():
    x = jnp.zeros((2, 2))
    with pytest.raises(TypeError, match="uint8|dtype"):
        coding.encode(KEY, jnp.zeros((2, 2), jnp.uint8), method="rsc2", T=2, sigma=0.1)
    with pytest.raises(ValueError, match="method='gauss'"):
        coding.encode(KEY, x, method="gauss", T=2)
    with pytest.raises(ValueError, match="sigma=-0.1"):
        coding.encode(KEY, x, method="rsc2", T=2, sigma=-0.1)
    with pytest.raises(ValueError, match="T=0"):
        coding.encode(KEY, x, method="rsc2", T=0, sigma=0.1)
    with pytest.raises(ValueError, match="method"):  # raised at trace time under jit
        jax.jit(coding.encode, static_argnames=("method", "T"))(KEY, x, method="nope", T=2)
