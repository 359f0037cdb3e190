"""scripts/results.py: the numbers docs/RESULTS.md quotes, checked against hand-computed
values (seed means and ddof=0 spreads, QTE restricted to a budget, the Poisson-matched
sigma, E-RSCT steps-to-target with seeds that never reach it) and the plots written."""


import numpy as np
import pytest

from tests.helpers import load_script



@pytest.fixture(scope="module")
def results():
    return load_script("results")


def _row(run, seed, clean, pgd_acc, **extra):
    eta = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]
    return {"run": run, "seed": seed, "coding": "rsc2", "sigma": 0.2, "T": 4, "spiking": True,
            "clean": clean, "pgd-7@8": pgd_acc[-1], "curve_pgd": {"eta": eta, "acc": list(pgd_acc)},
            "curve_pgd-l2": {"eta": [0.0, 0.25, 0.5, 1.0], "acc": [0.9, 0.6, 0.4 + 0.1 * seed, 0.1]}, **extra}


def test_matched_sigma_is_the_root_mean_bernoulli_variance(results):
    assert results.matched_sigma(np.zeros((3, 4, 4), np.uint8)) == 0.0
    assert results.matched_sigma(np.full((2, 5), 255, np.uint8)) == 0.0
    # Half the pixels at 51/255 = 0.2 (variance 0.16), half at 0: sqrt(0.08).
    img = np.array([[51, 0], [0, 51]], np.uint8)
    assert results.matched_sigma(img) == pytest.approx(np.sqrt(0.08), rel=1e-12)


def test_aggregate_means_spreads_curves_and_budgeted_qte(results):
    rows = [_row("rsc2_sigma0.2_T4", 0, 0.5, [0.5, 0.4, 0.3, 0.2, 0.1], certified={"0.1": 0.5, "0.25": 0.0}),
            _row("rsc2_sigma0.2_T4", 1, 0.7, [0.7, 0.6, 0.5, 0.4, 0.3], certified={"0.1": 0.7, "0.25": 0.2}),
            {"run": "ann", "seed": 0, "coding": "direct", "sigma": 0.0, "T": 1, "spiking": False, "clean": 0.9}]
    agg = results.aggregate(rows)
    a = agg["rsc2_sigma0.2_T4"]
    assert a["seeds"] == [0, 1]
    mean, std, n = a["clean"]
    assert (mean, n) == (pytest.approx(0.6), 2) and std == pytest.approx(0.1)      # numpy std, ddof = 0
    np.testing.assert_allclose(a["curve_pgd"]["acc"], [0.6, 0.5, 0.4, 0.3, 0.2])
    # QTE over [0, 8/255] of seed 0 by hand: trapezoids on the grid 0, 1, 2, 4, 8 (x 1/255).
    q0 = (1 * (0.5 + 0.4) / 2 + 1 * (0.4 + 0.3) / 2 + 2 * (0.3 + 0.2) / 2 + 4 * (0.2 + 0.1) / 2) / 8
    # Seed 1 is seed 0 shifted up by 0.2, so its QTE is q0 + 0.2: mean q0 + 0.1, spread 0.1.
    assert a["qte8"][:2] == (pytest.approx(q0 + 0.1), pytest.approx(0.1))
    assert a["l2@0.5"][0] == pytest.approx(0.45)
    assert a["certified"] == {"0.1": pytest.approx(0.6), "0.25": pytest.approx(0.1)}
    assert a["qte_fgsm32"] is None                          # no FGSM curve reaching 32/255
    assert agg["ann"]["clean"] == (0.9, 0.0, 1) and agg["ann"]["qte8"] is None
    lines = results.table(agg)
    assert "| rsc2_sigma0.2_T4 | 2 | 0.600 ± 0.100 |" in lines[2] and "| ann | 1 | 0.900 |" in lines[3]


def test_qte_is_left_out_when_the_grid_stops_short_of_the_budget(results):
    row = {"curve_fgsm": {"eta": [0.0, 4 / 255, 8 / 255], "acc": [1.0, 0.5, 0.0]}}
    assert results._qte_upto(row, 32 / 255, "curve_fgsm") is None
    assert results._qte_upto(row, 8 / 255, "curve_fgsm") == pytest.approx(0.5)
    assert results._qte_upto(row, 4 / 255, "curve_fgsm") == pytest.approx(0.75)


def test_ersct_table_leaves_unreached_seeds_out_of_the_mean_and_counts_them(results):
    def study(seed, plain_step):
        reached = {"step": plain_step, "train_seconds": 2.0 * plain_step} if plain_step else None
        return {"seed": seed, "target": 0.95, "runs": {
            "plain RSC": {"reached": reached, "final_clean_accuracy": 0.9, "pgd7_accuracy": 0.8, "train_seconds": 10.0},
            "E-RSCT": {"reached": {"step": 10 * (seed + 1), "train_seconds": 5.0}, "final_clean_accuracy": 0.96,
                       "pgd7_accuracy": 0.9, "train_seconds": 20.0 + seed}}}
    t = results.ersct_table([study(0, 40), study(1, None), study(2, 60)])
    assert t["plain RSC"]["steps_to_target"] == (50.0, 10.0, 2) and t["plain RSC"]["not_reached"] == 1
    assert t["E-RSCT"]["steps_to_target"][0] == pytest.approx(20.0) and t["E-RSCT"]["not_reached"] == 0
    assert t["E-RSCT"]["train_seconds"][:2] == (pytest.approx(21.0), pytest.approx(np.sqrt(2 / 3)))
    assert t["plain RSC"]["seeds"] == [0, 1, 2]


@pytest.mark.filterwarnings("error:No artists with labels")      # empty panels get no legend
def test_plots_are_written_for_a_partial_sweep(results, tmp_path):
    rows = [_row(f"rsc{c}_sigma{s}_T4", 0, 0.8 - s, [0.8 - s, 0.6, 0.5, 0.4, 0.3], coding=f"rsc{c}", sigma=s,
                 **{"worst@8": 0.3 - s / 2, "certified": {"0.0": 0.8 - s, "0.25": 0.5 - s}})
            for c in (1, 2) for s in (0.1, 0.3)]
    aggs = {"cifar10": results.aggregate(rows), "digits": {}}
    written = results.plots(str(tmp_path), aggs, {"cifar10": 0.43, "digits": 0.27}, {})
    assert written == ["eps_curves.png", "sigma_tradeoff.png", "qte_sigma.png", "certified.png"]
    for f in written:
        with open(tmp_path / f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
