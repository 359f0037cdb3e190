"""The command line end to end, its errors, and the paper configs on tfds mock data."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from rsc_jax import pipeline
from tests.conftest import ROOT
from tests.helpers import load_config

TINY = ["--config.train.epochs=1", "--config.model.width=0.25", "--config.coding.T=2",
        "--config.eval.draws=2", "--progress=false",
        # a small attack grid and certification: the full pipeline, at test size
        "--config.attack.num_examples=32", "--config.attack.batch_size=32", "--config.attack.strong_steps=8",
        "--config.attack.ensemble=False", "--config.attack.l2=False", "--config.attack.square=False",
        "--config.attack.sanity_steps=5", "--config.attack.apgd_steps=4", "--config.attack.apgd_eot=1",
        "--config.attack.convergence=False",
        "--config.certify.num_examples=4", "--config.certify.n=200", "--config.certify.batch=100",
        "--config.certify.image_batch=4"]


def _cli(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "rsc_jax.main", "--config=configs/digits.py", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_cli_all_writes_report(tmp_path):
    wd = tmp_path / "run"
    p = _cli(f"--workdir={wd}", *TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((wd / "report.json").read_text())
    assert report["config"]["coding"]["T"] == 2              # the override reached the run
    assert report["export"]["coding"]["method"] == "rsc2"
    assert 0.0 <= report["evaluation"]["accuracy"] <= 1.0
    md = (wd / "report.md").read_text()
    assert "## Clean evaluation" in md and "## Training" in md
    assert "## Adversarial robustness" in md and "## Certified robustness" in md
    assert report["robustness"]["n_examples"] == 32 and report["certification"]["num_examples"] == 4
    assert (wd / "ann_twin" / "export" / "config.json").is_file()   # the transfer source
    assert (wd / "export" / "config.json").is_file() and (wd / "metrics.jsonl").is_file()
    # The terminal: one header per stage, one summary line each, a final line naming the
    # report; no library log line (orbax's INFO lines, absl's) -- those are in log.txt.
    out = p.stdout.splitlines()
    assert [ln.split("]")[0] + "]" for ln in out if ln.startswith("[")] == [f"[{i}/6]" for i in range(1, 7)]
    assert "[2/6] train ANN twin (transfer-attack source)" in out
    assert any(ln.strip().startswith("clean accuracy ") and ln.endswith("evaluation.json") for ln in out)
    assert any("certified accuracy" in ln and ln.endswith("certified.json") for ln in out)
    assert out[-1].startswith("done in ") and out[-1].endswith(str(wd / "report.md")), out[-1]
    assert len(out) == 13 and p.stderr.strip() == "", (p.stdout, p.stderr[-3000:])
    log = (wd / "log.txt").read_text()
    # our INFO lines; orbax's INFO lines only with --verbosity (issue 28: they were ~90 % of it)
    assert log.startswith("===== ") and "clean test accuracy" in log and "checkpoint_manager.py" not in log
    # A second run of the finished job resumes at the end instead of retraining; every
    # mode and comma list ends with one summary line.
    p2 = _cli(f"--workdir={wd}", "--mode=train,export,report", *TINY)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert json.loads((wd / "train_summary.json").read_text())["resumed_from"] == 1437 // 64
    out2 = p2.stdout.splitlines()
    assert out2[0].startswith("[1/3] train ") and out2[2] == "[2/3] export the newest checkpoint", out2
    assert out2[-1].startswith("done in ") and out2[-1].endswith("report.md") and len(out2) == 7, out2
    assert p2.stderr.strip() == "", p2.stderr[-3000:]
    assert (wd / "log.txt").read_text().count("\n===== ") == 1          # appended, one header per run
    p3 = _cli(f"--workdir={wd}", "--mode=report", "--progress=false")
    assert p3.returncode == 0 and p3.stdout.splitlines()[0] == "[1/1] report", p3.stderr[-3000:]
    assert p3.stdout.splitlines()[-1].startswith("done in ") and "report of train, evaluation" in p3.stdout


def test_cli_bad_value_fails_before_compiling_and_keeps_files(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "keep.txt").write_text("precious")
    p = _cli(f"--workdir={wd}", "--config.coding.method=gauss")
    assert p.returncode != 0
    assert "config.coding.method='gauss' is not allowed" in p.stderr
    assert (wd / "keep.txt").read_text() == "precious" and sorted(os.listdir(wd)) == ["keep.txt"]


def test_cli_workdir_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p = _cli(f"--workdir={f}")
    assert p.returncode != 0 and "is a file, not a directory" in p.stderr
    assert f.read_text() == "x"


@pytest.mark.parametrize("name", ["cifar10_vgg11", "cifar100_resnet19",
                                  pytest.param("imagenet_sewresnet34", marks=pytest.mark.slow)])
def test_paper_configs_train_a_step_on_mock_data(name, tmp_path):
    c = load_config(name)
    c.train.epochs = 1
    c.train.batch_size = 2
    c.eval.batch_size = 2
    c.coding.T = 2
    c.dataset.image_size = 32   # ImageNet: keep the mock images small on the CPU
    with tfds.testing.mock_data(num_examples=4):
        pipeline.run(c, str(tmp_path), "train", progress=False)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["final"]["finite"] == 1.0
    assert json.loads((tmp_path / "export" / "config.json").read_text())["model"]["name"] == c.model.name
