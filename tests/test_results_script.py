"""scripts/results.py: the numbers docs/RESULTS.md quotes, checked against hand-computed
values (seed means and ddof=0 spreads, QTE restricted to a budget, the Poisson-matched
sigma, E-RSCT steps-to-target with seeds that never reach it) and the plots written."""


import json

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


# --------------------------------------------------------------------------- intervals and paired verdicts


@pytest.fixture(scope="module")
def verdicts():
    return load_script("verdicts")


def _pair(both, a_only, b_only, neither):
    """Correctness strings of runs A and B over the same images: ``both`` right, ``a_only``
    right only in A (b of McNemar), ``b_only`` right only in B (c), ``neither``."""
    a = "1" * both + "1" * a_only + "0" * b_only + "0" * neither
    b = "1" * both + "0" * a_only + "1" * b_only + "0" * neither
    return a, b


def _write_run(root, run, seed, worst, clean=None, worst8=None, attacks=("pgd-50", "square"), legacy=False):
    """A finished sweep run ``root/<run>_seed<seed>/``: robustness.json with a clean row
    and the worst case at 32/255 (and 8/255) from correctness strings; ``legacy`` leaves
    ``correct_avg`` out, as reports written before it existed."""
    d = root / f"{run}_seed{seed}"
    d.mkdir(parents=True)
    n = len(worst)
    clean = clean or "1" * n

    def with_c(rec, s):
        return rec if legacy else dict(rec, correct_avg=s)
    rows = [with_c({"name": "clean", "curve": None, "norm": "linf", "eps": 0.0, "eps_255": 0.0, "n_examples": n,
                    "acc_single": 0.5, "acc_avg": clean.count("1") / n}, clean)]
    wc = [with_c({"eps": e / 255, "eps_255": float(e), "attacks": list(attacks), "acc_single": 0.5,
                  "acc_avg": s.count("1") / n}, s) for e, s in ((8, worst8), (32, worst)) if s is not None]
    (d / "robustness.json").write_text(json.dumps({"n_examples": n, "judge_draws": 10, "results": rows,
                                                   "worst_case": wc}))
    (d / "evaluation.json").write_text(json.dumps({"accuracy": 0.75, "correct": [1, 1, 1, 0], "num_examples": 4}))
    (d / "sweep_done.json").write_text("{}")


def _sweep(*names, seeds=(0,)):
    return {"seeds": list(seeds), "runs": [{"name": n, "overrides": {}} for n in names]}


META = {"poisson_T4": {"coding": "poisson", "sigma": 0.2, "T": 4, "spiking": True},
        "direct_T4": {"coding": "direct", "sigma": 0.2, "T": 4, "spiking": True},
        "ann": {"coding": "direct", "sigma": 0.0, "T": 1, "spiking": False}}


def test_pack_correct_round_trip_and_errors():
    from rsc_jax import metrics
    assert metrics.pack_correct(np.array([1.0, 0.0, 0.0, 1.0], np.float32)) == "1001"
    np.testing.assert_array_equal(metrics.unpack_correct("0110"), [False, True, True, False])
    with pytest.raises(ValueError, match="0/1"):
        metrics.pack_correct([0.5, 1.0])
    with pytest.raises(ValueError, match="0s and 1s"):
        metrics.unpack_correct("01x")


def test_pooled_interval_is_clopper_pearson_of_the_summed_count(verdicts):
    import scipy.stats
    p = verdicts.pooled([{"k": 7, "n": 10}, {"k": 12, "n": 20}])
    assert (p["k"], p["n"], p["acc"]) == (19, 30, pytest.approx(19 / 30))
    # Clopper-Pearson by its beta-quantile form: [B(0.025; k, n-k+1), B(0.975; k+1, n-k)].
    lo, hi = scipy.stats.beta.ppf(0.025, 19, 12), scipy.stats.beta.ppf(0.975, 20, 11)
    assert p["ci95"] == [pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9)]


def test_paired_test_counts_discordant_pairs_pooled_over_seeds(verdicts, tmp_path):
    # Seed 0: b = 5, c = 0 (p = 2 / 2^5 = 0.0625 alone); seed 1 the same: pooled b = 10,
    # c = 0, p = 2 / 2^10. Both runs also have a worst case at 8/255: the test reads 32/255.
    a0, b0 = _pair(3, 5, 0, 2)
    for seed in (0, 1):
        _write_run(tmp_path, "poisson_T4", seed, a0, worst8="1" * 10)
        _write_run(tmp_path, "direct_T4", seed, b0, worst8="0" * 10)
    runs = verdicts.load_runs(str(tmp_path), _sweep("poisson_T4", "direct_T4", seeds=(0, 1)))
    assert sorted(runs["poisson_T4"]) == [0, 1]
    assert runs["poisson_T4"][0]["clean"] == {"k": 3, "n": 4, "correct": None, "attacks": None}
    t = verdicts.paired_test(runs["poisson_T4"], runs["direct_T4"], "worst")
    assert t["metric"] == "worst@32" and t["seeds"] == [0, 1] and t["n"] == 20
    assert (t["b"], t["c"]) == (10, 0)
    assert t["p_value"] == pytest.approx(2 / 2 ** 10)
    assert (t["acc_a"], t["acc_b"]) == (pytest.approx(16 / 20), pytest.approx(6 / 20))
    assert t["ci95_a"] == pytest.approx(list(verdicts.metrics.binomial_interval(16, 20)))
    assert t["per_seed"] == [{"seed": s, "b": 5, "c": 0, "p_value": pytest.approx(0.0625)} for s in (0, 1)]
    assert verdicts.fmt_per_seed(t) == "s0 5:0 (0.062); s1 5:0 (0.062)"
    one = verdicts.paired_test({0: runs["poisson_T4"][0]}, {0: runs["direct_T4"][0]}, "worst")
    assert (one["b"], one["c"], one["p_value"]) == (5, 0, pytest.approx(0.0625))
    assert verdicts.fmt_per_seed(one) == "-"
    assert verdicts.paired_test(runs["poisson_T4"], runs["direct_T4"], "square@8") is None


def _claim(a="poisson_T4", b="direct_T4", metric="worst", direction=">", datasets=("d",), **kw):
    return {"id": "x", "text": "Poisson vs direct", "a": a, "b": b, "metric": {d: metric for d in datasets},
            "direction": direction, "margin": 0.03, "family": "f", "datasets": datasets, "all_of": None,
            "test": "paired", "note": "", **kw}


def test_a_seed_that_points_the_other_way_blocks_holds(verdicts, tmp_path):
    """Seed 0: b = 20, c = 0 (images 4-23 right only in A); seed 1: b = 0, c = 7
    (images 4-10 right only in B: the other way). Per image summed over seeds, d_i = 0
    on images 4-10 and +1 on 11-23: the clustered test is the sign test of 13:0,
    p = 2 / 2^13, which alone would be "holds"; seed 1's own difference is negative, so
    the verdict is "not shown either way" (the earlier pooled test, 20:7, gave
    "inconclusive" here too)."""
    import scipy.stats
    for seed, (b, c) in enumerate([(20, 0), (0, 7)]):
        a_s, b_s = _pair(4, b, c, 3 + (20 - b) + (7 - c))        # 34 images each seed
        _write_run(tmp_path, "poisson_T4", seed, a_s)
        _write_run(tmp_path, "direct_T4", seed, b_s)
    ds = {"d": {"runs": verdicts.load_runs(str(tmp_path), _sweep("poisson_T4", "direct_T4", seeds=(0, 1))),
                "meta": META, "matched": 0.3}}
    v, = verdicts.ledger(ds, [_claim()], n_resamples=500)
    r = v["result"]
    assert r["test"]["statistic"] == 13 and r["test"]["n_informative"] == 13
    assert r["test"]["p_value"] == pytest.approx(scipy.stats.binomtest(13, 13, 0.5).pvalue)
    assert [(s["b"], s["c"]) for s in r["per_seed"]] == [(20, 0), (0, 7)]
    assert v["verdict"] == "not shown either way" and "seed(s) 1 point the other way" in v["reason"]


@pytest.mark.parametrize("cells,direction,verdict", [
    # (b, c) of one seed; the clustered test of one seed is McNemar's: p = 2 P(Bin(b + c, 1/2) >= max(b, c))
    ((10, 1), ">", "holds"),                     # p = 24/2048
    ((1, 10), ">", "does not hold"),
    ((3, 2), ">", "not shown either way"),       # p = 1
    ((3, 2), "=", "not shown either way"),       # 7 + 5 images: the interval is far wider than +-0.03
])
def test_verdict_rules_on_hand_counted_fake_sweeps(verdicts, tmp_path, cells, direction, verdict):
    import scipy.stats
    b, c = cells
    a_s, b_s = _pair(4, b, c, 3)
    _write_run(tmp_path, "poisson_T4", 0, a_s)
    _write_run(tmp_path, "direct_T4", 0, b_s)
    ds = {"d": {"runs": verdicts.load_runs(str(tmp_path), _sweep("poisson_T4", "direct_T4", "ann")),
                "meta": META, "matched": 0.3}}
    v, = verdicts.ledger(ds, [_claim(direction=direction)], n_resamples=500)
    assert v["verdict"] == verdict, v["reason"]
    r = v["result"]
    assert (r["per_seed"][0]["b"], r["per_seed"][0]["c"]) == cells
    assert r["test"]["p_value"] == pytest.approx(scipy.stats.binomtest(b, b + c, 0.5).pvalue)
    assert r["acc_a"] == pytest.approx((4 + b) / (7 + b + c)) and r["acc_b"] == pytest.approx((4 + c) / (7 + b + c))
    assert v["family_size"] == (2 if direction == "=" else 1)
    lines = "\n".join(verdicts.ledger_lines([v]))
    assert f"**{verdict}**" in lines and f"({b}:{c})" in lines


def test_old_reports_without_correct_avg_are_not_run_never_guessed(verdicts, tmp_path):
    # A hugely significant difference in the means (1.0 vs 0.0) but no per-example results.
    _write_run(tmp_path, "poisson_T4", 0, "1" * 20, legacy=True)
    _write_run(tmp_path, "direct_T4", 0, "0" * 20)
    ds = {"d": {"runs": verdicts.load_runs(str(tmp_path), _sweep("poisson_T4", "direct_T4")), "meta": META,
                "matched": 0.3}}
    v, = verdicts.ledger(ds, [_claim()])
    assert v["verdict"] == "not run" and v["result"] is None and "no per-image results" in v["reason"]
    assert "no per-image results" in "\n".join(verdicts.ledger_lines([v]))
    # a claim on a run the data set lacks, and on a data set that did not run
    v, = verdicts.ledger(ds, [_claim("rsc1_sigma0.2_T4", "ann")])
    assert v["verdict"] == "not run" and "rsc1_sigma0.2_T4" in v["reason"]
    v, = verdicts.ledger(ds, [_claim(datasets=("e",))], absent={"e": "not on this machine"})
    assert (v["verdict"], v["reason"]) == ("not run", "not on this machine")
    with pytest.raises(ValueError, match="direction"):
        verdicts.decide([], "<")


def test_claim_runs_resolve_to_the_sigma_grid(verdicts):
    meta = {f"rsc2_sigma{s}_T4": {"coding": "rsc2", "sigma": s, "T": 4, "spiking": True} for s in (0.1, 0.2, 0.5)}
    meta["rsc2_sigma0.05_T8"] = {"coding": "rsc2", "sigma": 0.05, "T": 8, "spiking": True}
    assert verdicts.pick_run("rsc2@min", meta, 0.3) == "rsc2_sigma0.1_T4"          # T = 8 left out
    assert verdicts.pick_run("rsc2@max", meta, 0.3) == "rsc2_sigma0.5_T4"
    assert verdicts.pick_run("rsc2@matched", meta, 0.431) == "rsc2_sigma0.5_T4"
    assert verdicts.pick_run("rsc2@matched", meta, 0.136) == "rsc2_sigma0.1_T4"
    assert verdicts.pick_run("rsc1@min", meta, 0.3) is None and verdicts.pick_run("ann", meta, 0.3) is None
    claims = verdicts.load_claims()
    ids = [c["id"] for c in claims]
    assert len(ids) == len(set(ids)) and {c["direction"] for c in claims} == {">", "="}
    # radii and budgets are fixed in the claims file: every certified claim at r = 0.25
    assert {m for c in claims for m in c["metric"].values() if m.startswith("cert@")} == {"cert@0.25"}


def test_tables_carry_intervals_and_verdicts(results, verdicts, tmp_path):
    a_s, b_s = _pair(4, 10, 1, 5)
    _write_run(tmp_path, "poisson_T4", 0, a_s, clean="1" * 18 + "00")
    _write_run(tmp_path, "direct_T4", 0, b_s)
    runs = verdicts.load_runs(str(tmp_path), _sweep("poisson_T4", "direct_T4"))
    ints = {"digits": verdicts.intervals(runs)}
    assert ints["digits"]["poisson_T4"]["clean_attacked"]["k"] == 18
    assert ints["digits"]["poisson_T4"]["clean"]["k"] == 3                          # evaluation.json, 1 draw
    rows = [{"run": r, "seed": 0, **META[r], "clean": 0.75, "worst@32": 0.5} for r in ("poisson_T4", "direct_T4")]
    aggs = {"digits": results.aggregate(rows)}
    vs = verdicts.ledger({"digits": {"runs": runs, "meta": aggs["digits"], "matched": 0.27}},
                         verdicts.load_claims(families=("sweeps",)), n_resamples=500)
    by_id = {(v["id"], v["dataset"]): v for v in vs}
    assert by_id["1a", "digits"]["verdict"] == "holds"                            # 10:1, family of 1 that ran
    assert by_id["1b", "digits"]["verdict"] == "not run" and by_id["1a", "mnist"]["verdict"] == "not run"
    md = "\n".join(results.markdown(aggs, {"digits": 0.27}, ints, {}, {}, vs))
    lo, hi = verdicts.metrics.binomial_interval(3, 4)
    assert f"| poisson_T4 | 1 | 0.750 [{lo:.3f}, {hi:.3f}] |" in md             # clean, count known
    lo, hi = verdicts.metrics.binomial_interval(14, 20)
    assert f"0.700 [{lo:.3f}, {hi:.3f}]" in md                                    # worst@32, M-averaged
    assert "| 1a | digits | poisson_T4 > direct_T4 (worst@32) | 1 x 20 |" in md and "test 0.012 -> 0.012" in md
    json.dumps({"intervals": ints, "verdicts": vs})                               # summary.json can hold them


def test_ersct_intervals_pool_counts_over_seeds(results):
    def study(seed, pgd7_k, clean_k, recorded=True):
        run = {"reached": None, "final_clean_accuracy": clean_k / 8, "pgd7_accuracy": pgd7_k / 4, "train_seconds": 1.0}
        if recorded:                  # the counts and per-example strings newer studies write
            run.update(final_clean_k=clean_k, final_clean_correct="1" * clean_k + "0" * (8 - clean_k),
                       pgd7_k=pgd7_k, pgd7_correct="1" * pgd7_k + "0" * (4 - pgd7_k))
        return {"seed": seed, "target": 0.9, "attack_examples": 4, "runs": {"ersct": run}}
    t = results.ersct_table([study(0, 1, 6), study(1, 3, 7)])["ersct"]
    assert (t["pgd7_ci95"]["k"], t["pgd7_ci95"]["n"]) == (4, 8)
    assert (t["final_clean_ci95"]["k"], t["final_clean_ci95"]["n"]) == (13, 16)
    assert t["final_clean_ci95"]["ci95"] == pytest.approx(list(results.metrics.binomial_interval(13, 16)))
    old = results.ersct_table([study(0, 1, 6, recorded=False), study(1, 3, 7, recorded=False)])["ersct"]
    assert old["final_clean_ci95"] is None                   # n of the final clean test set unknown
    assert (old["pgd7_ci95"]["k"], old["pgd7_ci95"]["n"]) == (4, 8)   # round(acc x attack_examples)
    md = "\n".join(results.markdown({}, {}, {}, {"digits": {"ersct": t}}, {"digits": 2}, []))
    lo, hi = results.metrics.binomial_interval(4, 8)
    assert f"0.500 ± 0.250 [{lo:.3f}, {hi:.3f}]" in md


# --------------------------------------------------------------------------- controlled sweeps


def test_controlled_ledger_from_runs_and_from_its_json(tmp_path):
    """scripts/controlled.py on a fake digits_controlled sweep with two seeds: c1 (worst
    case) and k1 (certified accuracy, "=") by the clustered test on hand-chosen images;
    the JSON keeps the per-image strings, so ``--from_json`` gives the same ledger with
    the runs gone; RESULTS.md and README blocks are written from the JSON."""
    import shutil
    ctl = load_script("controlled")
    root = tmp_path / "sweeps" / "digits_controlled"
    a, b = _pair(4, 14, 1, 1)                    # c1 per seed: b = 14, c = 1 on the same images
    for seed in (0, 1):
        _write_run(root, "rsc1_sigma0.2_T4", seed, a)
        _write_run(root, "poisson_T4", seed, b)
    radii_a = [0.3] * 10 + [0.1] * 10            # cert@0.25: first 10 certified in A
    radii_b = [0.3] * 2 + [0.0] * 18             # ... first 2 in B
    for run, radii in (("rsc2_sigma0.2_T4", radii_a), ("rsc1_sigma0.1_T4", radii_b)):
        _write_run(root, run, 0, "1" * 20)
        (root / f"{run}_seed0" / "certify.jsonl").write_text("".join(
            json.dumps({"radius": r, "correct": i != 0 or run.startswith("rsc1")}) + "\n"
            for i, r in enumerate(radii)))
    # a huge-budget check, and its re-check by scripts/recheck.py
    rob = root / "rsc1_sigma0.2_T4_seed0" / "robustness.json"
    sanity = lambda acc, eot, status: ({"name": "huge-budget", "status": status, "acc": acc},
                                       {"name": "sanity-pgd", "eot": eot, "eps": 64 / 255, "norm": "linf"})
    c, r = sanity(0.0631, 1, "FLAG")
    rob.write_text(json.dumps(dict(json.loads(rob.read_text()), checks=[c])))
    (rob.parent / "sanity_recheck").mkdir()
    c2, r2 = sanity(0.0, 10, "pass")
    (rob.parent / "sanity_recheck" / "robustness.json").write_text(json.dumps({"checks": [c2], "results": [r2]}))
    out = tmp_path / "out"
    res, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    res.write_text("intro\n<!-- controlled-table -->\nSTALE\n<!-- /controlled-table -->\nmiddle\n"
                   "<!-- controlled-noise -->\n<!-- /controlled-noise -->\n"
                   "<!-- controlled-verdicts -->\n<!-- /controlled-verdicts -->\nend\n")
    readme.write_text("a\n<!-- claims-summary -->\nold words\n<!-- /claims-summary -->\nb\n")
    args = ["--out", str(out), "--results_md", str(res), "--readme", str(readme), "--n_resamples", "500"]
    assert ctl.main(["--sweeps", str(tmp_path / "sweeps"), *args]) == 0
    summary = json.loads((out / "controlled.json").read_text())
    assert summary["per_image"]["digits"]["poisson_T4"]["1"]["worst@32"] == b
    rows = {(v["id"], v["dataset"]): v for v in summary["ledger"]}
    c1 = rows["c1", "digits"]
    # two seeds that agree image by image: d_i = +2 on 14 images, -2 on 1: the sign test of
    # 14:1, p = 2 x 16 / 2^15 (not 28:2 as pooling would count them)
    assert c1["result"]["test"]["statistic"] == 26 and c1["result"]["test"]["p_value"] == pytest.approx(2 ** -10)
    assert c1["result"]["diff"] == pytest.approx(26 / 40)
    # Holm over the controlled family on digits: the 9 p-values of c1, c8, c9, k1 (TOST and
    # the larger-difference test each), c11, c12 (the runs they need exist); c1's is the
    # smallest: x 9
    assert c1["family_size"] == 9 and c1["p_adjusted"][0] == pytest.approx(9 * 2 ** -10)
    assert c1["verdict"] == "holds"
    # cert@0.25 (seed 0): A certifies examples 1-9, B examples 0, 1: 8:1, p = 20/512; 7 points apart
    k1 = rows["k1", "digits"]
    assert (k1["result"]["per_seed"][0]["b"], k1["result"]["per_seed"][0]["c"]) == (8, 1)
    assert k1["result"]["test"]["p_value"] == pytest.approx(20 / 512)
    assert k1["verdict"] == "not shown either way"
    assert rows["c7", "digits"]["verdict"] == "not run" and "ann_poisson_mean4" in rows["c7", "digits"]["reason"]
    assert rows["c1", "mnist"]["verdict"] == "not run" and rows["noise", "digits"]["verdict"] == "not run"
    md = (out / "controlled.md").read_text()
    assert "| s0: pass (0.000, EOT-10); rechecked, was FLAG (0.063, EOT-1); s1: - |" in md and "Attack preset" in md
    # the noise table: the Poisson SNN's time average against the 4-frame ANN (x(1-x)/4), matched
    assert "| c7, n1 | poisson_T4 (T = 4) | sqrt(x(1-x)/4) = 0.133 | ann_poisson_mean4 |" in md
    text = res.read_text()
    assert text.startswith("intro\n<!-- controlled-table -->\nAccuracy of the 10-draw-averaged logits")
    assert "STALE" not in text and "\nmiddle\n" in text and text.endswith("<!-- /controlled-verdicts -->\nend\n")
    assert "| RSC-I sigma 0.2 | 0,1 | 1.000 [0.912, 1.000] |" in text      # 40/40: lower 0.025 ** (1/40)
    assert "| 0.900 / 0.900 |" in text                                     # worst case per seed: 18/20 each
    assert "| c1 | digits | rsc1_sigma0.2_T4 > poisson_T4 (worst@32) | 2 x 20 |" in text and "**holds**" in text
    assert "| c6, n3 | rsc1_sigma0.2_T4 (T = 4) | sigma = 0.2 |" in text
    summ = readme.read_text()
    assert summ.startswith("a\n<!-- claims-summary -->\nVerdicts of the pre-registered claims on digits")
    assert "holds: c1 (+0.650 [" in summ and "not run: " in summ and "old words" not in summ
    # the runs gone: the same ledger from the committed JSON
    shutil.rmtree(tmp_path / "sweeps")
    shutil.copy(out / "controlled.json", tmp_path / "kept.json")
    assert ctl.main(["--from_json", str(tmp_path / "kept.json"), *args]) == 0
    again = json.loads((out / "controlled.json").read_text())
    assert again["ledger"] == summary["ledger"] and res.read_text() == text and readme.read_text() == summ
    # a missing marker: one line, the files untouched
    res.write_text("no markers\n")
    assert ctl.main(["--from_json", str(tmp_path / "kept.json"), *args]) == 1
    assert res.read_text() == "no markers\n"
    assert ctl.main(["--from_json", str(tmp_path / "absent.json"), "--out", str(out)]) == 1


def test_committed_docs_carry_the_ledger_of_the_committed_json():
    """No verdict word typed by hand: docs/RESULTS.md's generated blocks and the README's
    claims summary are exactly what scripts/controlled.py renders from the committed
    docs/results/controlled.json (regenerate with its --from_json command)."""
    from tests.helpers import ROOT
    import os
    ctl = load_script("controlled")
    summary = json.loads(open(os.path.join(ROOT, "docs", "results", "controlled.json")).read())
    blocks = {**ctl.headline_blocks(summary, "digits"), "claims-summary": ctl.readme_block(summary, "digits")}
    for name, path in (("controlled-table", "docs/RESULTS.md"), ("controlled-noise", "docs/RESULTS.md"),
                       ("controlled-verdicts", "docs/RESULTS.md"), ("claims-summary", "README.md")):
        text = open(os.path.join(ROOT, path)).read()
        block = text[text.index(f"<!-- {name} -->") + len(f"<!-- {name} -->\n"):text.index(f"<!-- /{name} -->")]
        assert block == blocks[name] + "\n", (path, name)
    words = {"holds", "does not hold", "alike", "not shown either way", "not run"}
    assert {r["verdict"] for r in summary["ledger"]} <= words


def test_composite_claim_needs_every_part_alike(verdicts):
    part = lambda i, v: {"id": i, "verdict": v}
    assert verdicts._compose([part("n1", "alike"), part("n2", "alike")])[0] == "holds"
    assert verdicts._compose([part("n1", "alike"), part("n2", "does not hold")]) == ("does not hold",
                                                                                    "shown not alike: n2")
    assert verdicts._compose([part("n1", "alike"), part("n2", "not shown either way")])[0] == "not shown either way"
    assert verdicts._compose([part("n1", "not run"), part("n2", "does not hold")])[0] == "not run"
