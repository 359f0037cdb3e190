"""LIF dynamics against hand-computed sequences; surrogate gradients against formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import neurons

I = jnp.array([0.6, 0.6, 0.6, 1.5, 0.0, 2.0])


def test_hard_reset_sequence_by_hand():
    # tau = 2: u_t = 0.5 v_{t-1} + I_t.  u: 0.6, 0.9, 1.05 (fire, v=0), 1.5 (fire, v=0), 0, 2.0 (fire)
    np.testing.assert_array_equal(neurons.lif(I), [0, 0, 1, 1, 0, 1])


def test_soft_reset_sequence_by_hand():
    # u: 0.6, 0.9, 1.05 -> v 0.05; 1.525 -> v 0.525; 0.2625; 2.13125 -> fire
    np.testing.assert_array_equal(neurons.lif(I, reset="soft"), [0, 0, 1, 1, 0, 1])
    # tau = 4, v_th 0.5: u = 0.75 v + I: 0.2 | 0.35 | 0.4625 | 0.546875 fire
    s = neurons.lif(jnp.full((4,), 0.2), tau=4.0, v_th=0.5, reset="soft")
    np.testing.assert_array_equal(s, [0, 0, 0, 1])


def test_lif_step_matches_scan():
    v = jnp.zeros(())
    out = []
    for i in I:
        v, s = neurons.lif_step(v, i)
        out.append(s)
    np.testing.assert_array_equal(jnp.stack(out), neurons.lif(I))


@pytest.mark.parametrize("name,alpha,formula", [
    ("sigmoid", 4.0, lambda x, a: a * jax.nn.sigmoid(a * x) * (1 - jax.nn.sigmoid(a * x))),
    ("atan", 2.0, lambda x, a: a / 2 / (1 + (math.pi / 2 * a * x) ** 2)),
    ("triangle", 1.0, lambda x, a: jnp.maximum(a - jnp.abs(x), 0) / a**2),
    ("rectangle", 1.0, lambda x, a: (jnp.abs(x) < a / 2) / a),
])
def test_surrogate_gradient(name, alpha, formula):
    x = jnp.array([-1.2, -0.3, 0.0, 0.2, 0.45, 2.0])
    g = jax.grad(lambda x: neurons.spike(x, name, alpha).sum())(x)
    np.testing.assert_allclose(g, formula(x, alpha), rtol=1e-6)
    # Each surrogate derivative integrates to 1 (it replaces a unit step); on [-L, L]
    # atan's heavy tails miss 1 - (2/pi) arctan(pi/2 alpha L).
    L = 30.0
    grid = np.linspace(-L, L, 600_001)
    vals = np.asarray(neurons.surrogate_derivative(jnp.asarray(grid, jnp.float32), name, alpha), np.float64)
    area = np.trapezoid(vals, grid)
    expected = 2 / math.pi * math.atan(math.pi / 2 * alpha * L) if name == "atan" else 1.0
    assert abs(area - expected) < 1e-3


def test_adaptive_surrogates_by_hand():
    """assg: the sigmoid's with sharpness omega / mean|x|; pdsg: a Gaussian density with
    s = std(x) / kappa; both from the statistics of each example's layer (axes 1..),
    both integrating to 1 over x for fixed statistics."""
    x = jnp.array([[-1.2, -0.3, 0.0, 0.2], [0.45, 2.0, -0.5, 0.1]])
    for row in range(2):
        xr = np.asarray(x[row], np.float64)
        a = 2.0 / np.mean(np.abs(xr))
        sg = 1 / (1 + np.exp(-a * xr))
        g = jax.grad(lambda v: neurons.spike(v, "assg", 2.0).sum())(x)
        np.testing.assert_allclose(g[row], a * sg * (1 - sg), rtol=1e-4)
        sd = np.std(xr) / 1.0
        g = jax.grad(lambda v: neurons.spike(v, "pdsg", 1.0).sum())(x)
        np.testing.assert_allclose(g[row], np.exp(-0.5 * (xr / sd) ** 2) / (math.sqrt(2 * math.pi) * sd), rtol=1e-4)
    # the statistics are each example's own: another example in the batch changes nothing
    g1 = jax.grad(lambda v: neurons.spike(v, "assg", 2.0).sum())(x[:1])
    np.testing.assert_allclose(g1[0], jax.grad(lambda v: neurons.spike(v, "assg", 2.0).sum())(x)[0], rtol=1e-6)
    # integrals over x at the statistics of a fixed layer: the layer is the grid itself
    # (symmetric, wide), so the density's scale is that of the grid's spread
    grid = np.linspace(-30.0, 30.0, 600_001)
    for name in ("assg", "pdsg"):
        vals = np.asarray(neurons.surrogate_derivative(jnp.asarray(grid, jnp.float32)[None], name, 20.0)[0],
                          np.float64)
        assert abs(np.trapezoid(vals, grid) - 1.0) < 1e-3, name


def test_default_alpha_per_surrogate():
    x = jnp.array([0.1])
    g = jax.grad(lambda i: neurons.lif(i, surrogate="atan").sum())(x)
    # one step, v_th 1: ds/dI = atan'(0.1 - 1) with alpha 2
    np.testing.assert_allclose(g, 1.0 / (1 + (math.pi * -0.9) ** 2), rtol=1e-6)


def test_bptt_gradient_through_reset_and_detach():
    currents = jnp.array([1.2, 0.8])
    # step 1: u1 = 1.2, s1 = H(0.2); v1 = u1 (1 - s1); step 2: u2 = 0.5 v1 + 0.8; s2 = H(u2 - 1).
    # d s2 / d I1 = g(u2-1) * 0.5 * d v1/d I1, with d v1/dI1 = (1 - s1) - u1 g(u1-1) = -1.2 g(0.2)
    sg = lambda x: 4 * jax.nn.sigmoid(4 * x) * (1 - jax.nn.sigmoid(4 * x))
    g = jax.grad(lambda c: neurons.lif(c)[1])(currents)
    np.testing.assert_allclose(g[0], sg(-0.2) * 0.5 * (-1.2 * sg(0.2)), rtol=1e-5)
    np.testing.assert_allclose(g[1], sg(-0.2), rtol=1e-5)
    gd = jax.grad(lambda c: neurons.lif(c, detach_reset=True)[1])(currents)
    np.testing.assert_allclose(gd[0], 0.0, atol=1e-7)   # (1 - s1) = 0 with the spike detached


def test_bptr_gradient_is_rate_based():
    c = jnp.array([[0.6, -1.0], [0.6, -1.0], [0.6, -1.0], [1.5, -1.0]])
    g = jax.grad(lambda c: neurons.lif(c, grad_mode="bptr").sum())(c)
    # sum_t' dL/ds_t' = 4 for each neuron; 1/T * 4 * 1[I_bar > 0] / v_th
    np.testing.assert_allclose(g, [[1.0, 0.0]] * 4)
    np.testing.assert_array_equal(neurons.lif(c, grad_mode="bptr"), neurons.lif(c))


def test_jit_vmap_and_unroll():
    x = jax.random.normal(jax.random.key(0), (5, 3, 7))
    ref = neurons.lif(x)
    np.testing.assert_array_equal(jax.jit(neurons.lif)(x), ref)
    np.testing.assert_array_equal(jax.vmap(neurons.lif, in_axes=1, out_axes=1)(x), ref)
    np.testing.assert_array_equal(neurons.lif(x, unroll=5), ref)


def test_bad_options():
    with pytest.raises(ValueError, match="surrogate='relu'"):
        neurons.lif(I, surrogate="relu")
    with pytest.raises(ValueError, match="reset='zero'"):
        neurons.lif(I, reset="zero")
    with pytest.raises(ValueError, match="tau=0.5"):
        neurons.lif(I, tau=0.5)
    with pytest.raises(ValueError, match="grad_mode"):
        neurons.lif(I, grad_mode="rate")
