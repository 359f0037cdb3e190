"""Tests of rsc_jax.attacks and rsc_jax.metrics (FGSM, PGD, EOT, ensemble, Square, QTE)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from rsc_jax import attacks, backend, coding, judging, metrics

SIGMA, T = 0.2, 4


# --------------------------------------------------------------------------- toy models


def _digits():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]     # [1797, 8, 8, 1] in [0, 1]
    return x, d.target.astype(np.int32)


def _init_mlp(key, hidden=64):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (64, hidden)) * 0.1, "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, 10)) * 0.1, "b2": jnp.zeros(10)}


def _mlp_logits(params, key, x, sigma=SIGMA, steps=T):
    """RSC-II coded MLP: logits averaged over T noisy copies of x [B, 8, 8, 1]."""
    s = coding.encode(key, x, method="rsc2", T=steps, sigma=sigma).reshape(steps, x.shape[0], -1)
    h = jax.nn.relu(s @ params["w1"] + params["b1"])
    return (h @ params["w2"] + params["b2"]).mean(0)


N_EVAL = 120
EPS = 0.1


@pytest.fixture(scope="module")
def trained():
    """A small RSC-coded MLP trained on sklearn digits (about 95% clean test accuracy),
    with per-example keys and jitted helpers shared by the tests (fewer compilations)."""
    x, y = _digits()
    xtr, ytr = jnp.asarray(x[:1400]), jnp.asarray(y[:1400])
    tx = optax.adam(1e-2)
    params = _init_mlp(jax.random.key(0))
    opt = tx.init(params)

    @jax.jit
    def step(p, o, k):
        g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
            _mlp_logits(p, k, xtr), ytr).mean())(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    for i in range(250):
        params, opt = step(params, opt, jax.random.key(i))
    fn = functools.partial(_mlp_logits, params)
    idx = jnp.arange(N_EVAL)
    ak = judging.example_keys(0, idx, stream=0)
    jk = judging.example_keys(0, idx, stream=1)

    @jax.jit
    def evaluate(xa, y):
        j = judging.judge(fn, jk, xa, y, draws=8)
        return {"acc": j["correct_avg"].mean(), "margin": j["margin"].mean()}

    pgd = jax.jit(lambda fn_, x, y, steps: attacks.pgd(fn_, ak, x, y, eps=EPS, step_size=EPS / 4,
                                                      steps=steps), static_argnums=(0, 3))
    return {"fn": fn, "x": jnp.asarray(x[1400:1400 + N_EVAL]), "y": jnp.asarray(y[1400:1400 + N_EVAL]),
            "ak": ak, "jk": jk, "evaluate": evaluate, "pgd": pgd}


def _random_model(seed=1):
    return functools.partial(_mlp_logits, _init_mlp(jax.random.key(seed)))


def _linear(W, b):
    def fn(key, x):
        del key
        return x.reshape(x.shape[0], -1) @ W + b
    return fn


# --------------------------------------------------------------------------- FGSM closed form


def _softmax_np(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_linear_closed_form(norm):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(12, 5)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    x = rng.uniform(size=(6, 2, 2, 3)).astype(np.float32)
    y = rng.integers(0, 5, size=6).astype(np.int32)
    eps = 0.05
    # d CE / d x = W (softmax(x W + b) - onehot(y)) for logits x W + b.
    xf = x.reshape(6, -1)
    g = (_softmax_np(xf @ W + b) - np.eye(5)[y]) @ W.T
    if norm == "linf":
        step = eps * np.sign(g)
    else:
        step = eps * g / np.linalg.norm(g, axis=1, keepdims=True)
    expected = np.clip(xf + step, 0, 1).reshape(x.shape)
    # A closed form to 1e-6 needs float32 products: on A100/H100 GPUs the default is TF32
    # (measured there: 1.07e-5 off for l2), so the test sets the precision it assumes.
    with jax.default_matmul_precision("highest"):
        got = attacks.fgsm(_linear(jnp.asarray(W), jnp.asarray(b)), jax.random.key(0), jnp.asarray(x),
                           jnp.asarray(y), eps=eps, norm=norm)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-6)
    assert np.abs(np.asarray(got) - x).max() > 0.5 * eps        # it did move


# --------------------------------------------------------------------------- PGD constraints


def _rand_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 8, 8, 1)).astype(np.float32)
    x[:, :2] = 0.0                                 # pixels on the box boundary
    x[:, -2:] = 1.0
    y = rng.integers(0, 10, size=n).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.7)])
def test_pgd_stays_in_ball_and_box_and_eps_zero_is_identity(norm, eps):
    fn = _random_model()
    x, y = _rand_batch()

    @jax.jit
    def both(e):
        return (attacks.pgd(fn, jax.random.key(3), x, y, eps=e, step_size=eps / 2, steps=4, norm=norm),
                attacks.fgsm(fn, jax.random.key(3), x, y, eps=e, norm=norm))

    for xa in both(eps):
        d = np.asarray(xa - x).reshape(len(x), -1)
        assert np.asarray(xa).min() >= 0.0 and np.asarray(xa).max() <= 1.0
        if norm == "linf":
            assert np.abs(d).max() <= eps + 1e-6
            assert np.abs(d).max() >= 0.5 * eps
        else:
            norms = np.linalg.norm(d, axis=1)
            assert norms.max() <= eps + 1e-5
            assert norms.min() >= 0.2 * eps
    for xa in both(0.0):                          # eps = 0: the identity, exactly
        np.testing.assert_array_equal(np.asarray(xa), np.asarray(x))


# --------------------------------------------------------------------------- effectiveness


def test_pgd_far_stronger_than_random_noise_and_more_steps_stronger(trained):
    fn, x, y, ev = trained["fn"], trained["x"], trained["y"], trained["evaluate"]
    clean = float(ev(x, y)["acc"])
    noise = jax.random.uniform(jax.random.key(9), x.shape, minval=-EPS, maxval=EPS)
    rand = float(ev(jnp.clip(x + noise, 0, 1), y)["acc"])
    acc = {s: float(ev(trained["pgd"](fn, x, y, s), y)["acc"]) for s in (2, 10)}
    assert clean > 0.85
    assert rand > clean - 0.05                     # uniform noise of the same eps barely hurts
    assert rand - acc[10] > 0.3                    # PGD hurts far more
    assert acc[10] <= acc[2] + 0.01                # more steps at least as strong (same keys)


def test_square_attack_query_based_beats_noise_and_respects_ball(trained):
    fn, x, y, ev = trained["fn"], trained["x"], trained["y"], trained["evaluate"]
    eps = 0.15
    xs = jax.jit(lambda k, x, y: attacks.square(fn, k, x, y, eps=eps, queries=100, p_init=0.3,
                                                draws=2))(trained["ak"], x, y)
    d = np.asarray(xs - x)
    assert np.abs(d).max() <= eps + 1e-6 and float(xs.min()) >= 0 and float(xs.max()) <= 1
    noise = jax.random.uniform(jax.random.key(9), x.shape, minval=-eps, maxval=eps)
    r_rand = ev(jnp.clip(x + noise, 0, 1), y)
    r_sq = ev(xs, y)
    assert float(r_rand["acc"]) - float(r_sq["acc"]) > 0.15
    # The random search keeps margin improvements: the smoothed margin fell on average.
    assert float(r_sq["margin"]) < float(ev(x, y)["margin"]) - 1.0


def test_ensemble_attack_keeps_strongest_variant(trained):
    fn, x, y, ev = trained["fn"], trained["x"], trained["y"], trained["evaluate"]
    sk = judging.example_keys(0, jnp.arange(N_EVAL), stream=2)
    masked = lambda k, xx: fn(k, jax.lax.stop_gradient(xx))     # zero input gradient
    acc_good = float(ev(trained["pgd"](fn, x, y, 10), y)["acc"])
    xe, choice = jax.jit(lambda k, x, y: attacks.ensemble_attack(
        {"masked": masked, "good": fn}, fn, k, x, y, select_key=sk, select_draws=4, eps=EPS,
        step_size=EPS / 4, steps=10))(trained["ak"], x, y)
    acc_ens = float(ev(xe, y)["acc"])
    acc_clean = float(ev(x, y)["acc"])
    assert acc_clean - acc_good > 0.2              # the real-gradient attack works
    assert acc_ens <= acc_good + 0.03              # the ensemble is as strong as its best member
    assert float(jnp.mean(choice == 0)) > 0.5      # index 0 = "good" (sorted names) mostly chosen


# --------------------------------------------------------------------------- EOT


def test_eot_grad_is_mean_of_single_draw_grads_and_per_example_autodiff():
    fn = _random_model()
    x, y = _rand_batch(5)
    keys = judging.example_keys(4, jnp.arange(5))
    K = 4
    g, g1 = jax.jit(lambda k: (attacks.eot_grad(fn, k, x, y, eot=K),
                               attacks.eot_grad(fn, k, x, y, eot=1)))(keys)
    single = jax.jit(lambda k: attacks.loss_grad(fn, k, x, y))
    singles = [single(jax.vmap(lambda k: jax.random.fold_in(k, j))(keys)) for j in range(K)]
    np.testing.assert_allclose(np.asarray(g), np.asarray(sum(singles) / K), rtol=1e-5, atol=1e-7)
    # The draws really differ (otherwise the test would be vacuous) ...
    assert float(jnp.abs(singles[0] - singles[1]).max()) > 1e-4
    # ... K = 1 is the first single-draw gradient ...
    np.testing.assert_allclose(np.asarray(g1), np.asarray(singles[0]), rtol=1e-6, atol=1e-8)
    # ... and loss_grad row b is d CE(fn(key_b, x_b), y_b) / d x_b computed alone.
    alone = jax.jit(jax.vmap(jax.grad(lambda xi, k, yi: optax.softmax_cross_entropy_with_integer_labels(
        fn(k, xi[None]), yi[None])[0])))
    k0 = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    np.testing.assert_allclose(np.asarray(singles[0]), np.asarray(alone(x, k0, y)), rtol=1e-5, atol=1e-7)


def test_unrolled_draws_run_one_after_another():
    """Unrolled EOT draws are independent programs XLA could run side by side, holding K
    draws' activations; eot_grad chains them, so K = 8 costs the memory of one draw."""
    w = jax.random.normal(jax.random.key(0), (64, 4096)) / 8
    v = jax.random.normal(jax.random.key(1), (4096, 10)) / 64

    def fn(key, x):                     # noise on the input, as the coding; wide activations
        h = jnp.tanh((x + jax.random.normal(key, x.shape)).reshape(x.shape[0], -1) @ w)
        return jnp.tanh(h * 1.5) @ v

    x, y = _rand_batch(64)
    keys = judging.example_keys(0, jnp.arange(64))
    temp = {K: jax.jit(functools.partial(attacks.eot_grad, fn, eot=K, unroll=True)).lower(keys, x, y)
            .compile().memory_analysis().temp_size_in_bytes for K in (1, 8)}
    assert temp[8] <= 1.5 * temp[1], temp


def test_unrolled_loops_give_the_same_iterates(monkeypatch, norm="l2"):
    fn = _random_model()
    x, y = _rand_batch(6)
    keys = judging.example_keys(7, jnp.arange(6))
    kw = dict(eps=0.1 if norm == "linf" else 1.0, step_size=0.03 if norm == "linf" else 0.3, steps=3, eot=2,
              norm=norm)
    # With the bound at 4, the default (None) falls between: 3 * 2 > 4 gradients, so the
    # steps loop; 2 <= 4 draws, so they are unrolled inside its body (on the CPU).
    monkeypatch.setattr(backend, "AUTO_UNROLL_MAX", 4)
    lowered = {u: jax.jit(lambda k, u=u: attacks.pgd(fn, k, x, y, unroll=u, **kw)).lower(keys)
               for u in (False, None, True)}
    # One loop fewer per unrolled level (the PRNG keeps its own loops, outside the body).
    n_while = {u: low.as_text().count("stablehlo.while") for u, low in lowered.items()}
    if jax.default_backend() == "cpu":
        assert n_while[True] + 1 == n_while[None] == n_while[False] - 1, n_while
    assert n_while[True] + 2 == n_while[False], n_while
    loop, mixed, flat = (lowered[u].compile()(keys) for u in (False, None, True))
    np.testing.assert_allclose(np.asarray(flat), np.asarray(loop), atol=1e-6)
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(loop), atol=1e-6)
    assert float(jnp.abs(loop - x).max()) > 0.5 * kw["step_size"]      # the attack moved
    # The automatic rule: unroll on the CPU for steps * eot <= AUTO_UNROLL_MAX, never when told not to.
    monkeypatch.undo()
    assert backend.should_unroll(None, backend.AUTO_UNROLL_MAX) == (jax.default_backend() == "cpu")
    assert not backend.should_unroll(None, backend.AUTO_UNROLL_MAX + 1)
    assert backend.should_unroll(True, 10_000) and not backend.should_unroll(False, 1)


def test_common_random_numbers_changes_draws_only():
    fn = _random_model()
    x, y = _rand_batch(4)
    k = judging.example_keys(0, jnp.arange(4))

    @jax.jit
    def run(k):
        return [attacks.pgd(fn, k, x, y, eps=0.1, steps=s, common_random_numbers=c)
                for s in (3, 1) for c in (True, False)]

    a, b, a1, b1 = run(k)
    assert float(jnp.abs(a - b).max()) > 0         # fresh draws per step differ from fixed ones
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(b1))   # one step: same draws
    np.testing.assert_array_equal(np.asarray(run(k)[0]), np.asarray(a))   # deterministic


# --------------------------------------------------------------------------- per-example keys


def test_results_independent_of_batch_size():
    fn = _random_model()
    x, y = _rand_batch(12, seed=5)
    keys = judging.example_keys(7, jnp.arange(12))

    @jax.jit
    def all_attacks(k, x, y):
        return {"pgd": attacks.pgd(fn, k, x, y, eps=0.1, steps=3, eot=2),
                "pgd_l2": attacks.pgd(fn, k, x, y, eps=0.5, step_size=0.2, steps=2, norm="l2"),
                "fgsm": attacks.fgsm(fn, k, x, y, eps=0.1),
                "square": attacks.square(fn, k, x, y, eps=0.1, queries=8, p_init=0.3),
                "judge": judging.judge(fn, k, x, y, draws=3)["correct_single"]}

    full = all_attacks(keys, x, y)
    parts = [all_attacks(keys[i:i + 4], x[i:i + 4], y[i:i + 4]) for i in range(0, 12, 4)]
    for name in full:
        np.testing.assert_array_equal(np.asarray(full[name]),
                                      np.concatenate([np.asarray(p[name]) for p in parts]), err_msg=name)
    assert float(jnp.abs(full["pgd"] - x).max()) > 0.05


def test_single_key_expands_to_example_keys():
    fn = _random_model()
    x, y = _rand_batch(4)
    key = jax.random.key(11)
    run = jax.jit(lambda k: attacks.fgsm(fn, k, x, y, eps=0.1))
    a = run(key)
    b = run(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(4, dtype=jnp.uint32)))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="3 per-example keys"):
        attacks.pgd(fn, jax.random.split(key, 3), x, y)


# --------------------------------------------------------------------------- judging


def test_judge_single_vs_averaged():
    # A classifier right with probability ~0.6 per draw: noise on the logits only.
    def fn(key, x):
        z = jnp.zeros((x.shape[0], 3)).at[:, 0].set(0.5)
        return z + jax.random.normal(key, z.shape)
    x = jnp.zeros((400, 2, 2, 1))
    y = jnp.zeros((400,), jnp.int32)
    keys = judging.example_keys(0, jnp.arange(400))
    r = jax.jit(lambda k: judging.judge(fn, k, x, y, draws=16))(keys)
    single, avg = float(r["correct_single"].mean()), float(r["correct_avg"].mean())
    assert 0.45 < single < 0.75                    # single-draw accuracy of a noisy classifier
    assert avg > single + 0.2                      # averaging 16 draws denoises
    assert set(np.unique(np.asarray(r["correct_avg"]))) <= {0.0, 1.0}
    assert abs(float(r["correct_first"].mean()) - single) < 0.1


def test_select_strongest_prefers_misclassified_then_loss():
    fn = _linear(jnp.eye(4), jnp.zeros(4))
    y = jnp.array([0, 0, 0], jnp.int32)
    # Candidate 0: correct, big margin; 1: correct, small margin; 2: wrong for examples 0 and 1.
    c0 = jnp.array([[3., 0, 0, 0], [3., 0, 0, 0], [3., 0, 0, 0]])
    c1 = jnp.array([[1., .9, 0, 0], [1., .9, 0, 0], [1., .9, 0, 0]])
    c2 = jnp.array([[0., 2, 0, 0], [0., 5, 0, 0], [3., 0, 0, 0]])
    cands = jnp.stack([c0, c1, c2]).reshape(3, 3, 2, 2, 1)
    chosen, choice = jax.jit(lambda c: attacks.select_strongest(c, fn, jax.random.key(0), y, draws=2))(cands)
    np.testing.assert_array_equal(np.asarray(choice), [2, 2, 1])
    np.testing.assert_array_equal(np.asarray(chosen[2]), np.asarray(cands[1, 2]))


# --------------------------------------------------------------------------- bad arguments


def _never_called(key, x):
    raise AssertionError("the classifier must not be called before validation")


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-0.1), r"eps=-0\.1 .*>= 0"),
    (dict(steps=0), r"steps=0 .*>= 1"),
    (dict(norm="l1"), r"norm='l1' .*linf"),
    (dict(step_size=0.0), r"step_size=0\.0 .*> 0"),
    (dict(step_size=-1.0), r"step_size=-1\.0"),
    (dict(eot=0), r"eot=0 .*>= 1"),
    (dict(steps=2.5), r"steps=2\.5"),
])
def test_pgd_bad_arguments(kwargs, match):
    x, y = _rand_batch(2)
    with pytest.raises(ValueError, match=match):
        attacks.pgd(_never_called, jax.random.key(0), x, y, **kwargs)


@pytest.mark.parametrize("fn,kwargs,match", [
    (attacks.fgsm, dict(eps=-1.0), r"eps=-1\.0"),
    (attacks.fgsm, dict(norm="linf2"), r"norm='linf2'"),
    (attacks.fgsm, dict(eot=0), r"eot=0"),
    (attacks.square, dict(queries=0), r"queries=0"),
    (attacks.square, dict(eps=-0.5), r"eps=-0\.5"),
    (attacks.square, dict(p_init=1.5), r"p_init=1\.5"),
    (judging.judge, dict(draws=0), r"draws=0"),
])
def test_other_bad_arguments(fn, kwargs, match):
    x, y = _rand_batch(2)
    with pytest.raises(ValueError, match=match):
        fn(_never_called, jax.random.key(0), x, y, **kwargs)


def test_eot_grad_bad_argument():
    x, y = _rand_batch(2)
    with pytest.raises(ValueError, match="eot=0"):
        attacks.eot_grad(_never_called, judging.example_keys(0, jnp.arange(2)), x, y, eot=0)


# --------------------------------------------------------------------------- metrics


def test_qte_hand_computed():
    etas = [e / 255 for e in (0, 1, 2, 4, 8)]
    # area (in 1/255 units) = 1*.9 + 1*.7 + 2*.5 + 4*.3 = 3.8; / 8 = 0.475
    assert metrics.qte(etas, [1.0, 0.8, 0.6, 0.4, 0.2]) == pytest.approx(0.475, abs=1e-12)
    assert metrics.qte([0, 1], [0.7, 0.7]) == pytest.approx(0.7)
    assert metrics.qte([0, 2], [1.0, 0.0]) == pytest.approx(0.5)
    # A grid not starting at 0 is still divided by max(eta): (1 * (0.5 + 0.3) / 2) / 2 = 0.2
    assert metrics.qte([1, 2], [0.5, 0.3]) == pytest.approx(0.2)


@pytest.mark.parametrize("etas,accs,match", [
    ([0, 2, 1], [1, 1, 1], "strictly increasing"),
    ([0, 1, 1], [1, 1, 1], "strictly increasing"),
    ([0, 1], [1, 1, 1], "same length"),
    ([0], [1], "at least 2"),
    ([-1, 1], [1, 1], ">= 0"),
    ([0, 1], [1, float("nan")], "finite"),
])
def test_qte_bad_arguments(etas, accs, match):
    with pytest.raises(ValueError, match=match):
        metrics.qte(etas, accs)


def test_small_metrics():
    assert metrics.accuracy(np.array([1, 2, 3]), np.array([1, 2, 0])) == pytest.approx(2 / 3)
    assert metrics.accuracy(np.eye(3), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert metrics.standard_error(0.5, 100) == pytest.approx(0.05)
    assert metrics.max_increase([0.9, 0.8, 0.85, 0.1]) == pytest.approx(0.05)
    assert metrics.max_increase([0.9, 0.8]) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="do not match"):
        metrics.accuracy(np.array([1, 2]), np.array([1]))
