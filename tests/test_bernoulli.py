"""The unbiased gradient through Bernoulli coding (rsc_jax/bernoulli.py): its expectation
by enumeration equals the derivative of the expected loss, also at saturated pixels; APGD
takes it as its per-draw gradient; the robustness suite adds it for small Poisson inputs."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import apgd, bernoulli, config, judging
from rsc_jax.evaluators import robustness

T, SHAPE = 2, (1, 2, 1, 1)                      # frames of one example: [T, 1, H=2, W=1, C=1]
W1 = jnp.array([[1.5, -2.0], [-0.5, 1.0], [0.3, 0.7]])    # [classes 3, pixels 2]
W2 = jnp.array([[0.8, -0.4, 0.2, 1.1], [-1.0, 0.5, 0.9, -0.3], [0.1, 0.2, -0.6, 0.4]])


def frames_fn(s):
    """A nonlinear function of the frames [T, 1, 2, 1, 1] -> logits [1, 3]."""
    return jnp.tanh(W1 @ s.mean(0).reshape(-1) + W2 @ s.reshape(-1))[None] * 3.0


def ce(s, y=1):
    z = frames_fn(s)[0]
    return jax.nn.logsumexp(z) - z[y]


PATTERNS = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=T * 2))).reshape(-1, T, *SHAPE[1:])


def _probs(x):
    """P(s) of every pattern, s_ti ~ Bernoulli(x_i) independently: [16]."""
    s = PATTERNS.reshape(len(PATTERNS), T, 2)
    return jnp.prod(jnp.where(s > 0, x, 1.0 - x), axis=(1, 2))


@jax.jit
def expected_loss_y(x, y):
    """E_s[ce(s, y)] over every frame pattern."""
    return jnp.sum(_probs(x) * jax.vmap(lambda s: ce(s, y))(PATTERNS))


@jax.jit
def _pattern_grads():
    return jax.vmap(lambda s: bernoulli.local_expectation_grad(ce, s, chunk=3))(PATTERNS)


@pytest.mark.parametrize("x", [[0.3, 0.8], [0.0, 0.6], [1.0, 0.0]])
def test_estimator_is_unbiased_by_enumeration(x):
    """E[g] over every pattern (weighted by its probability) equals d E[f] / dx exactly,
    also where a pixel is saturated (x = 0 or 1: the straight-through and Gumbel
    gradients are biased there)."""
    x = jnp.asarray(x)
    want = jax.grad(expected_loss_y)(x, 1)
    f0, g = _pattern_grads()
    np.testing.assert_allclose(f0, jax.vmap(ce)(PATTERNS), rtol=1e-6)
    mean_g = jnp.sum(_probs(x)[:, None] * g.reshape(len(PATTERNS), 2), 0)
    np.testing.assert_allclose(mean_g, want, rtol=1e-5, atol=1e-6)


def test_ce_draw_grad_per_example_and_in_apgd():
    """One draw per example from its own key; the loss and logits are those of that draw;
    APGD with it as the per-draw gradient stays in the ball and raises the expected loss;
    it refuses other losses."""
    dg = bernoulli.ce_draw_grad(frames_fn, T)
    keys = judging.example_keys(0, jnp.arange(3))
    x = jnp.array([[0.2, 0.9], [0.5, 0.5], [0.0, 1.0]]).reshape(3, 2, 1, 1)
    y = jnp.array([0, 1, 2])
    loss, g, z = jax.jit(dg)(keys, x, y)
    assert loss.shape == (3,) and g.shape == x.shape and z.shape == (3, 3)
    s1 = bernoulli.draw_frames(keys[1], x[1][None], T)
    np.testing.assert_allclose(z[1], frames_fn(s1)[0], rtol=1e-6)
    np.testing.assert_allclose(loss[1], ce(s1, 1), rtol=1e-6)

    def logits(key, xx):         # the Poisson classifier these frames describe
        return frames_fn(bernoulli.draw_frames(key, xx, T))

    xa = jax.jit(lambda xx: apgd.apgd(logits, jax.random.key(1), xx, y, eps=0.3, steps=4, eot=1, draw_grad=dg,
                                      unroll=False))(x)
    assert float(jnp.abs(xa - x).max()) <= 0.3 + 1e-6 and float(xa.min()) >= 0 and float(xa.max()) <= 1
    flat = lambda v: v.reshape(-1)   # noqa: E731
    for b in range(3):                # the expected CE (by enumeration) at the attacked point is higher
        before = float(expected_loss_y(flat(x[b]), int(y[b])))
        assert float(expected_loss_y(flat(xa[b]), int(y[b]))) > before
    with pytest.raises(ValueError, match="draw_grad"):
        apgd.apgd(logits, jax.random.key(1), x, y, loss="dlr", draw_grad=dg)


class PoissonFake:
    """What the suite needs of a Poisson-coded classifier, on 2x1 images."""

    def __init__(self, image_shape=(2, 1, 1)):
        self.num_classes = 3
        self.config = {"model": {"spiking": True, "overrides": {}},
                       "coding": {"method": "poisson", "sigma": 0.0, "T": T},
                       "dataset": {"image_shape": image_shape}}

    def logits(self, key, x):
        return frames_fn(bernoulli.draw_frames(key, x, T))

    def logits_of_frames(self, frames):
        return frames_fn(frames)

    def with_coding(self, method, sigma=0.0):
        return self


def test_the_suite_adds_the_exact_attack_for_small_poisson_inputs():
    c = config.attack()
    c.apgd, c.apgd_steps, c.poisson_exact_eot = True, 5, 2
    names = {j.name: j for j in robustness.build_jobs(PoissonFake(), c, {}, None)}
    job = names["apgd-ce-exact"]
    assert job.family == "poisson" and job.record["eot"] == 2
    assert job.passes.forward == (5 + 1) * 2 * (T * 2 + 2) and job.passes.backward == 0
    c.poisson_exact_max = 3                  # T x H x W x C = 4 > 3: too costly, left out
    assert "apgd-ce-exact" not in {j.name for j in robustness.build_jobs(PoissonFake(), c, {}, None)}
