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


# ------------------------------------------------- Gumbel-sigmoid estimators of Poisson coding


@pytest.mark.parametrize("method", ["poisson_gumbel", "poisson_relaxed"])
def test_gumbel_codings_by_hand_for_one_draw(method):
    """One draw against the formulas written out: L = the logistic noise of the key,
    hard = 1[logit(x) + L > 0], soft = sigmoid((logit(x) + L) / tau), and the derivative
    d soft / d x = soft (1 - soft) / (tau x (1 - x)) in both codings."""
    tau, T = 0.5, 3
    x = jnp.array([[0.0, 0.1, 0.5, 0.9, 1.0]], jnp.float32)
    key = jax.random.key(3)
    s = coding.encode(key, x, method=method, T=T, sigma=tau)
    L = np.asarray(jax.random.logistic(key, (T, *x.shape)), np.float64)
    xn = np.asarray(x, np.float64)
    q = np.clip(xn, 1e-4, 1 - 1e-4)
    z = np.log(q / (1 - q)) + L
    soft = 1 / (1 + np.exp(-z / tau))
    hard = np.where(xn <= 0, 0.0, np.where(xn >= 1, 1.0, (z > 0).astype(float)))
    np.testing.assert_allclose(np.asarray(s), hard if method == "poisson_gumbel" else soft, atol=1e-5)
    g = jax.grad(lambda v: coding.encode(key, v, method=method, T=T, sigma=tau).sum())(x)
    want = (soft * (1 - soft) / (tau * q * (1 - q))).sum(0)
    # atol: float32 rounds 1 - sigmoid(z / tau) in the e^-16 tail at x = 1 (0.0119 vs 0.0106).
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-3, atol=2e-3)


def test_poisson_gumbel_spikes_have_the_poisson_law_and_its_mean_gradient():
    """Forward: Bernoulli(x) (the spike rate within 4 standard errors of x). Backward: the
    draws' mean derivative estimates d/dx E[sigmoid((logit x + L) / tau)], computed here by
    quadrature over L's logistic density (tolerance: 4 standard errors of the mean)."""
    from scipy import integrate, special
    tau, n = 0.25, 40_000
    x = jnp.array([0.2, 0.5, 0.8], jnp.float32)
    keys = jax.random.split(jax.random.key(0), n)
    f = jax.vmap(lambda k: coding.encode(k, x[None], method="poisson_gumbel", T=1, sigma=tau)[0, 0])
    spikes = np.asarray(f(keys))
    assert set(np.unique(spikes)) <= {0.0, 1.0}
    se = np.sqrt(np.asarray(x) * (1 - np.asarray(x)) / n)
    assert np.all(np.abs(spikes.mean(0) - np.asarray(x)) < 4 * se)
    grads = np.asarray(jax.vmap(lambda k: jax.grad(lambda v: coding.encode(
        k, v[None], method="poisson_gumbel", T=1, sigma=tau).sum())(x))(keys))
    for i, xi in enumerate(np.asarray(x, np.float64)):
        logit = np.log(xi / (1 - xi))
        dens = lambda l: np.exp(-l) / (1 + np.exp(-l)) ** 2                     # noqa: E731
        expect = lambda v: integrate.quad(lambda l: special.expit((np.log(v / (1 - v)) + l) / tau) * dens(l),
                                          -60, 60)[0]                           # noqa: E731
        h = 1e-4
        want = (expect(xi + h) - expect(xi - h)) / (2 * h)
        assert abs(grads[:, i].mean() - want) < 4 * grads[:, i].std() / np.sqrt(n), (xi, grads[:, i].mean(), want)
        del logit


def test_gumbel_codings_are_attack_only_and_need_a_temperature():
    from rsc_jax import config, config_checks
    assert "poisson_gumbel" not in coding.METHODS and "poisson_gumbel" in coding.CODINGS
    cfg = config.base()
    cfg.coding.method = "poisson_gumbel"
    with pytest.raises(config_checks.ConfigError, match="config.coding.method"):
        config_checks.validate(cfg, ("train",))
    with pytest.raises(ValueError, match="temperature"):
        coding.encode(jax.random.key(0), jnp.zeros((1, 2)), method="poisson_relaxed", T=1, sigma=0.0)
    m = coding.moments(jnp.array([0.3]), method="poisson_gumbel", T=2, sigma=0.5)
    np.testing.assert_allclose(m["mean_var"], 0.3 * 0.7 / 2, rtol=1e-6)
