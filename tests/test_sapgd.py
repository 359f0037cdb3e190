"""SA-PGD (rsc_jax.sapgd) and the published layer surrogates it is run with (ASSG's
running statistics, PDSG's per-channel width; rsc_jax.neurons): values by hand."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import apgd, neurons, sapgd
from tests.helpers import tiny_spiking_classifier
from tests.test_apgd import Noisy, X, Y, W, linear


def test_first_step_of_a_linear_model_is_the_closed_form_optimum():
    """Normalised momentum over normalised RMS: m / sqrt(v) = sign(g) sqrt(mean g^2) / mean|g|
    >= 1 in size, clipped to eta = eps: one step lands on x - eps sign(d), the maximum of the
    CE of a 2-class linear model over the ball (d = w_y - w_other, all non-zero here), and
    later steps stay there."""
    eps = 0.1
    d = np.asarray(W[0] - W[1])
    want = 0.5 - eps * np.sign(np.stack([d, -d]))
    for steps in (1, 20):
        xa, info = sapgd.sapgd_with_info(linear, jax.random.key(0), X, Y, eps=eps, steps=steps, random_start=False)
        np.testing.assert_allclose(np.asarray(xa).reshape(2, -1), want, atol=1e-6)
    # the step size is halved at every APGD checkpoint, whatever the loss did
    _, info = sapgd.sapgd_with_info(linear, jax.random.key(0), X, Y, eps=eps, steps=100)
    np.testing.assert_allclose(info["step_size"], eps / 2 ** len(apgd.checkpoints(100)), rtol=1e-6)
    assert len(apgd.checkpoints(100)) == 8


def test_start_is_on_the_sphere_and_rows_do_not_depend_on_the_batch():
    x = jax.random.uniform(jax.random.key(4), (4, 4, 4, 1), minval=0.2, maxval=0.8)
    keys = jax.random.split(jax.random.key(5), 4)
    x0 = sapgd.start_point(keys, x, jnp.float32(0.1))
    np.testing.assert_allclose(np.abs(np.asarray(x0 - x)).reshape(4, -1).max(1), 0.1, rtol=1e-5)
    y = jnp.array([1, 2, 3, 4])
    full, info = sapgd.sapgd_with_info(Noisy(), keys, x, y, eps=0.1, steps=6, eot=2, unroll=False)
    part, _ = sapgd.sapgd_with_info(Noisy(), keys[1:3], x[1:3], y[1:3], eps=0.1, steps=6, eot=2, unroll=False)
    np.testing.assert_array_equal(np.asarray(full[1:3]), np.asarray(part))
    assert np.abs(np.asarray(full - x)).max() <= 0.1 + 1e-6 and float(full.min()) >= 0 and float(full.max()) <= 1
    two, info2 = sapgd.sapgd_with_info(Noisy(), keys, x, y, eps=0.1, steps=6, eot=2, restarts=2, unroll=False)
    assert np.all(np.asarray(info2["margin"]) <= np.asarray(info["margin"]) + 1e-6)   # restart 0 is the same run


def test_objective_updates_the_state_on_the_first_draw_only():
    """The state a stateful model carries: draw 0 of a step updates it, draws 1.. read it;
    None starts it. Here the state counts updates and scales the logits."""
    def fn(key, x, st, update):
        st = (jnp.zeros(()) if st is None else st) + (1.0 if update else 0.0)
        return linear(key, x) * st, st
    keys = jax.random.split(jax.random.key(0), 2)
    f1, g1, m1, st = sapgd.objective(fn, keys, X, Y, None, eot=3)
    np.testing.assert_array_equal(np.asarray(st), [1.0, 1.0])
    f2, g2, m2, st = sapgd.objective(fn, keys, X, Y, st, eot=3)
    np.testing.assert_array_equal(np.asarray(st), [2.0, 2.0])
    np.testing.assert_allclose(np.asarray(m2), 2 * np.asarray(m1), rtol=1e-6)     # every draw saw state 2
    with pytest.raises(ValueError, match="exactly one"):
        sapgd.sapgd(linear, jax.random.key(0), X, Y, stateful=fn)


def test_assg_statistics_and_sharpness_by_hand():
    """M <- 0.9 M + 0.1|x|, D <- 0.9 D + 0.1 ||x| - M| (updated M); alpha = omega / (M +
    1.5 D + 1e-4), omega = 2 tan(0.425 pi) / pi; one LIF step from v = 0 has x = I - v_th,
    and ds/dI is the atan surrogate at x with that alpha."""
    omega = neurons.LAYER_SURROGATE_DEFAULT_ALPHA["assg-ema"]
    assert omega == pytest.approx(2.652, abs=1e-3)
    cur = jnp.array([[0.2, 1.5, 0.95]])                   # [T=1, 3]
    x = np.asarray(cur[0], np.float64) - 1.0
    m = 0.9 + 0.1 * np.abs(x)
    d = 0.1 * np.abs(np.abs(x) - m)
    a = omega / (m + 1.5 * d + 1e-4)
    s, (mj, dj) = neurons.lif_layer_surrogate(cur, surrogate="assg-ema")
    np.testing.assert_allclose(mj[0], m, rtol=1e-6)
    np.testing.assert_allclose(dj[0], d, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(s[0]), [0.0, 1.0, 0.0])
    g = jax.grad(lambda c: neurons.lif_layer_surrogate(c, surrogate="assg-ema")[0].sum())(cur)
    np.testing.assert_allclose(g[0], (a / 2) / (1 + (math.pi / 2 * a * x) ** 2), rtol=1e-5)
    # a second pass from that state; without update the state is read as it is
    _, (m2, _) = neurons.lif_layer_surrogate(cur, surrogate="assg-ema", state=(mj, dj))
    np.testing.assert_allclose(m2[0], 0.9 * m + 0.1 * np.abs(x), rtol=1e-6)
    _, (m3, d3) = neurons.lif_layer_surrogate(cur, surrogate="assg-ema", state=(mj, dj), update=False)
    assert m3 is mj and d3 is dj
    # the forward spikes are the model's: only the backward pass changes
    c = jax.random.normal(jax.random.key(1), (4, 2, 3, 3, 5)) + 0.7
    np.testing.assert_array_equal(neurons.lif(c, surrogate="assg-ema"), neurons.lif(c))


def test_pdsg_channel_width_by_hand():
    """s_t = the unbiased std of x over steps 1..t and the spatial axes, per example and
    channel (1 where undefined); the derivative is the normal density of mean s/2, std s."""
    c = jax.random.normal(jax.random.key(2), (3, 2, 4, 4, 5)) + 1.0      # [T, B, H, W, C]
    x_all = np.zeros(c.shape)
    v = np.zeros(c.shape[1:])
    for t in range(3):                                                  # hand LIF (hard reset, tau 2)
        u = 0.5 * v + np.asarray(c[t], np.float64)
        x_all[t] = u - 1.0
        v = u * (u < 1.0)
    g = jax.grad(lambda cc: neurons.lif_layer_surrogate(cc, surrogate="pdsg-channel", detach_reset=True)[0][2].sum()
                 )(c)
    # the last step's own derivative: the gradient into I_2 of s_2 alone
    sd = x_all[:3].transpose(1, 4, 0, 2, 3).reshape(2, 5, -1).std(axis=-1, ddof=1)   # [B, C]
    want = np.exp(-0.5 * ((x_all[2] - sd[:, None, None] / 2) / sd[:, None, None]) ** 2) / (
        math.sqrt(2 * math.pi) * sd[:, None, None])
    np.testing.assert_allclose(np.asarray(g[2]), want, rtol=2e-4, atol=1e-6)
    # a dense layer at t = 1 has a single value per channel: width 1
    np.testing.assert_allclose(neurons.pdsg_width(jnp.array([0.3]), jnp.array([0.09]), 1), [1.0])
    np.testing.assert_allclose(neurons.pdsg_width(jnp.array([3.0]), jnp.array([5.0]), 2),
                               [np.std([1.0, 2.0], ddof=1)], rtol=1e-6)
    # each example's own statistics: another example in the batch changes nothing
    g1 = jax.grad(lambda cc: neurons.lif_layer_surrogate(cc, surrogate="pdsg-channel")[0].sum())(c[:, :1])
    g2 = jax.grad(lambda cc: neurons.lif_layer_surrogate(cc, surrogate="pdsg-channel")[0].sum())(c)
    np.testing.assert_allclose(np.asarray(g1[:, 0]), np.asarray(g2[:, 0]), rtol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    """An untrained width-1/4 spiking convnet on 8x8x1 images, RSC-II at T = 2 (threshold
    0.2, so spikes reach the logits), and 4 images."""
    clf = tiny_spiking_classifier()
    rng = np.random.default_rng(0)
    return clf, rng.uniform(0, 1, (4, 8, 8, 1)).astype(np.float32), jnp.asarray(rng.integers(0, 10, 4), jnp.int32)


def test_assg_state_lives_in_the_model_and_leaves_its_forward_pass_alone(tiny):
    clf, x, y = tiny
    assg = clf.with_neuron(surrogate="assg-ema")
    k = jax.random.key(1)
    z1, st = assg.stateful(k, x, None, True)
    np.testing.assert_array_equal(np.asarray(z1), np.asarray(clf.logits(k, x)))
    ms = jax.tree.leaves(st)
    assert ms and all(m.shape[:2] == (2, 4) for m in ms)                  # [T, B, ...] per layer
    _, st2 = assg.stateful(k, x, st, True)
    _, st3 = assg.stateful(k, x, st, False)
    assert st3 is st and any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(st2), ms))
    # the memory-lean path (remat) has no state: the stateful copy leaves it (same forward values)
    from rsc_jax import classifier
    lean = classifier.Classifier({**clf.config, "model": {**clf.config["model"], "overrides": {
        **clf.config["model"]["overrides"], "remat": True}}}, clf.params)
    assert lean.with_neuron(surrogate="assg-ema").config["model"]["overrides"]["remat"] is False
    assert lean.with_neuron(surrogate="atan").config["model"]["overrides"]["remat"] is True


def test_sapgd_rows_of_the_suite(tiny):
    """attack.sapgd adds SA-PGD through the model and, for a spiking model, through ASSG
    (its state carried) and PDSG; each stays in the ball, and a row does not depend on
    the batch it is crafted in."""
    from rsc_jax import config
    from rsc_jax.evaluators import robustness
    clf, x, y = tiny
    c = config.attack()
    c.sapgd, c.apgd_steps, c.apgd_eot, c.strong_eps = True, 3, 1, (0.1,)
    jobs = [j for j in robustness.build_jobs(clf, c, {}, None) if j.family == "sapgd"]
    assert [j.name for j in jobs] == ["sapgd", "sapgd-assg", "sapgd-pdsg"]
    assert all(j.passes.backward == 3 + 1 for j in jobs)
    keys = jax.random.split(jax.random.key(2), 4)
    for j in jobs:
        xa, _ = j.craft(keys, x, y, jnp.float32(0.1))
        assert np.abs(np.asarray(xa) - x).max() <= 0.1 + 1e-6 and np.abs(np.asarray(xa) - x).max() > 0.05
        if j.name == "sapgd-assg":       # another batch size compiles other kernels: equal up to rounding
            part, _ = j.craft(keys[2:], x[2:], y[2:], jnp.float32(0.1))
            np.testing.assert_allclose(np.asarray(xa[2:]), np.asarray(part), atol=1e-6)
    c.sapgd = False
    assert not [j for j in robustness.build_jobs(clf, c, {}, None) if j.family == "sapgd"]
    assert robustness.layer_surrogates(lambda k, xx: xx) == {}
