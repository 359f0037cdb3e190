"""APGD (rsc_jax.apgd): schedule, losses and optimum by hand, best iterate, keys, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import apgd, coding

W = jnp.array([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 0.3]])      # [C=2, D=4]


def linear(key, x):
    return x.reshape(x.shape[0], -1) @ W.T


X = jnp.full((2, 2, 2, 1), 0.5)
Y = jnp.array([0, 1])


def test_checkpoints_by_hand():
    # 0.22 N first, then intervals shrinking by 0.03 N down to 0.06 N (N = 100: 22, 19, 16, ...).
    assert apgd.checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    assert apgd.checkpoints(10) == tuple(range(2, 11))
    assert apgd.checkpoints(1) == (1,)


def test_dlr_by_hand():
    z = jnp.array([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    # sorted 3 >= 2 >= 1 >= 0: denominator z_pi1 - z_pi3 = 2.
    np.testing.assert_allclose(apgd.dlr_loss(z, jnp.array([0, 1])), [-(3 - 2) / 2, -(1 - 3) / 2], rtol=1e-6)
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(3 - 2) / (3 - 0.5)
    np.testing.assert_allclose(apgd.dlr_targeted_loss(z, jnp.array([0, 1]), jnp.array([2, 0])),
                               [-(3 - 2) / 2.5, -(1 - 3) / 2.5], rtol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_reaches_the_closed_form_optimum(norm):
    """For a linear 2-class model the CE is monotone in the margin (w_y - w_o) . x, so its
    maximum over the ball is x - eps sign(d) (l_inf) or x - eps d / |d| (l_2), d = w_y - w_o
    (inside [0, 1] here)."""
    eps = 0.1
    d = np.asarray(W[0] - W[1])
    d = np.stack([d, -d])                                   # per example: w_y - w_other
    want = 0.5 - eps * (np.sign(d) if norm == "linf" else d / np.linalg.norm(d, axis=1, keepdims=True))
    xa, info = apgd.apgd_with_info(linear, jax.random.key(0), X, Y, eps=eps, norm=norm, steps=50)
    np.testing.assert_allclose(np.asarray(xa).reshape(2, -1), want, atol=2e-3 if norm == "l2" else 1e-6)
    assert np.all(np.asarray(info["loss_best"]) >= np.asarray(info["loss_last"]) - 1e-6)


class Noisy:
    """A linear model on RSC-II-coded input: a stochastic classifier with 10 classes."""

    def __init__(self):
        self.W = jax.random.normal(jax.random.key(1), (10, 16))

    def __call__(self, key, x):
        s = coding.encode(key, x, method="rsc2", T=2, sigma=0.3).mean(0)
        return jnp.tanh(s.reshape(s.shape[0], -1) @ self.W.T) * 3.0


@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
def test_best_iterate_is_never_worse_than_the_last(loss):
    x = jax.random.uniform(jax.random.key(2), (6, 4, 4, 1))
    y = jnp.arange(6) % 10
    xa, info = apgd.apgd_with_info(Noisy(), jax.random.key(3), x, y, eps=0.1, steps=12, loss=loss, eot=2,
                                   unroll=False)
    assert np.all(np.asarray(info["loss_best"]) >= np.asarray(info["loss_last"]))
    d = np.asarray(xa - x)
    assert np.abs(d).max() <= 0.1 + 1e-6 and float(xa.min()) >= 0 and float(xa.max()) <= 1


def test_rows_do_not_depend_on_the_batch_and_restarts_only_help():
    f = Noisy()
    x = jax.random.uniform(jax.random.key(4), (4, 4, 4, 1))
    y = jnp.array([1, 2, 3, 4])
    keys = jax.random.split(jax.random.key(5), 4)
    full, info1 = apgd.apgd_with_info(f, keys, x, y, eps=0.1, steps=6, eot=2, unroll=False)
    part = apgd.apgd(f, keys[1:3], x[1:3], y[1:3], eps=0.1, steps=6, eot=2, unroll=False)
    np.testing.assert_allclose(np.asarray(full[1:3]), np.asarray(part), atol=1e-6)
    _, info3 = apgd.apgd_with_info(f, keys, x, y, eps=0.1, steps=6, eot=2, restarts=3, unroll=False)
    # restart 0 is shared; the restarts' picks compete on the averaged-logit margin
    assert np.all(np.asarray(info3["margin"]) <= np.asarray(info1["margin"]))
    assert np.any(np.asarray(info3["margin"]) < np.asarray(info1["margin"]))


def test_expected_objective_with_one_draw_is_the_cross_entropy():
    f = Noisy()
    x = jax.random.uniform(jax.random.key(6), (3, 4, 4, 1))
    y = jnp.array([0, 5, 9])
    keys = jax.random.split(jax.random.key(7), 3)
    l1, g1 = apgd.objective(f, keys, x, y, eot=1)
    l2, g2 = apgd.objective(f, keys, x, y, eot=1, expected=True)
    np.testing.assert_allclose(l1, l2, rtol=1e-4)
    np.testing.assert_allclose(g1, g2, rtol=1e-3, atol=1e-6)
    l4, _ = apgd.objective(f, keys, x, y, eot=4, expected=True)
    la, _ = apgd.objective(f, keys, x, y, eot=4)
    assert np.all(np.asarray(l4) <= np.asarray(la) + 1e-5)        # Jensen: CE of the mean <= mean CE


def test_margin_objective_by_hand():
    """loss="margin" is -(zbar_y - max_{i != y} zbar_i) of the K-averaged logits; its
    gradient is the mean per-draw gradient of z_j* - z_y (j* the runner-up of zbar): for
    the linear model w_j* - w_y exactly; on a noisy model the margin is the one of the
    logits averaged over the same K draws."""
    x = jnp.full((2, 2, 2, 1), 0.5)
    loss, g, m = apgd.objective_and_margin(linear, jax.random.split(jax.random.key(0), 2), x, Y, loss="margin",
                                           eot=3)
    z = np.asarray(linear(None, x))
    want_m = np.array([z[0, 0] - z[0, 1], z[1, 1] - z[1, 0]])
    np.testing.assert_allclose(m, want_m, rtol=1e-6)
    np.testing.assert_allclose(loss, -want_m, rtol=1e-6)
    d = np.asarray(W[1] - W[0])
    np.testing.assert_allclose(np.asarray(g).reshape(2, -1), np.stack([d, -d]), rtol=1e-6)
    f = Noisy()
    xs = jax.random.uniform(jax.random.key(6), (3, 4, 4, 1))
    ys = jnp.array([0, 5, 9])
    keys = jax.random.split(jax.random.key(7), 3)
    zbar = np.mean([np.asarray(jax.vmap(lambda k, xi: f(k, xi[None])[0])(
        jax.vmap(lambda k: jax.random.fold_in(k, j))(keys), xs)) for j in range(4)], axis=0)
    want = zbar[np.arange(3), ys] - np.max(np.where(np.eye(10, dtype=bool)[ys], -np.inf, zbar), 1)
    for loss in ("margin", "ce"):      # every loss reports the margin of the same draws
        _, _, m = apgd.objective_and_margin(f, keys, xs, ys, loss=loss, eot=4)
        np.testing.assert_allclose(m, want, rtol=1e-4, atol=1e-5)


def test_returned_point_is_the_iterate_of_lowest_margin():
    """On a deterministic model the returned point's margin is the reported one, and no
    snapshot (the pick after 1, 2, ... steps) has a lower margin."""
    x = jnp.full((2, 2, 2, 1), 0.5)
    for loss in ("ce", "margin"):
        xa, info = apgd.apgd_with_info(linear, jax.random.key(1), x, Y, eps=0.2, steps=8, loss=loss,
                                       snapshots=tuple(range(1, 9)), unroll=False)
        m_at = lambda p: np.asarray(apgd.judging.margin(linear(None, p), Y))   # noqa: E731
        np.testing.assert_allclose(info["margin"], m_at(xa), rtol=1e-6)
        for s in np.asarray(info["snapshots"]):
            assert np.all(m_at(xa) <= m_at(jnp.asarray(s)) + 1e-6)


def test_l2_apgd_with_eot_stays_in_the_ball():
    f = Noisy()
    x = jax.random.uniform(jax.random.key(2), (3, 4, 4, 1))
    y = jnp.array([1, 2, 3])
    xa = apgd.apgd(f, jax.random.key(3), x, y, eps=0.5, norm="l2", steps=10, eot=3, unroll=False)
    n = np.linalg.norm(np.asarray(xa - x).reshape(3, -1), axis=1)
    assert np.all(n <= 0.5 + 1e-5) and np.all(n > 0.25)
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1


@pytest.mark.parametrize("kw,match", [(dict(loss="hinge"), "loss='hinge'"), (dict(restarts=0), "restarts=0"),
                                      (dict(steps=0), "steps=0"), (dict(eps=-0.1), "eps=-0.1"),
                                      (dict(rho=1.5), "rho=1.5"), (dict(loss="dlr", expected=True), "expected"),
                                      (dict(loss="dlr"), "needs >= 3")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        apgd.apgd(linear, jax.random.key(0), X, Y, **kw)


def test_snapshots_keep_the_best_point_at_each_budget():
    """The snapshot after the last step is the returned best point; an earlier one is
    another point of the eps ball."""
    f = Noisy()
    x = jax.random.uniform(jax.random.key(8), (3, 4, 4, 1))
    y = jnp.array([0, 1, 2])
    full, info = apgd.apgd_with_info(f, jax.random.key(9), x, y, eps=0.1, steps=20, eot=2, snapshots=(3, 20),
                                     unroll=False)
    assert info["snapshots"].shape == (2, 3, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(info["snapshots"][1]), np.asarray(full))
    early = np.asarray(info["snapshots"][0])
    assert np.abs(early - np.asarray(x)).max() <= 0.1 + 1e-6 and not np.array_equal(early, np.asarray(full))
    with pytest.raises(ValueError, match="snapshots"):
        apgd.apgd_with_info(f, jax.random.key(9), x, y, steps=5, snapshots=(6,))
