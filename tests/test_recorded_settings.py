"""What a run records is what it ran: the config against an existing export, the attack
preset, the export evaluated (issue: silent overrides)."""

from __future__ import annotations

import json
import os

import jax
import pytest

from rsc_jax import classifier, data, export, pipeline, train
from rsc_jax.evaluators import robustness
from rsc_jax.validation import ConfigError
from tests.helpers import tiny_digits_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An untrained RSC-II (sigma 0.2, T 2) digits export, written without compiling a step."""
    c = tiny_digits_config()
    ds = data.load(c)
    cc = train.classifier_config(c, ds)
    path = str(tmp_path_factory.mktemp("exp") / "export")
    export.save(path, classifier.Classifier(cc, classifier.init_variables(cc, jax.random.key(0))))
    return c, path


@pytest.mark.parametrize("field,value,theirs", [("coding.sigma", 0.3, "0.2"), ("coding.T", 4, "2"),
                                                ("coding.method", "rsc1", "'rsc2'"),
                                                ("model.spiking", False, "True")])
def test_config_that_differs_from_the_export_is_refused_before_anything_runs(exported, tmp_path, field,
                                                                               value, theirs):
    c, path = exported
    c = c.copy_and_resolve_references()
    section, name = field.split(".")
    c[section][name] = value
    wd = tmp_path / "wd"
    with pytest.raises(ConfigError) as e:
        pipeline.run(c, str(wd), "certify", export_path=path, progress=False)
    msg = str(e.value)
    assert f"config.{field}={value!r} is not allowed" in msg and f"trained with {theirs}" in msg, msg
    assert msg.count("\n") == 0
    assert not (wd / "config.json").exists()           # nothing recorded for a run that did not run


def test_recorded_config_is_the_attack_that_ran():
    c = tiny_digits_config()
    c.attack.quick = True
    rec = pipeline.recorded_config(c)
    assert (rec["attack"]["strong_steps"], rec["attack"]["judge_draws"], rec["attack"]["square_queries"]) == (
        20, 4, 100)
    assert rec["attack"]["num_examples"] == 256 and rec["attack"]["quick"] is True
    assert robustness.preset(c.attack) == "quick"
    c.attack.quick = False
    assert pipeline.recorded_config(c)["attack"]["strong_steps"] == 50


def test_attack_only_report_names_the_export_and_the_preset(exported, tmp_path):
    c, path = exported
    c = c.copy_and_resolve_references()
    a = c.attack
    a.quick, a.num_examples, a.batch_size, a.judge_draws = True, 4, 4, 1
    a.eps_grid, a.strong_eps, a.l2_eps_grid = (0.0, 8 / 255), (8 / 255,), (0.0, 0.5)
    a.fgsm = a.l2 = a.ensemble = a.square = a.sanity = a.gradient_check = a.transfer = False
    a.strong_steps, a.strong_eot, a.steps = 1, 1, 1
    wd = tmp_path / "wd"
    rep = pipeline.run(c, str(wd), "attack,report", export_path=path, progress=False)
    assert rep["robustness"]["export"] == path and rep["robustness"]["preset"] == "quick"
    assert rep["export_path"] == os.path.abspath(path) and rep["export"]["coding"]["sigma"] == 0.2
    with open(wd / "config.json") as f:
        assert json.load(f)["attack"]["num_examples"] == 4
    md = (wd / "report.md").read_text()
    assert f"export `{path}`" in md and "Attack budget preset: `quick`" in md


def test_with_coding_gives_the_noise_free_copy(exported):
    """Same weights behind direct coding: deterministic (the coding's expectation at every
    step); unknown options and a Gaussian coding without noise are refused."""
    import numpy as np
    clf = export.load(exported[1])
    copy = clf.with_coding(method="direct")
    assert copy.config["coding"]["method"] == "direct" and clf.config["coding"]["method"] == "rsc2"
    x = np.full((2, 8, 8, 1), 0.5, np.float32)
    np.testing.assert_array_equal(np.asarray(copy.logits(jax.random.key(0), x)),
                                  np.asarray(copy.logits(jax.random.key(1), x)))
    with pytest.raises(ValueError, match="unknown option"):
        clf.with_coding(noise=0.1)
    with pytest.raises(ValueError, match="sigma=0.0"):
        clf.with_coding(sigma=0.0)
