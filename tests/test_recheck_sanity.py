"""scripts/recheck_sanity.py: the sanity PGD of a finished run re-run with other settings
gives the row the evaluator's keys give by hand, and touches nothing of the run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import attacks, classifier, config, export, judging
from rsc_jax.evaluators import common
from tests.helpers import load_script

rs = load_script("recheck_sanity")


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
    att = dict(config.attack().to_dict(), seed=3, judge_draws=4, num_examples=16, batch_size=8, sanity_steps=20)
    att = {k: list(v) if isinstance(v, tuple) else v for k, v in att.items()}
    (root / "robustness.json").write_text(json.dumps({
        "config": att, "n_examples": 16,
        "checks": [{"name": "huge-budget", "status": "FLAG", "detail": "old", "acc": 0.3, "eps": 64 / 255}]}))
    return root


def test_recheck_matches_the_evaluators_keys_by_hand_and_leaves_the_run_alone(run):
    before = (run / "robustness.json").read_bytes()
    r = rs.recheck(str(run), sanity_eot=3, sanity_steps=2)
    row = r["row"]
    assert (row["steps"], row["eot"], row["n_examples"], row["judge_draws"]) == (2, 3, 16, 4)
    assert row["eps"] == pytest.approx(64 / 255) and row["step_size"] == pytest.approx(2.5 * (64 / 255) / 2)
    assert r["old"]["status"] == "FLAG" and r["new"]["acc"] == row["acc_avg"]
    assert (run / "robustness.json").read_bytes() == before
    written = json.loads((run / rs.OUT_DIR / "robustness.json").read_text())
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


def test_sanity_config_keeps_the_runs_settings_and_turns_the_rest_off():
    old = dict(config.attack().to_dict(), seed=5, judge_draws=7, sanity_steps=9, apgd=True, square=True)
    c = rs.sanity_config(old, sanity_eot=2)
    assert (c.seed, c.judge_draws, c.sanity_steps, c.sanity_eot, c.sanity) == (5, 7, 9, 2, True)
    assert not any(c[k] for k in rs.OFF) and c.strong_eps == ()


def test_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    assert rs.main([str(tmp_path)]) == 1
    assert "not a finished run (missing robustness.json, config.json, export)" in capsys.readouterr().err
    assert rs.main([str(tmp_path), "--sanity_eot=0"]) == 1
