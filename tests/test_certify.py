"""Tests of rsc_jax.certify: Cohen et al. (ICML 2019) PREDICT/CERTIFY on RSC codings.

Base classifiers with closed-form smoothed probabilities: a linear classifier of the
time mean of the coded input, sign(w . mean_t s_t + b). Under RSC-I the mean is x + eps,
eps ~ N(0, sigma^2 I); under RSC-II it is x + eps_bar, eps_bar ~ N(0, sigma^2/T I). With
m = (w . x + b) / |w| the signed distance of x to the hyperplane (also the exact l2
robustness radius of the smoothed classifier, whose decision boundary is the same
hyperplane):
  RSC-I:  p_A = Phi(|m| / sigma)            -> sigma Phi^-1(p_A)           = |m|
  RSC-II: p_A = Phi(sqrt(T) |m| / sigma)    -> sigma Phi^-1(p_A) / sqrt(T) = |m|
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from rsc_jax import certify as C
from rsc_jax import coding, config, config_checks, parallel, report
from rsc_jax.evaluators import certification
from tests.conftest import xla_flags

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---------------------------------------------------------------------------
# Toy base classifiers.
# ---------------------------------------------------------------------------

def linear_logits(w, b, *, method: str, T: int, sigma: float):
    """One draw of a linear classifier of the time-mean of the coded input.

    x [B, H, W, C] -> features [B, H*W*C]; w [d] (2 classes, class 1 iff w.s + b > 0)
    or [d, K] with b [K] (K classes).
    """
    w = jnp.asarray(w, jnp.float32)
    b = jnp.asarray(b, jnp.float32)

    def logits_fn(key, x):
        s = coding.encode(key, x, method=method, T=T, sigma=sigma).mean(0).reshape(x.shape[0], -1)
        if w.ndim == 1:
            z = s @ w + b
            return jnp.stack([-z, z], axis=-1)
        return s @ w + b

    return logits_fn


def points_at_margin(w, b, margins, d_shape=(1, 1, 2)):
    """Images x_i [B, *d_shape] with (w . x_i + b) / |w| = margins[i] (w is [d])."""
    w = np.asarray(w, np.float64)
    u = w / np.linalg.norm(w)
    x0 = -b * w / np.dot(w, w)                            # on the hyperplane
    xs = x0[None] + np.asarray(margins, np.float64)[:, None] * u[None]
    return jnp.asarray(xs.reshape(len(margins), *d_shape), jnp.float32)


class ToyClassifier:
    """A 3-class linear classifier of the time mean, with the runner's interface."""

    def __init__(self, method: str = "rsc2", sigma: float = 0.25, T: int = 2, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.W = rng.normal(size=(4, 3)).astype(np.float32) * 3
        self.b = rng.normal(size=(3,)).astype(np.float32)
        self.config = {"coding": {"method": method, "sigma": sigma, "T": T}}
        self.calls = 0
        self._fn = linear_logits(self.W, self.b, method=method if method in coding.METHODS
                                 else "direct", T=T, sigma=sigma)

    def logits(self, key, x):
        self.calls += 1
        return self._fn(key, x)


def toy_data(num: int = 6, seed: int = 1):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(num, 2, 2, 1)).astype(np.float32)
    labels = rng.integers(0, 3, size=num)
    return images, labels


def small_cfg(**kw):
    cfg = config.certify()
    cfg.n0, cfg.n, cfg.alpha, cfg.batch, cfg.image_batch, cfg.num_examples = 16, 200, 0.01, 64, 4, -1
    cfg.radii = [0.0, 0.1, 0.2, 0.3]
    for k, v in kw.items():
        cfg[k] = v
    return cfg


# ---------------------------------------------------------------------------
# Clopper-Pearson.
# ---------------------------------------------------------------------------

def _cp_lower_by_bisection(k: int, n: int, alpha: float) -> float:
    """The p with P(Bin(n, p) >= k) = alpha (increasing in p), found by bisection."""
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if scipy.stats.binom.sf(k - 1, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("n,alpha", [(1, 0.05), (10, 0.001), (10_000, 0.001), (37, 0.2)])
def test_clopper_pearson_closed_forms(n, alpha):
    # k = n: P(Bin(n,p) >= n) = p^n = alpha; k = 1: 1 - (1-p)^n = alpha; k = 0: 0.
    assert C.clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-10)
    assert C.clopper_pearson_lower(1, n, alpha) == pytest.approx(1 - (1 - alpha) ** (1 / n),
                                                                 rel=1e-9)
    assert C.clopper_pearson_lower(0, n, alpha) == 0.0


def test_clopper_pearson_hand_values():
    assert C.clopper_pearson_lower(10, 10, 0.001) == pytest.approx(0.501187233627, rel=1e-9)
    assert C.clopper_pearson_lower(100, 100, 0.001) == pytest.approx(0.93325430079, rel=1e-9)


@pytest.mark.parametrize("k,n,alpha", [(7, 10, 0.05), (990, 1000, 0.001), (9000, 10_000, 0.001),
                                       (3, 5, 0.1), (5001, 10_000, 0.001), (60, 100, 0.01)])
def test_clopper_pearson_matches_binomial_tail(k, n, alpha):
    got = float(C.clopper_pearson_lower(k, n, alpha))
    assert got == pytest.approx(_cp_lower_by_bisection(k, n, alpha), abs=1e-10)
    # vectorised call agrees with scalar calls
    ks = np.array([0, k, n])
    np.testing.assert_allclose(C.clopper_pearson_lower(ks, n, alpha),
                               [0.0, got, alpha ** (1 / n)], rtol=1e-10)


def test_radius_closed_form():
    p = scipy.stats.norm.cdf(1.0)
    assert C.radius(p, sigma=0.5, coding="rsc1", T=4) == pytest.approx(0.5, rel=1e-9)
    assert C.radius(p, sigma=0.5, coding="rsc2", T=4) == pytest.approx(0.25, rel=1e-9)
    assert C.radius(p, sigma=0.5, coding="rsc2", T=1) == pytest.approx(0.5, rel=1e-9)
    np.testing.assert_array_equal(C.radius([0.0, 0.3, 0.5], sigma=1.0, coding="rsc1", T=1), 0.0)


def test_linf_equivalent_hand_values():
    # digits 8x8x1: d = 64, r = 0.5 -> 0.5 / 8 = 0.0625 = 15.9375/255
    assert C.linf_equivalent(0.5, 64) == pytest.approx(0.0625, rel=1e-12)
    assert 255 * C.linf_equivalent(0.5, 64) == pytest.approx(15.94, abs=5e-3)
    # MNIST 28x28x1: d = 784 -> 0.5 / 28; CIFAR 32x32x3: d = 3072
    np.testing.assert_allclose(C.linf_equivalent([0.0, 0.5, 1.0], 784), [0.0, 0.5 / 28, 1.0 / 28], rtol=1e-12)
    assert C.linf_equivalent(1.0, 3072) == pytest.approx(1 / math.sqrt(3072), rel=1e-12)
    assert C.linf_equivalent(np.inf, 64) == np.inf
    # the inclusion is tight: the corner of the l_inf ball of radius r / sqrt(d) has l2 norm r
    d, r = 64, 0.37
    corner = np.full(d, float(C.linf_equivalent(r, d)))
    assert np.linalg.norm(corner) == pytest.approx(r, rel=1e-12)
    for bad, match in ((dict(radius_l2=-0.1, input_dim=64), "radius_l2"), (dict(radius_l2=0.5, input_dim=0),
                                                                             "input_dim=0"),
                       (dict(radius_l2=np.nan, input_dim=64), "radius_l2")):
        with pytest.raises(ValueError, match=match):
            C.linf_equivalent(**bad)


def test_max_radius_hand_values():
    # all n draws agree: p_A = alpha^(1/n); Phi^-1(0.001^(1/10^5)) = 3.8115, Phi^-1(0.001^(1/10^4)) = 3.1986
    assert C.max_radius(100_000, 0.001, sigma=1.0, coding="rsc1", T=1) == pytest.approx(3.81146, abs=1e-4)
    assert C.max_radius(10_000, 0.001, sigma=1.0, coding="rsc1", T=1) == pytest.approx(3.19858, abs=1e-4)
    # digits_certify: RSC-II sigma 0.2 at T = 4 -> 0.381; RSC-I at 0.2 / sqrt(4) the same
    r2 = C.max_radius(100_000, 0.001, sigma=0.2, coding="rsc2", T=4)
    assert r2 == pytest.approx(0.381146, abs=1e-5)
    assert C.max_radius(100_000, 0.001, sigma=0.1, coding="rsc1", T=4) == pytest.approx(r2, rel=1e-12)
    assert C.max_radius(2000, 0.001, sigma=0.2, coding="rsc2", T=4) == pytest.approx(0.2702, abs=1e-4)
    with pytest.raises(ValueError, match="cannot be certified"):
        C.max_radius(100, 0.001, sigma=0.2, coding="poisson", T=4)


# ---------------------------------------------------------------------------
# CERTIFY against closed-form smoothed classifiers.
# ---------------------------------------------------------------------------

def test_certify_coverage_rsc1_linear():
    """P(certified radius > true radius) <= alpha, and equals its exact binomial value."""
    sigma, m, n, alpha, reps = 0.5, 0.4, 100, 0.05, 600
    w, b = np.array([3.0, 4.0]), -2.0
    p_true = scipy.stats.norm.cdf(m / sigma)
    fn = linear_logits(w, b, method="rsc1", T=1, sigma=sigma)
    x = points_at_margin(w, b, np.full(reps, m))
    res = C.certify(fn, jax.random.key(3), x, sigma=sigma, coding="rsc1", T=1, n0=100, n=n,
                    alpha=alpha, batch=64)
    # the sampler draws Bin(n, p_true) counts of the true class (1)
    frac = res.counts[:, 1].sum() / (reps * n)
    assert abs(frac - p_true) < 4 * math.sqrt(p_true * (1 - p_true) / (reps * n))
    fail = ((res.prediction != -1) & (res.prediction != 1)) | (res.radius > m)
    # exact failure probability: P(CP_lower(K) > p_true), K ~ Bin(n, p_true)
    k = np.arange(n + 1)
    q = float(np.sum(scipy.stats.binom.pmf(k, n, p_true) * (C.clopper_pearson_lower(k, n, alpha)
                                                            > p_true)))
    assert 0.005 < q <= alpha                      # the bound is valid and the test is not vacuous
    sd = math.sqrt(reps * q * (1 - q))
    assert abs(fail.sum() - reps * q) <= 4 * sd + 1, (fail.sum(), reps * q)
    assert np.all(res.radius[res.prediction == -1] == 0)


def test_certify_close_to_true_radius_rsc1_with_T_steps():
    """RSC-I with T = 3 is Cohen's setting: radius -> |m| for large n, no sqrt(T)."""
    sigma, m, T = 0.5, 0.5, 3
    w, b = np.array([1.0, -1.0]), 0.2
    fn = linear_logits(w, b, method="rsc1", T=T, sigma=sigma)
    x = points_at_margin(w, b, np.array([m, m, -m, -m]))
    res = C.certify(fn, jax.random.key(0), x, sigma=sigma, coding="rsc1", T=T, n=10_000,
                    alpha=0.001, batch=1000)
    np.testing.assert_array_equal(res.prediction, [1, 1, 0, 0])
    assert np.all(res.radius <= m)
    assert np.all(res.radius > m - 0.06), res.radius
    np.testing.assert_allclose(res.p_lower, C.clopper_pearson_lower(res.n_A, 10_000, 0.001))


def test_rsc2_radius_scales_with_sqrt_T():
    """Linear classifier of the time mean under RSC-II: exact radius |m| = sigma Phi^-1(p)/sqrt(T)."""
    sigma, T, m = 0.5, 4, 0.25
    w, b = np.array([2.0, 1.0]), -1.0
    p_true = scipy.stats.norm.cdf(math.sqrt(T) * m / sigma)
    # closed form: the RSC-II formula recovers the exact radius; the RSC-I one over-claims
    assert C.radius(p_true, sigma=sigma, coding="rsc2", T=T) == pytest.approx(m, rel=1e-9)
    assert C.radius(p_true, sigma=sigma, coding="rsc1", T=T) == pytest.approx(2 * m, rel=1e-9)
    fn = linear_logits(w, b, method="rsc2", T=T, sigma=sigma)
    x = points_at_margin(w, b, np.full(6, m))
    res = C.certify(fn, jax.random.key(1), x, sigma=sigma, coding="rsc2", T=T, n=10_000,
                    alpha=0.001, batch=1000)
    frac = res.counts[:, 1].sum() / (6 * 10_000)
    assert abs(frac - p_true) < 4 * math.sqrt(p_true * (1 - p_true) / 60_000)
    assert np.all(res.prediction == 1)
    assert np.all(res.radius <= m) and np.all(res.radius > m - 0.03), res.radius
    # the same counts under the (wrong) RSC-I formula exceed the true radius
    assert np.all(C.radius(res.p_lower, sigma=sigma, coding="rsc1", T=T) > m)
    # and a point just past the certified ball on the other side is classified otherwise
    beyond = points_at_margin(w, b, np.full(2, m - (res.radius.min() + 0.3)))
    assert np.all(C.predict(fn, jax.random.key(2), beyond, n=2000, alpha=0.001).prediction == 0)


def test_certify_from_counts_uses_selection_class():
    """c_A comes from the n0 selection draws only; n_A is its count among the n fresh draws."""
    c0 = np.array([[10, 0, 0], [0, 10, 0], [3, 3, 4]])
    c1 = np.array([[30, 70, 0], [5, 95, 0], [0, 0, 100]])
    r = C.certify_from_counts(c0, c1, alpha=0.01, sigma=1.0, coding="rsc1", T=1)
    np.testing.assert_array_equal(r.n_A, [30, 95, 100])
    np.testing.assert_array_equal(r.prediction, [-1, 1, 2])
    p95 = _cp_lower_by_bisection(95, 100, 0.01)
    np.testing.assert_allclose(r.p_lower, [_cp_lower_by_bisection(30, 100, 0.01), p95,
                                           0.01 ** (1 / 100)], rtol=1e-8)
    np.testing.assert_allclose(r.radius, [0.0, scipy.stats.norm.ppf(p95),
                                          scipy.stats.norm.ppf(0.01 ** (1 / 100))], rtol=1e-8)


# ---------------------------------------------------------------------------
# PREDICT.
# ---------------------------------------------------------------------------

def test_predict_abstains_on_boundary_answers_far():
    sigma, alpha, n = 0.5, 0.001, 1000
    w, b = np.array([1.0, 0.0]), -0.5                      # boundary x_0 = 0.5 exactly
    fn = linear_logits(w, b, method="rsc2", T=2, sigma=sigma)
    on = points_at_margin(w, b, np.zeros(50))
    r = C.predict(fn, jax.random.key(0), on, n=n, alpha=alpha, batch=250)
    assert np.sum(r.prediction != -1) <= 2                # expected <= 50 * alpha
    assert np.all(r.counts.sum(1) == n)
    far = points_at_margin(w, b, np.array([1.0, 1.0, -1.0, -1.0]))
    r2 = C.predict(fn, jax.random.key(0), far, n=n, alpha=alpha, batch=250)
    np.testing.assert_array_equal(r2.prediction, [1, 1, 0, 0])
    # CERTIFY abstains on the boundary too (p_A <= 1/2 with probability >= 1 - alpha)
    c = C.certify(fn, jax.random.key(1), on, sigma=sigma, coding="rsc2", T=2, n0=100, n=n,
                  alpha=alpha, batch=250)
    assert np.sum(c.prediction != -1) <= 2 and np.all(c.radius[c.prediction == -1] == 0)
    for res in (r, r2):
        ref = [scipy.stats.binomtest(int(a), int(a + bb), 0.5).pvalue
               for a, bb in zip(res.n_A, res.n_B)]
        np.testing.assert_allclose(res.p_value, ref, rtol=1e-12)
        np.testing.assert_array_equal(res.prediction == -1, np.asarray(ref) > alpha)


def test_predict_from_counts_rule():
    counts = np.array([[60, 40, 0], [10, 0, 90], [5, 5, 0], [0, 0, 30]])
    r = C.predict_from_counts(counts, alpha=0.05)
    np.testing.assert_array_equal(r.n_A, [60, 90, 5, 30])
    np.testing.assert_array_equal(r.n_B, [40, 10, 5, 0])
    # binomtest(60, 100) p = 0.057 > 0.05 -> abstain; (90, 100) tiny; (5, 10) = 1; (30, 30) tiny
    np.testing.assert_array_equal(r.prediction, [-1, 2, -1, 2])


# ---------------------------------------------------------------------------
# Invariance: image batch size, chunk size, device count.
# ---------------------------------------------------------------------------

def test_counts_do_not_depend_on_batching():
    clf = ToyClassifier(method="rsc2", sigma=0.3, T=2)
    images, _ = toy_data(6)
    x = jnp.asarray(images)
    kw = dict(sigma=0.3, coding="rsc2", T=2, n0=50, n=50, alpha=0.01)
    fields = ("counts_selection", "counts", "prediction", "p_lower", "radius")
    full = C.certify(clf.logits, jax.random.key(7), x, batch=64, **kw)
    chunked = C.certify(clf.logits, jax.random.key(7), x, batch=7, **kw)      # 8 chunks, last partial
    parts = [C.certify(clf.logits, jax.random.key(7), x[s], batch=64, indices=np.arange(6)[s], **kw)
             for s in (slice(0, 3), slice(3, 6))]
    for f in fields:
        np.testing.assert_array_equal(getattr(full, f), getattr(chunked, f))
        np.testing.assert_array_equal(getattr(full, f), np.concatenate([getattr(p, f) for p in parts]))
    # the counts are random (a different seed changes them), so equality is not vacuous
    other_seed = C.certify(clf.logits, jax.random.key(8), x, batch=64, **kw)
    assert not np.array_equal(full.counts, other_seed.counts)
    # selection and estimation use independent draws (Cohen et al.): with n0 = n they differ
    assert not np.array_equal(full.counts_selection, full.counts)
    p1 = C.predict(clf.logits, jax.random.key(7), x, n=40, alpha=0.01, batch=40)
    p2 = C.predict(clf.logits, jax.random.key(7), x[3:], n=40, alpha=0.01, batch=6,
                   indices=np.arange(3, 6))
    np.testing.assert_array_equal(p1.counts[3:], p2.counts)


_SUBPROCESS = r"""
import json, sys
sys.path[:0] = [{root!r}, {here!r}]
import jax
assert jax.device_count() == 4, jax.devices()
from rsc_jax import parallel
from rsc_jax.evaluators import certification
from tests.conftest import xla_flags
from test_certify import ToyClassifier, toy_data, small_cfg
images, labels = toy_data(6)
res = certification.run(ToyClassifier(), images, labels, small_cfg(image_batch=4), workdir={wd!r},
            mesh=parallel.make_mesh(4), progress=False)
print(json.dumps(res["settings"]))
"""


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_one_vs_four_devices(tmp_path):
    wd4 = str(tmp_path / "four")
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=4"),
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _SUBPROCESS.format(root=ROOT, here=HERE, wd=wd4)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["devices"] == 4
    wd1 = str(tmp_path / "one")
    images, labels = toy_data(6)
    certification.run(ToyClassifier(), images, labels, small_cfg(image_batch=2), workdir=wd1,
          mesh=parallel.make_mesh(1), progress=False)
    a, b = _read_jsonl(os.path.join(wd4, "certify.jsonl")), _read_jsonl(os.path.join(wd1, "certify.jsonl"))
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b):
        for f in ("index", "prediction", "p_A", "radius", "counts", "counts_selection"):
            assert ra[f] == rb[f], (f, ra, rb)


# ---------------------------------------------------------------------------
# Refusals and argument errors.
# ---------------------------------------------------------------------------

def _never_called(key, x):
    raise AssertionError("logits_fn must not be traced when the arguments are refused")


X1 = jnp.zeros((1, 1, 1, 2))


@pytest.mark.parametrize("method", ["poisson", "direct"])
def test_refuses_poisson_and_direct(method, tmp_path):
    with pytest.raises(ValueError, match=f"coding='{method}' cannot be certified"):
        C.certify(_never_called, jax.random.key(0), X1, sigma=0.5, coding=method, T=4)
    with pytest.raises(ValueError, match="cannot be certified"):
        C.radius(0.9, sigma=0.5, coding=method, T=4)
    clf = ToyClassifier(method=method)
    images, labels = toy_data(4)
    wd = tmp_path / "w"
    with pytest.raises(ValueError, match=f"config.coding.method='{method}' cannot be certified"):
        certification.run(clf, images, labels, small_cfg(), workdir=str(wd), mesh=parallel.make_mesh(1),
              progress=False)
    assert clf.calls == 0 and not wd.exists()


@pytest.mark.parametrize("kw,match", [
    (dict(alpha=0.0), "alpha=0.0"), (dict(alpha=1.0), "alpha=1.0"), (dict(alpha=-0.1), "alpha"),
    (dict(n0=0), "n0=0"), (dict(n=0), "n=0"), (dict(n=2.5), "n=2.5"),
    (dict(sigma=0.0), "sigma=0.0"), (dict(sigma=-1.0), "sigma=-1.0"),
    (dict(batch=0), "batch=0"), (dict(coding="gauss"), "coding='gauss' is not allowed"),
    (dict(T=0), "T=0")])
def test_certify_bad_arguments(kw, match):
    args = dict(sigma=0.5, coding="rsc1", T=1, n0=10, n=10, alpha=0.01, batch=10) | kw
    with pytest.raises(ValueError, match=match):
        C.certify(_never_called, jax.random.key(0), X1, **args)


@pytest.mark.parametrize("kw,match", [(dict(n=0), "n=0"), (dict(alpha=1.5), "alpha=1.5"),
                                      (dict(batch=0), "batch=0")])
def test_predict_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        C.predict(_never_called, jax.random.key(0), X1, **(dict(n=10, alpha=0.01) | kw))


@pytest.mark.parametrize("field,value", [("n0", 0), ("n", -5), ("alpha", 1.0), ("batch", 0),
                                         ("image_batch", 0), ("num_examples", 0), ("seed", -1),
                                         ("radii", [0.5, 0.25]), ("radii", [])])
def test_validate_config_names_field(field, value):
    config_checks.check_certify(config.certify())                  # the defaults are valid
    cfg = config.certify()
    with cfg.unlocked():
        cfg[field] = value
    with pytest.raises(ValueError, match=f"config.certify.{field}"):
        config_checks.check_certify(cfg)


def test_run_rejects_image_batch_not_divisible(tmp_path):
    # a 1-device mesh divides anything; check the message path with a fake 3-device count
    images, labels = toy_data(4)

    class FakeMesh:
        class devices:                                      # noqa: N801
            size = 3
    with pytest.raises(ValueError, match="config.certify.image_batch=4"):
        certification.run(ToyClassifier(), images, labels, small_cfg(), workdir=str(tmp_path),
              mesh=FakeMesh(), progress=False)


# ---------------------------------------------------------------------------
# Runner files.
# ---------------------------------------------------------------------------

def test_run_writes_files(tmp_path):
    clf = ToyClassifier(method="rsc2", sigma=0.5, T=2)
    images, labels = toy_data(7)
    images[:, 0, 0, 0] = np.linspace(0, 1, 7)             # a spread of margins
    cfg = small_cfg(image_batch=4, seed=5)                 # 7 images: last batch padded
    wd = str(tmp_path)
    res = certification.run(clf, images, labels, cfg, workdir=wd, mesh=parallel.make_mesh(1), progress=False)
    rows = _read_jsonl(os.path.join(wd, "certify.jsonl"))
    assert [r["index"] for r in rows] == list(range(7))
    # the same numbers as CERTIFY called directly with the run's seed and indices
    direct = C.certify(clf.logits, jax.random.key(5), jnp.asarray(images), sigma=0.5,
                       coding="rsc2", T=2, n0=16, n=200, alpha=0.01, batch=64)
    for i, r in enumerate(rows):
        assert r["label"] == labels[i]
        assert r["prediction"] == direct.prediction[i]
        assert r["correct"] == (r["prediction"] == labels[i])
        assert r["counts"] == direct.counts[i].tolist() and sum(r["counts"]) == 200
        assert sum(r["counts_selection"]) == 16
        assert r["p_A"] == pytest.approx(float(C.clopper_pearson_lower(r["n_A"], 200, 0.01)))
        expect_r = (0.5 * scipy.stats.norm.ppf(r["p_A"]) / math.sqrt(2)) if r["p_A"] > 0.5 else 0.0
        assert r["radius"] == pytest.approx(expect_r)
        assert (r["prediction"] == -1) == (r["p_A"] <= 0.5)
        assert r["seconds"] > 0
    with open(os.path.join(wd, "certified.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(res))
    rad = np.array([r["radius"] for r in rows])
    cor = np.array([r["correct"] for r in rows])
    pred = np.array([r["prediction"] for r in rows])
    assert res["radii"] == [0.0, 0.1, 0.2, 0.3]
    np.testing.assert_allclose(res["certified_accuracy"],
                               [np.mean(cor & (rad >= t)) for t in res["radii"]])
    assert res["acr"] == pytest.approx(np.mean(rad * cor))
    assert res["abstain_rate"] == pytest.approx(np.mean(pred == -1))
    # toy data is not degenerate: correct, wrong and abstained examples
    assert 0 < res["certified_accuracy"][0] and res["acr"] > 0 and res["abstain_rate"] > 0
    assert np.any((pred != -1) & ~cor)
    assert res["settings"] == dict(coding="rsc2", sigma=0.5, T=2, n0=16, n=200, alpha=0.01,
                                   batch=64, image_batch=4, num_examples=7, seed=5, devices=1)
    assert res["images_per_second"] > 0
    with open(os.path.join(wd, "certified.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = report.certification_markdown(res)
    assert "Certified robustness" in md and f"{res['acr']:.3f}" in md
    assert "sqrt(T)" in md and "certified.png" in md
    assert md.count("|") >= 2 * (len(res["radii"]) + 1)
    # all 200 draws agreeing gives p_A = 0.01^(1/200), the largest radius n and alpha allow
    assert res["max_certifiable_radius"] == pytest.approx(0.5 * scipy.stats.norm.ppf(0.01 ** (1 / 200)) / math.sqrt(2))
    assert rad.max() <= res["max_certifiable_radius"] + 1e-12 and "Largest radius" in md
    assert "95 % interval" in md
    # the share of examples at that cap: all n draws agreed
    assert res["at_max_certifiable_radius"] == pytest.approx(np.mean([r["n_A"] == 200 for r in rows]))
    # l_inf equivalents r / sqrt(d) of the grid and of the largest radius, d = 2 x 2 x 1
    assert res["input_dim"] == 4
    li = res["linf_equivalent"]
    np.testing.assert_allclose(li["radii"], [0.0, 0.05, 0.1, 0.15], rtol=1e-12)
    np.testing.assert_allclose(li["radii_255"], [255 * r / 2 for r in res["radii"]], rtol=1e-12)
    assert li["max_certifiable_radius"] == pytest.approx(res["max_certifiable_radius"] / 2, rel=1e-12)
    assert li["max_certifiable_radius_255"] == pytest.approx(255 * res["max_certifiable_radius"] / 2, rel=1e-12)
    assert "l_inf equivalent r/sqrt(d), x 1/255 | 0 | 12.8 | 25.5 | 38.2 |" in md
    assert f"= {li['max_certifiable_radius_255']:.3g}/255 for d = 4" in md
    # no grid radius lies beyond max_certifiable_radius (0.71), so no cell is marked as n's
    assert res["max_certifiable_radius"] > 0.3 and "†" not in md
    # a grid radius beyond it is marked, and the note says so
    md_beyond = report.certification_markdown(dict(res, radii=[0.0, 0.5, 1.0]))
    assert md_beyond.count(" †") == 2 and "marks the grid radii beyond it" in md_beyond


def test_run_num_examples_and_uint8(tmp_path):
    clf = ToyClassifier(method="rsc1", sigma=0.5, T=1)
    images, labels = toy_data(6)
    u8 = np.round(images * 255).astype(np.uint8)
    res = certification.run(clf, u8, labels, small_cfg(num_examples=3, image_batch=2), workdir=str(tmp_path),
                mesh=parallel.make_mesh(1), progress=False)
    assert res["num_examples"] == 3
    assert len(_read_jsonl(os.path.join(tmp_path, "certify.jsonl"))) == 3
    assert res["radius_formula"] == "sigma * Phi^-1(p_A)"


def test_certification_markdown_of_older_results_and_comparison():
    """report.md renders a certified.json written before input_dim existed; the comparison
    table puts runs side by side and states each run's largest certifiable radius."""
    def result(coding_, sigma, acc, **extra):
        return {"settings": dict(coding=coding_, sigma=sigma, T=4, n0=100, n=100_000, alpha=0.001, batch=1000,
                                 image_batch=8, num_examples=360, seed=0, devices=1),
                "radii": [0.0, 0.2, 0.4], "certified_accuracy": acc, "acr": 0.3, "abstain_rate": 0.0,
                "num_examples": 360, "seconds": 10.0, "images_per_second": 36.0,
                "radius_formula": coding.get(coding_).radius_formula,
                "max_certifiable_radius": C.max_radius(100_000, 0.001, sigma=sigma, coding=coding_, T=4), **extra}
    old = result("rsc2", 0.2, [0.98, 0.9, 0.0])
    md = report.certification_markdown(old)
    assert "l_inf equivalent" not in md and "Largest radius n = 100,000 and alpha = 0.001 can certify: 0.381" in md
    assert "0.0% †" in md
    md = report.certification_markdown(dict(old, input_dim=64, at_max_certifiable_radius=0.71875))
    assert "| l_inf equivalent r/sqrt(d), x 1/255 | 0 | 6.38 | 12.8 |" in md     # derived from input_dim
    assert "0.04764 = 12.1/255 for d = 64" in md
    assert "71.9% of the images reached it (all n draws agreed)" in md
    table = report.certification_comparison_markdown(
        [("rsc2 sigma 0.2", dict(old, input_dim=64)), ("rsc1 sigma 0.1", result("rsc1", 0.1, [0.97, 0.85, 0.0]))])
    rows = [line for line in table.splitlines() if line.startswith("| rsc")]
    assert len(rows) == 2
    assert rows[0].endswith("| 0.980 | 0.900 | 0.000 † | 0.300 | 0.381 (12.1/255) |"), rows[0]
    assert rows[1].endswith("| 0.970 | 0.850 | 0.000 † | 0.300 | 0.381 |"), rows[1]


# ---------------------------------------------------------------------------
# Certification at size: configs and the RSC-II / RSC-I pair sweep.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,base,num_examples", [("digits_certify", "digits", -1),
                                                    ("mnist_subset_certify", "mnist_subset", 500)])
def test_certify_configs_at_size(name, base, num_examples):
    cfg = config.from_file(name)
    c = cfg.certify
    assert (c.n, c.n0, c.alpha, c.num_examples) == (100_000, 100, 0.001, num_examples)
    config_checks.check_certify(c)
    # everything but the certify section is the base config's: it certifies the base run's export
    ref = config.from_file(base)
    for section in ("dataset", "model", "neuron", "coding", "train"):
        assert cfg[section].to_dict() == ref[section].to_dict(), section
    # the grid reaches past the largest radius n and alpha allow (0.381), so the table shows where it ends
    top = C.max_radius(c.n, c.alpha, sigma=cfg.coding.sigma, coding=cfg.coding.method, T=cfg.coding.T)
    assert top == pytest.approx(0.381, abs=1e-3) and max(c.radii) > top > sorted(c.radii)[-2]
    with open(os.path.join(config.CONFIG_DIR, f"{name}.py")) as f:
        doc = f.read()
    assert f"--config=configs/{base}.py" in doc and "--mode=train" in doc
    assert f"--config=configs/{name}.py" in doc and "--mode=certify" in doc
    if cfg.dataset.name == "npz" and not os.path.isfile(cfg.dataset.path):
        pytest.skip(f"{cfg.dataset.path} absent")
    for devices in (1, 2, 4, 8):
        config_checks.validate(cfg, ("certify",), device_count=devices)


def test_certify_pairs_sweep_pairs_sigma_over_sqrt_T():
    from rsc_jax import pipeline, sweep
    sw = config.call_file(os.path.join(config.CONFIG_DIR, "sweeps", "certify_pairs.py"), "get_sweep")
    runs = {r["name"]: r["overrides"] for r in sw["runs"]}
    rsc2 = {(o["coding.sigma"], o["coding.T"]) for o in runs.values() if o["coding.method"] == "rsc2"}
    rsc1 = {(o["coding.sigma"], o["coding.T"]) for o in runs.values() if o["coding.method"] == "rsc1"}
    assert rsc2 == {(0.2, 4), (0.4, 4)} and rsc1 == {(0.1, 4), (0.2, 4)} and len(runs) == 4
    for s, T in rsc2:                               # each RSC-II run has its RSC-I partner at sigma / sqrt(T)
        assert (s / math.sqrt(T), T) in rsc1
        # ... with the same radius for every p_A, hence the same largest certifiable radius
        np.testing.assert_allclose(C.radius([0.6, 0.9, 0.999], sigma=s, coding="rsc2", T=T),
                                   C.radius([0.6, 0.9, 0.999], sigma=s / math.sqrt(T), coding="rsc1", T=T),
                                   rtol=1e-12)
    assert set(pipeline.plan(config.from_file("digits_certify"), sw["modes"])) >= {"train", "certify"}
    for run in sw["runs"]:
        cfg = sweep.run_config(sw, run, seed=0)
        assert (cfg.certify.n, cfg.certify.num_examples, cfg.certify.alpha) == (100_000, -1, 0.001)
        assert cfg.dataset.name == "digits"
        top = C.max_radius(cfg.certify.n, cfg.certify.alpha, sigma=cfg.coding.sigma, coding=cfg.coding.method,
                           T=cfg.coding.T)
        assert max(cfg.certify.radii) >= top        # the grid covers every run's largest radius
        config_checks.validate(cfg, pipeline.plan(cfg, sw["modes"]), device_count=1)


def test_an_ann_is_certified_with_the_steps_it_sees():
    """An ANN sees one step of the coding (``Classifier.encode``), so an RSC-II-coded ANN
    with coding.T = 4 is certified with Cohen et al.'s radius sigma Phi^-1(p_A) (T = 1),
    not RSC-II's sigma Phi^-1(p_A) / 2; a spiking network keeps its T."""
    from rsc_jax.evaluators import certification

    class Fake:
        def __init__(self, spiking):
            self.config = {"model": {"spiking": spiking}, "coding": {"method": "rsc2", "sigma": 0.2, "T": 4}}
    assert certification.coding_of(Fake(False)) == ("rsc2", 0.2, 1)
    assert certification.coding_of(Fake(True)) == ("rsc2", 0.2, 4)
