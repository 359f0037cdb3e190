"""rsc_jax.stats: the clustered test, the hierarchical bootstrap, Holm, TOST and the
verdict rules against hand-computed cases and scipy."""

import json
import math

import numpy as np
import pytest
import scipy.stats

from rsc_jax import stats


def _cells(both, a_only, b_only, neither):
    a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
    b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
    return np.array(a, bool), np.array(b, bool)


def test_one_seed_clustered_test_is_the_exact_mcnemar_test():
    a, b = _cells(5, 9, 2, 4)
    t = stats.clustered_test(a, b)
    assert t["method"] == "exact" and t["statistic"] == 7 and t["n_informative"] == 11
    assert t["p_value"] == pytest.approx(scipy.stats.binomtest(9, 11, 0.5).pvalue, rel=1e-12)
    assert t["p_greater"] == pytest.approx(scipy.stats.binomtest(9, 11, 0.5, alternative="greater").pvalue)
    # no discordant image: nothing to test
    assert stats.clustered_test(a, a)["p_value"] == 1.0


def test_clustered_test_by_hand_on_three_images():
    # d = (2, 1, 1) over two seeds: T = 4; the 8 sign patterns give T in
    # {4, 2, 2, 0, 0, -2, -2, -4}: P(|T| >= 4) = 2/8, P(T >= 4) = 1/8.
    a = np.array([[1, 1, 0], [1, 0, 1]])
    b = np.array([[0, 0, 0], [0, 0, 0]])
    t = stats.clustered_test(a, b)
    assert t["statistic"] == 4 and t["diff"] == pytest.approx(4 / 6)
    assert t["p_value"] == pytest.approx(0.25) and t["p_greater"] == pytest.approx(0.125)


def test_clustered_test_matches_scipy_sign_flip_permutation_test():
    rng = np.random.default_rng(3)
    a = rng.random((3, 14)) < 0.7
    b = rng.random((3, 14)) < 0.4
    d = (a.astype(int) - b.astype(int)).sum(0)
    ref = scipy.stats.permutation_test((d,), lambda x, axis: np.sum(x, axis=axis), permutation_type="samples",
                                       n_resamples=np.inf, alternative="two-sided")
    t = stats.clustered_test(a, b, method="exact")
    assert t["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    mc = stats.clustered_test(a, b, method="monte_carlo", n_resamples=20_000, seed=1)
    assert mc["method"] == "monte_carlo" and mc["p_value"] == pytest.approx(ref.pvalue, abs=0.01)
    assert mc == stats.clustered_test(a, b, method="monte_carlo", n_resamples=20_000, seed=1)   # seeded


def test_pooling_rejects_where_the_image_clustered_test_does_not():
    """The same 12 images three times (three seeds that agree image by image, 8 images
    only A gets right, 2 only B): pooled McNemar sees b = 24, c = 6 as 30 independent
    pairs (p = 0.0014); clustered on images, d_i = 3 on 8 images and -3 on 2, which is
    the one-seed test of b = 8, c = 2 (p = 0.11): the repeats add no evidence."""
    a1, b1 = _cells(0, 8, 2, 2)
    a, b = np.stack([a1] * 3), np.stack([b1] * 3)
    pooled = stats.mcnemar_exact(a.ravel(), b.ravel())
    assert (pooled["b"], pooled["c"]) == (24, 6) and pooled["p_value"] < 0.01
    t = stats.clustered_test(a, b)
    assert t["p_value"] == pytest.approx(scipy.stats.binomtest(8, 10, 0.5).pvalue) and t["p_value"] > 0.05
    r = stats.compare(a, b, n_resamples=2000)
    v = stats.decide(r)
    assert v[0] == stats.UNSHOWN, v


def test_hierarchical_bootstrap_hand_cases_and_scipy():
    # one seed, D = (1, 0): the resampled mean is 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4
    r = stats.hierarchical_bootstrap([1, 0], [0, 0], n_resamples=20_000, seed=0, return_draws=True)
    vals, counts = np.unique(r["draws"], return_counts=True)
    assert vals.tolist() == [0.0, 0.5, 1.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.015)
    assert r["diff"] == 0.5 and r["ci"] == [0.0, 1.0]
    # two seeds of one image, D = +1 on seed 0, -1 on seed 1: the seed stage alone moves it
    r = stats.hierarchical_bootstrap([[1], [0]], [[0], [1]], n_resamples=20_000, seed=0, return_draws=True)
    vals, counts = np.unique(r["draws"], return_counts=True)
    assert vals.tolist() == [-1.0, 0.0, 1.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.015)
    # one seed: the percentile interval of scipy's bootstrap of the mean
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.6, rng.random(200) < 0.5
    ours = stats.hierarchical_bootstrap(a, b, n_resamples=20_000, seed=1)["ci"]
    ref = scipy.stats.bootstrap((a.astype(float) - b,), np.mean, n_resamples=20_000, method="percentile",
                                random_state=2).confidence_interval
    assert ours == pytest.approx([ref.low, ref.high], abs=0.012)
    assert stats.hierarchical_bootstrap(a, b, n_resamples=500, seed=3) == stats.hierarchical_bootstrap(
        a, b, n_resamples=500, seed=3)


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.5 with m = 4: 0.04, 0.06, max(0.06, 0.06) = 0.06, 1.0 -> 0.5 x 1
    assert stats.holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert stats.holm([0.04, 0.9]) == pytest.approx([0.08, 0.9])
    assert stats.holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])       # monotone: max with the previous
    with pytest.raises(ValueError, match="pvalues"):
        stats.holm([0.1, float("nan")])


def test_tost_by_hand():
    draws = [-0.02, -0.01, 0.0, 0.01, 0.04]
    t = stats.tost(draws, 0.03)
    # below -0.03: none -> (1 + 0) / 6; above +0.03: one -> (1 + 1) / 6
    assert (t["p_lower"], t["p_upper"], t["p_value"]) == pytest.approx((1 / 6, 2 / 6, 2 / 6))
    # larger than the margin: (1 + #{<= 0.03}) / 6 = 5/6 and (1 + #{>= -0.03}) / 6 = 1: 2 x 5/6, capped
    assert t["p_differ"] == 1.0
    t = stats.tost(np.linspace(-0.01, 0.01, 99), 0.03)
    assert t["p_value"] == pytest.approx(0.01) and t["p_differ"] == 1.0
    t = stats.tost(np.linspace(0.05, 0.07, 99), 0.03)      # all beyond +0.03: 2 x (1 + 0) / 100
    assert t["p_differ"] == pytest.approx(0.02) and t["p_value"] == 1.0
    with pytest.raises(ValueError, match="margin"):
        stats.tost(draws, 0.0)


def test_verdict_rules():
    rng = np.random.default_rng(0)
    base = rng.random((3, 300)) < 0.5
    better = base | (rng.random((3, 300)) < 0.4)
    r = stats.compare(better, base, n_resamples=2000)
    assert stats.decide(r)[0] == stats.HOLDS
    assert stats.decide(stats.compare(base, better, n_resamples=2000))[0] == stats.FAILS
    # a seed pointing the other way blocks "holds"
    b2 = better.copy()
    b2[2] = base[2] & (rng.random(300) < 0.8)
    r2 = stats.compare(b2, base, n_resamples=2000)
    assert r2["per_seed"][2]["diff"] < 0 and r2["test"]["p_value"] < 0.05
    v, why = stats.decide(r2)
    assert v == stats.UNSHOWN and "seed(s) 2 point the other way" in why
    # alike only by TOST: identical runs are alike within 3 points; a 1-image-per-seed
    # difference on 10 images is not shown either way
    same = stats.compare(base, base, direction="=", n_resamples=2000)
    assert stats.decide(same)[0] == stats.ALIKE
    few_a, few_b = _cells(5, 1, 0, 4)
    small = stats.compare(np.stack([few_a] * 3), np.stack([few_b] * 3), direction="=", n_resamples=2000)
    assert stats.decide(small)[0] == stats.UNSHOWN
    # 20 points apart is shown to exceed the 3-point margin: "alike" does not hold
    apart = stats.compare(better, base, direction="=", n_resamples=2000)
    assert apart["diff"] > 0.15 and stats.decide(apart)[0] == stats.FAILS
    # Holm over a family: p = 0.03 alone rejects, not beside a second test at 0.04
    fam = stats.decide_family([None, r, same])
    assert fam[0]["verdict"] == stats.NOT_RUN and fam[1]["family_size"] == 3
    with pytest.raises(ValueError, match="direction"):
        stats.compare(base, base, direction="<")


def test_compare_reports_from_robustness_files(tmp_path):
    def write(name, worst, clean):
        p = tmp_path / name
        p.write_text(json.dumps({"n_examples": len(worst), "results": [
            {"name": "clean", "norm": "linf", "eps": 0.0, "eps_255": 0.0, "acc_avg": 1.0,
             "correct_avg": clean}], "worst_case": [
            {"eps_255": 8.0, "attacks": ["apgd-ce"], "acc_avg": 0.5, "correct_avg": worst}],
            "worst_case_common": [{"eps_255": 8.0, "attacks": ["apgd-ce"], "acc_avg": 1.0, "correct_avg": clean}]}))
        return str(p)
    a = [write(f"a{s}.json", "1" * 30 + "0" * 10, "1" * 40) for s in range(2)]
    b = [write(f"b{s}.json", "1" * 10 + "0" * 30, "1" * 40) for s in range(2)]
    r = stats.compare_reports(a, b, "worst", n_resamples=1000)
    assert r["metric"] == "worst@8" and r["verdict"] == stats.HOLDS
    assert r["test"]["statistic"] == 40 and r["diff"] == pytest.approx(0.5)
    assert r["test"]["p_value"] == pytest.approx(2 * 0.5 ** 20)
    assert stats.compare_reports(a, b, "clean_attacked", direction="=", n_resamples=1000)["verdict"] == stats.ALIKE
    assert stats.compare_reports(a, b, "worst_common@8", n_resamples=100)["test"]["statistic"] == 0
    with pytest.raises(ValueError, match="no metric 'square@8'"):
        stats.compare_reports(a, b, "square@8")
    with pytest.raises(ValueError, match="paths_a has 2 files and paths_b 1"):
        stats.compare_reports(a, b[:1], "worst")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json: not a readable robustness.json"):
        stats.compare_reports(str(bad), b[0], "worst")
    assert math.isclose(stats.clopper_pearson(0, 10)[1], 1 - 0.025 ** 0.1)
