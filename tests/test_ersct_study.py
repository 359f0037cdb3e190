"""scripts/ersct_study.py: the arms (plain from scratch, plain from the teacher's weights,
E-RSCT, KD only, alignment only), their intervals and the paired McNemar comparisons,
on a tiny digits run."""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest
import scipy.stats

from rsc_jax import distill, losses, metrics
from tests.helpers import load_script, tiny_digits_config

study = load_script("ersct_study")


@pytest.fixture(scope="module")
def ran():
    c = tiny_digits_config(batch_size=64, checkpoint_every=1000, log_every=22)   # teacher: 1 epoch, 22 steps
    c.distill.teacher_epochs = 1
    result, objects = study.run_study(c, target=0.3, eval_every=2, eval_examples=60, attack_examples=24,
                                      steps=4, config_path="configs/digits.py")
    return json.loads(json.dumps(result)), objects          # what the JSON file holds


def _flat(tree):
    return {losses.path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_ersct_study_runs_every_arm_with_the_same_budget(ran):
    result, _ = ran
    assert result["arms"] == list(study.ARMS) and list(result["runs"]) == list(study.ARMS)
    runs = result["runs"]
    assert {r["steps"] for r in runs.values()} == {4}
    assert all([p["step"] for p in r["curve"]] == [0, 2, 4] for r in runs.values())
    assert (runs["ersct"]["alpha"], runs["ersct"]["beta"]) == (1.0, 1.0)
    assert (runs["kd_only"]["alpha"], runs["kd_only"]["beta"]) == (1.0, 0.0)
    assert (runs["align_only"]["alpha"], runs["align_only"]["beta"]) == (0.0, 1.0)
    assert runs["plain_teacher_init"]["loss"] == "ce" and runs["plain_teacher_init"]["init"] == "teacher"
    assert runs["plain_scratch"]["init"] == "scratch"
    for r in runs.values():          # the keys scripts/results.py reads
        for k in ("reached", "final_clean_accuracy", "pgd7_accuracy", "train_seconds"):
            assert k in r
        if r["stays_from"]:
            assert r["reached"]["step"] <= r["stays_from"]["step"]
            assert all(p["clean_accuracy"] >= 0.3 for p in r["curve"] if p["step"] >= r["stays_from"]["step"])
    assert "| plain_teacher_init | teacher |" in study.markdown(result)


def test_ersct_study_teacher_init_arms_start_from_the_teachers_weights(ran):
    result, objects = ran
    teacher = _flat(distill.teacher_variables(objects["teacher"]))
    shared = 0
    for arm in ("plain_teacher_init", "ersct", "kd_only", "align_only"):
        init = _flat(objects["initial"][arm])
        matched = [k for k, v in init.items() if k in teacher and teacher[k].shape == v.shape]
        assert len(matched) == result["teacher"]["leaves_copied"] > 0
        for k in matched:
            np.testing.assert_array_equal(init[k], teacher[k].astype(init[k].dtype), err_msg=f"{arm}: {k}")
        shared = len(matched)
    assert shared >= len([k for k in init if k.startswith("params/")])      # every parameter is the teacher's
    # the same initial network in all teacher-initialised arms (same eval draw at step 0)
    step0 = {arm: result["runs"][arm]["curve"][0]["correct"] for arm in study.ARMS}
    assert len({step0[a] for a in ("plain_teacher_init", "ersct", "kd_only", "align_only")}) == 1
    scratch = _flat(objects["initial"]["plain_scratch"])
    assert any(not np.array_equal(scratch[k], teacher[k]) for k in scratch if k.startswith("params/"))


def test_ersct_study_intervals_contain_the_accuracies(ran):
    result, _ = ran
    assert result["test_examples"] == 360 and result["attack_examples"] == 24
    t = result["teacher"]
    assert t["clean_ci95"][0] <= t["clean_accuracy"] <= t["clean_ci95"][1]
    for arm, r in result["runs"].items():
        for m, n in (("final_clean", 360), ("pgd7", 24)):
            acc, (lo, hi) = r[f"{m}_accuracy"], r[f"{m}_ci95"]
            c = metrics.unpack_correct(r[f"{m}_correct"])
            assert c.size == n and int(c.sum()) == r[f"{m}_k"] and acc == pytest.approx(c.mean())
            assert 0 <= lo <= acc <= hi <= 1 and hi - lo > 0, (arm, m)
            assert (lo, hi) == pytest.approx(metrics.binomial_interval(int(c.sum()), n))


def _hand(a: str, b: str) -> tuple[int, int]:
    bb = sum(1 for x, y in zip(a, b) if x == "1" and y == "0")
    cc = sum(1 for x, y in zip(a, b) if x == "0" and y == "1")
    return bb, cc


def test_ersct_study_mcnemar_matches_a_hand_count(ran):
    result, _ = ran
    runs, cmps = result["runs"], result["comparisons"]
    assert set(cmps) == set(study.COMPARISONS)
    assert "confounded by initialisation" in cmps["ersct_vs_plain_scratch"]["note"]
    for name, cmp in cmps.items():
        for m, key in (("clean", "final_clean_correct"), ("pgd7", "pgd7_correct")):
            b, c = _hand(runs[cmp["a"]][key], runs[cmp["b"]][key])
            s = cmp[m]
            assert (s["b"], s["c"]) == (b, c), (name, m)
            p = scipy.stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
            assert s["p_value"] == pytest.approx(p)
            assert s["verdict"] == ("inconclusive" if p >= 0.05 else "holds" if b > c else "does not hold")
    st = result["steps_to_target"]
    assert (st["a"], st["b"]) == ("ersct", "plain_teacher_init")
    reached = [x for x in (st["a_step"], st["b_step"]) if x is not None]
    if reached:
        at = min(reached)
        assert st["at_step"] == at
        pa = next(p["correct"] for p in runs["ersct"]["curve"] if p["step"] == at)
        pb = next(p["correct"] for p in runs["plain_teacher_init"]["curve"] if p["step"] == at)
        assert (st["test"]["b"], st["test"]["c"]) == _hand(pa, pb)


def test_ersct_study_verdict_rule_and_arm_subsets():
    assert study.verdict({"b": 20, "c": 5, "p_value": 0.004}) == "holds"
    assert study.verdict({"b": 5, "c": 20, "p_value": 0.004}) == "does not hold"
    assert study.verdict({"b": 9, "c": 5, "p_value": 0.42}) == "inconclusive"
    runs = {a: {"final_clean_correct": "1100", "pgd7_correct": "1000"} for a in ("ersct", "kd_only")}
    assert list(study.compare(runs)) == ["ersct_vs_kd_only"]
    assert study.steps_to_target(runs, 0.9) is None
    curve = [{"step": s, "train_seconds": s / 10, "clean_accuracy": a} for s, a in
             [(0, 0.1), (2, 0.95), (4, 0.8), (6, 0.92), (8, 0.97)]]
    assert study.first_reaching(curve, 0.9)["step"] == 2 and study.stays_from(curve, 0.9)["step"] == 6
    assert study.stays_from(curve[:3], 0.9) is None
    with pytest.raises(ValueError, match="not arms of this study"):
        study.run_study(tiny_digits_config(), arms=["ersct", "both"])


def _study(seed, ersct, plain, config="configs/digits.py"):
    """A study JSON with two arms whose final clean and PGD-7 correctness are the strings given."""
    arm = lambda s: {"final_clean_accuracy": s.count("1") / len(s), "final_clean_correct": s,
                     "pgd7_accuracy": s.count("1") / len(s), "pgd7_correct": s}
    return {"seed": seed, "config": config, "runs": {"ersct": arm(ersct), "plain_teacher_init": arm(plain)},
            "steps_to_target": {"a": "ersct", "b": "plain_teacher_init", "a_step": 10, "b_step": 20,
                                "verdict": "inconclusive"}}


def test_pooled_over_seeds_against_scipy_and_a_seed_that_disagrees():
    # seed 0: E-RSCT alone right on 9 images, plain on 1; seed 1: 8 against 0 (20 images each)
    s0 = _study(0, "1" * 9 + "0" + "1" * 10, "0" * 9 + "1" + "1" * 10)
    s1 = _study(1, "1" * 8 + "1" * 12, "0" * 8 + "1" * 12)
    clean, pgd7 = study.pooled([s0, s1])
    assert (clean["arm_a"], clean["arm_b"], clean["metric"], clean["seeds"]) == ("ersct", "plain_teacher_init",
                                                                                 "clean", [0, 1])
    assert (clean["b"], clean["c"]) == (17, 1)
    assert clean["p_value"] == pytest.approx(scipy.stats.binomtest(1, 18).pvalue)
    assert [(p["b"], p["c"]) for p in clean["per_seed"]] == [(9, 1), (8, 0)]
    assert clean["verdict"] == "holds" and pgd7["verdict"] == "holds"
    md = study.pooled_markdown([s0, s1])
    assert "| ersct vs plain_teacher_init | clean | 0,1 | 0.9750 | 0.5750 | 17 | 1 |" in md
    assert "s0 9:1 (0.021); s1 8:0 (0.0078)" in md and "seed 1: ersct 10, plain_teacher_init 20" in md
    # seeds 0 and 1 at 15:0, seed 2 at 0:6 (p = 2 / 64 = 0.03): pooled 30:6 rejects in the
    # claimed direction, but a seed rejects the other way -> inconclusive
    strong = [_study(k, "1" * 15 + "1" * 5, "0" * 15 + "1" * 5) for k in (0, 1)]
    t = study.pooled(strong + [_study(2, "0" * 6 + "1" * 14, "1" * 20)])[0]
    assert (t["b"], t["c"], t["per_seed"][2]["c"]) == (30, 6, 6) and t["p_value"] < 0.05
    assert t["per_seed"][2]["p_value"] == pytest.approx(2 / 64)
    assert t["verdict"] == "inconclusive"
    with pytest.raises(ValueError, match="need one study per seed of one config; got seeds \\[0, 0\\]"):
        study.pooled([s0, s0])


def test_pool_refuses_in_one_line(tmp_path, monkeypatch):
    missing, bad = tmp_path / "missing.json", tmp_path / "bad.json"
    bad.write_text(json.dumps({"verdicts": []}))
    for path, says in ((missing, f"--pool: cannot read {missing}: "),
                       (bad, "--pool: a study JSON lacks the field 'seed'; pass the --out files of this script")):
        monkeypatch.setattr("sys.argv", ["ersct_study.py", "--pool", str(path)])
        with pytest.raises(SystemExit, match="^" + re.escape(says)):
            study.main()
