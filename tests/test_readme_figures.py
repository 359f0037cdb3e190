"""The README's digits figures: generated from a report, kept in sync, intervals by hand."""

from __future__ import annotations

import json

import pytest
import scipy.stats

from rsc_jax import metrics
from tests.helpers import load_script

rf = load_script("readme_figures")


def test_readme_table_is_the_committed_figures():
    """Fails when README.md's table drifts from docs/results/digits_demo.json (regenerate
    both with `python scripts/readme_figures.py --report=runs/digits/report.json`)."""
    assert rf.check(), "README figures differ from docs/results/digits_demo.json"


def test_committed_figures_carry_exact_intervals():
    with open(rf.FIGURES) as f:
        fig = json.load(f)
    assert fig["preset"] in ("quick", "rand", "default", "custom") and fig["machine"] and fig["date"]
    for r in fig["rows"]:
        low, high = scipy.stats.binomtest(r["k"], r["n"]).proportion_ci(method="exact")
        assert (r["low"], r["high"]) == pytest.approx((low, high), abs=1e-12), r["label"]
        assert r["low"] <= r["value"] == r["k"] / r["n"] <= r["high"]


def _report(acc_clean=0.95, pgd=0.5, worst=0.4):
    rows = [{"name": "pgd-7", "norm": "linf", "eps_255": 8.0, "eps": 8 / 255, "steps": 7, "acc_avg": pgd},
            {"name": "pgd-7-l2", "norm": "l2", "eps": 0.5, "steps": 7, "acc_avg": 0.25},
            {"name": "pgd-7-l2", "norm": "l2", "eps": 1.0, "steps": 7, "acc_avg": 0.0}]
    return {"evaluation": {"num_examples": 20, "draws": 10, "accuracy": acc_clean, "accuracy_avg10": 1.0},
            "robustness": {"n_examples": 8, "judge_draws": 4, "config": {"steps": 7, "quick": True},
                           "results": rows, "worst_case": [{"eps_255": 8.0, "attacks": ["pgd-7"], "acc_avg": worst}]},
            "certification": {"settings": {"n": 100, "alpha": 0.001, "num_examples": 10},
                              "radii": [0.0, 0.1, 0.25], "certified_accuracy": [1.0, 0.7, 0.3]}}


def test_figures_from_a_report_by_hand():
    rows = {r["label"]: r for r in rf.figures(_report())["rows"]}
    clean = rows["clean accuracy, 1 draw"]
    assert (clean["k"], clean["n"]) == (19, 20)
    assert (clean["low"], clean["high"]) == pytest.approx((0.75127, 0.99873), abs=1e-5)   # exact CP, 19 of 20
    assert rows["PGD-7, l_inf eps 8/255 (4-draw average)"]["k"] == 4
    worst = rows["worst case over every l_inf attack at 8/255 (4-draw average)"]
    assert worst["value"] == pytest.approx(0.375) and worst["attacks"] == ["pgd-7"]
    cert = rows["certified accuracy at l_2 radius 0.25 (n = 100, alpha = 0.001)"]
    assert (cert["k"], cert["n"]) == (3, 10)
    assert (cert["low"], cert["high"]) == metrics.binomial_interval(3, 10)
    assert rf.figures(_report())["preset"] == "quick"


def test_compare_says_which_rows_fall_outside(tmp_path, monkeypatch):
    fig = rf.figures(_report())
    fig.update(machine="m", date="d")
    path = tmp_path / "fig.json"
    path.write_text(json.dumps(fig))
    monkeypatch.setattr(rf, "FIGURES", str(path))
    new = tmp_path / "report.json"
    new.write_text(json.dumps(_report(acc_clean=0.9, pgd=1.0)))
    out = {r["label"]: r["inside"] for r in rf.compare(str(new))}
    assert out["clean accuracy, 1 draw"] is True            # 18/20 lies in [0.751, 0.999]
    assert out["PGD-7, l_inf eps 8/255 (4-draw average)"] is False   # 8/8 lies outside [0.157, 0.843]


def test_binomial_interval_bad_input():
    for k, n in [(3, 0), (-1, 5), (6, 5), (1.5, 5)]:
        with pytest.raises(ValueError, match="0 <= k <= n"):
            metrics.binomial_interval(k, n)
    with pytest.raises(ValueError, match="level=1.0"):
        metrics.binomial_interval(1, 2, level=1.0)


def test_mcnemar_exact_by_hand():
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    r = metrics.mcnemar_exact(a, b)
    assert (r["b"], r["c"]) == (10, 2) and r["diff"] == pytest.approx(8 / 17)
    # two-sided exact binomial: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert r["p_value"] == pytest.approx(2 * 79 / 4096)
    assert metrics.mcnemar_exact([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError, match="same N"):
        metrics.mcnemar_exact([True], [True, False])
