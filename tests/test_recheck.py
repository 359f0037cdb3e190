"""scripts/recheck.py: one attack family of a finished run (the sanity PGD, Square) re-run
with other settings gives the rows the evaluator's keys give by hand, takes them into the
run's per-example worst case, and touches nothing of the run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from rsc_jax import attacks, classifier, config, export, judging
from rsc_jax.evaluators import common
from tests.helpers import load_script

rs = load_script("recheck")
OLD_WORST = "1111111100000000"    # the fake run's per-example worst case: first half robust


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fake finished run: an untrained RSC-II convnet (width 1/4, T = 2) exported, the
    digits data set in config.json, and a robustness.json of 16 images whose huge-budget
    check was flagged."""
    root = tmp_path_factory.mktemp("run")
    cc = classifier.classifier_config(
        model={"name": "convnet", "spiking": True, "overrides": {"width": 0.25, "v_th": 0.2}},
        coding_cfg={"method": "rsc2", "sigma": 0.2, "T": 2},
        dataset={"name": "digits", "num_classes": 10, "image_shape": [8, 8, 1], "mean": [0.3], "std": [0.37]})
    export.save(str(root / "export"), classifier.Classifier(cc, classifier.init_variables(cc, jax.random.key(0))))
    (root / "config.json").write_text(json.dumps(config.base().to_dict()))
    att = dict(config.attack().to_dict(), seed=3, judge_draws=4, num_examples=16, batch_size=8, sanity_steps=20,
               strong_eps=[32 / 255], square_queries=6, square_p_init=0.1, square_draws=1)
    att = {k: list(v) if isinstance(v, tuple) else v for k, v in att.items()}
    (root / "robustness.json").write_text(json.dumps({
        "config": att, "n_examples": 16,
        "results": [{"name": "square", "eps": 32 / 255, "queries": 6, "draws": 1, "acc_avg": 0.5}],
        "worst_case": [{"eps": 32 / 255, "eps_255": 32.0, "acc_avg": 0.5, "correct_avg": OLD_WORST}],
        "checks": [{"name": "huge-budget", "status": "FLAG", "detail": "old", "acc": 0.3, "eps": 64 / 255}]}))
    return root


def test_recheck_matches_the_evaluators_keys_by_hand_and_leaves_the_run_alone(run):
    before = (run / "robustness.json").read_bytes()
    r = rs.recheck(str(run), "sanity", sanity_eot=3, sanity_steps=2)
    row = r["row"]
    assert (row["steps"], row["eot"], row["n_examples"], row["judge_draws"]) == (2, 3, 16, 4)
    assert row["eps"] == pytest.approx(64 / 255) and row["step_size"] == pytest.approx(2.5 * (64 / 255) / 2)
    assert r["old"]["status"] == "FLAG" and r["new"]["acc"] == row["acc_avg"]
    assert (run / "robustness.json").read_bytes() == before
    written = json.loads((run / rs.out_dir("sanity") / "robustness.json").read_text())
    assert [x["name"] for x in written["results"]] == ["clean", "pgd-7", "pgd-7", "sanity-pgd"]
    # by hand: the run's test images, attack keys (seed, i, stream 0), judge keys (stream 1)
    clf = export.load(str(run / "export"))
    x, y, _ = common.run_test_set(clf, str(run / "config.json"), 16)
    idx = jnp.arange(16)
    xa = attacks.pgd(clf.logits, judging.example_keys(3, idx, stream=0), jnp.asarray(x), jnp.asarray(y),
                     eps=64 / 255, step_size=2.5 * (64 / 255) / 2, steps=2, eot=3)
    j = judging.judge(clf.logits, judging.example_keys(3, idx, stream=1), xa, jnp.asarray(y), draws=4)
    assert row["acc_avg"] == pytest.approx(float(np.mean(j["correct_avg"])))
    assert row["acc_single"] == pytest.approx(float(np.mean(j["correct_single"])), abs=1e-6)
    assert rs.line(r).startswith(f"{run}: huge-budget FLAG (0.3000) -> ")


def test_recheck_config_keeps_the_runs_settings_and_turns_the_rest_off():
    old = dict(config.attack().to_dict(), seed=5, judge_draws=7, sanity_steps=9, apgd=True, square=True)
    c = rs.recheck_config(old, "sanity", sanity_eot=2)
    assert (c.seed, c.judge_draws, c.sanity_steps, c.sanity_eot, c.sanity) == (5, 7, 9, 2, True)
    assert not any(c[k] for k in rs.OFF if k != "sanity") and c.strong_eps == ()


def test_square_recheck_by_hand_and_the_union_with_the_runs_worst_case(run):
    before = (run / "robustness.json").read_bytes()
    r = rs.recheck(str(run), "square", square_draws=3)
    (s,) = r["rows"]
    assert (s["square"]["queries"], s["square"]["draws"], s["n_examples"]) == (6, 3, 16)
    assert s["run_square"] == {"queries": 6, "draws": 1, "acc_avg": 0.5} and s["worst_before"] == 0.5
    assert (run / "robustness.json").read_bytes() == before
    written = json.loads((run / rs.out_dir("square") / "robustness.json").read_text())
    names = [x["name"] for x in written["results"]]     # the evaluator's fixed PGD rows at the strong eps too
    assert names[-1] == "square" and not {"apgd-ce", "transfer-pgd", "sanity-pgd", "fgsm"} & set(names)
    assert json.loads((run / rs.out_dir("square") / "recheck.json").read_text())["rows"][0] == json.loads(
        json.dumps(s))
    # by hand: Square with the run's queries and p_init on the attack keys, judged on the judge keys
    clf = export.load(str(run / "export"))
    x, y, _ = common.run_test_set(clf, str(run / "config.json"), 16)
    idx = jnp.arange(16)
    xa = attacks.square(clf.logits, judging.example_keys(3, idx, stream=0), jnp.asarray(x), jnp.asarray(y),
                        eps=32 / 255, queries=6, p_init=0.1, draws=3)
    j = judging.judge(clf.logits, judging.example_keys(3, idx, stream=1), xa, jnp.asarray(y), draws=4)
    sq = np.asarray(j["correct_avg"], bool)
    assert s["square"]["acc_avg"] == pytest.approx(float(np.mean(sq)))
    old = np.array([c == "1" for c in OLD_WORST])
    assert s["worst_after"] == pytest.approx(float(np.mean(old & sq)))
    assert s["fooled_more"] == int(np.sum(old & ~sq))
    assert tuple(s["ci95_after"]) == pytest.approx(scipy.stats.binomtest(int(np.sum(old & sq)), 16).proportion_ci(
        0.95, method="exact"))
    text = rs.line(r)
    assert text.startswith(f"{run}: Square 6 queries x 3 draws at 32/255: ") and "worst case 0.5000 -> " in text
    assert rs.markdown(r).startswith(f"| {run.name} | 32/255 | 0.500 (6 x 1) | ")


def test_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    assert rs.main([str(tmp_path)]) == 1
    assert "not a finished run (missing robustness.json, config.json, export)" in capsys.readouterr().err
    assert rs.main([str(tmp_path), "--sanity_eot=0"]) == 1
    assert rs.main([str(tmp_path), "--family=fgsm"]) == 1
    assert "--family=fgsm: must be one of sanity, square" in capsys.readouterr().err
    assert rs.main([str(tmp_path), "--family=square", "--square_draws=0"]) == 1
    assert "--square_draws=0: must be ints >= 1" in capsys.readouterr().err


def test_refuses_a_square_recheck_of_a_report_stream_worst_case(tmp_path, capsys):
    """A run of today's evaluation judges its worst case on the report stream; a Square
    re-check's rows are judge-stream rows, so their union would mix streams: one line."""
    for f in ("config.json", "export"):
        (tmp_path / f).mkdir() if f == "export" else (tmp_path / f).write_text("{}")
    (tmp_path / "robustness.json").write_text(json.dumps(
        {"worst_case": [{"eps": 0.1, "correct_avg": "10", "judge": {"stream": 3, "draws": 4}}]}))
    assert rs.main([str(tmp_path), "--family=square"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report stream" in err and "square_draws" in err
