"""Safe from a notebook (issue 28): a Python API that cannot certify with the wrong coding,
clear lines for unbatched images, explicit settings that win over the quick preset,
model/input combinations refused before anything is written, and the command line's
recipe for evaluating an export elsewhere (fractions like 16/255, eps suggestions, the
ANN twin found beside the export)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import certify as C
from rsc_jax import classifier, config, train
from tests.test_certify import ToyClassifier, toy_data


# --------------------------------------------------------------------------- certify API

def test_certify_takes_the_coding_from_the_classifier_and_refuses_another():
    clf = ToyClassifier(method="rsc2", sigma=0.25, T=2)
    x = jnp.asarray(toy_data(4)[0])
    kw = dict(n0=20, n=200, alpha=0.01, batch=100)
    own = C.certify(clf, jax.random.key(0), x, **kw)
    # the radius is the classifier's coding's: rsc2 sigma 0.25, T 2 (certify.radius by hand)
    np.testing.assert_allclose(own.radius, C.radius(own.p_lower, sigma=0.25, coding="rsc2", T=2), rtol=1e-12)
    # the config's own naming (method, sigma, T) is accepted and checked, with the same result
    same = C.certify(clf.logits, jax.random.key(0), x, **clf.config["coding"], **kw)
    np.testing.assert_array_equal(same.radius, own.radius)
    traced = clf.calls
    for wrong, match in ((dict(sigma=0.5), "sigma=0.5 is not allowed"), (dict(T=4), "T=4 is not allowed"),
                         (dict(coding="rsc1"), "method='rsc1' is not allowed"),
                         (dict(method="rsc2", coding="rsc1"), "disagree")):
        with pytest.raises(ValueError, match=match) as e:
            C.certify(clf.logits, jax.random.key(0), x, **wrong, **kw)
        assert "\n" not in str(e.value) and (wrong.get("coding") == "rsc1" or "sigma=0.25" in str(e.value))
    assert clf.calls == traced, "a refused certificate must not run the classifier"


def test_certify_of_a_plain_function_needs_the_coding_and_an_ann_counts_one_frame():
    fn = ToyClassifier(method="rsc1", sigma=0.5, T=1)._fn
    x = jnp.asarray(toy_data(2)[0])
    with pytest.raises(ValueError, match="sigma, T missing: a plain logits function"):
        C.certify(fn, jax.random.key(0), x, method="rsc1")
    ann = ToyClassifier(method="rsc2", sigma=0.5, T=4)
    ann.config["model"] = {"spiking": False}     # an ANN sees one coded frame: T = 1 in the radius
    assert C.classifier_coding(ann.logits) == {"method": "rsc2", "sigma": 0.5, "T": 1}


def test_unbatched_images_are_one_clear_line():
    clf = ToyClassifier()
    one = jnp.asarray(toy_data(1)[0][0])          # [H, W, C]
    with pytest.raises(ValueError, match=r"x has shape \(2, 2, 1\); a batch of images \[B, H, W, C\] is "
                                         r"required \(one image: pass x\[None\]\)"):
        C.certify(clf, jax.random.key(0), one, n0=5, n=5)
    with pytest.raises(ValueError, match="one image: pass x"):
        C.predict(clf.logits, jax.random.key(0), one, n=5, alpha=0.01)
    c = config.base()
    c.model.width, c.coding.T = 0.25, 2
    cc = classifier.classifier_config(model={"name": "convnet", "spiking": True, "overrides": {"width": 0.25}},
                                      coding_cfg=dict(c.coding), dataset={"name": "digits", "num_classes": 10,
                                                                          "image_shape": (8, 8, 1),
                                                                          "mean": (0.5,), "std": (0.5,)})
    real = classifier.Classifier(cc, None)
    with pytest.raises(classifier.InputError, match=r"x has shape \(8, 8, 1\);.*pass x\[None\]"):
        real.logits(jax.random.key(0), np.zeros((8, 8, 1), np.float32))
    assert clf.calls == 0


# --------------------------------------------------------------------------- quick preset

def test_explicit_attack_settings_win_over_the_quick_preset(tmp_path):
    from rsc_jax import pipeline
    from rsc_jax.evaluators import robustness
    c = config.from_file("digits")                       # attack.quick = True
    explicit = ("attack.apgd_steps", "attack.judge_draws", "attack.num_examples", "certify.num_examples")
    with c.unlocked():
        c.attack.apgd_steps, c.attack.judge_draws, c.attack.num_examples = 100, 10, -1
    resolved, kept = pipeline.apply_quick_preset(c, explicit)
    assert kept == ["apgd_steps", "judge_draws", "num_examples"]
    a = resolved.attack
    assert (a.apgd_steps, a.judge_draws, a.num_examples) == (100, 10, -1)       # as given
    assert (a.strong_steps, a.strong_eot, a.square_queries, a.apgd_eot) == (20, 4, 100, 4)   # still capped
    assert tuple(a.convergence_steps) == config.QUICK_GRIDS["convergence_steps"] and not a.quick
    assert robustness.effective_config(a).to_dict() == a.to_dict()             # applying it again: no change
    assert c.attack.quick and c.attack.apgd_steps == 100                         # the caller's config untouched
    # without explicit fields (the digits demo) nothing changes; an explicit value the
    # preset would not change (10 < 20 steps) keeps the preset on
    assert pipeline.apply_quick_preset(config.from_file("digits"), ()) == (config.from_file("digits"), [])
    low = config.from_file("digits")
    low.attack.apgd_steps = 10
    assert pipeline.apply_quick_preset(low, ("attack.apgd_steps",))[1] == []
    # the run says so in one line before starting, and records what runs
    lines: list[str] = []
    pipeline.run(c, str(tmp_path / "r"), "report", say=lines.append, explicit=explicit)
    assert lines[0] == ("quick preset: attack.apgd_steps=100, attack.judge_draws=10, attack.num_examples=-1 kept "
                        "as given (explicit settings win); the preset caps the other attack budgets"), lines
    recorded = __import__("json").load(open(tmp_path / "r" / "config.json"))["attack"]
    assert (recorded["apgd_steps"], recorded["judge_draws"], recorded["strong_steps"]) == (100, 10, 20)


# --------------------------------------------------------------------------- refused before anything is written

@pytest.mark.parametrize("change,match", [
    (dict(name="vgg11"), r"config.model.name='vgg11' is not allowed for the 8x8x1 images of digits: the model "
                         r"cannot be built on them \(ZeroDivisionError.*\); it needs images of at least 16x16"),
    (dict(batch_size=1438), r"config.train.batch_size=1438 is not allowed; the training set has 1437 examples"),
])
def test_a_model_or_batch_that_cannot_run_is_refused_and_leaves_no_folder(change, match, tmp_path):
    from rsc_jax import pipeline
    from rsc_jax.validation import ConfigError
    c = config.from_file("digits")
    c.model.name = change.get("name", c.model.name)
    c.train.batch_size = change.get("batch_size", c.train.batch_size)
    wd = tmp_path / "new" / "run"
    with pytest.raises(ConfigError, match=match) as e:
        pipeline.run(c, str(wd), "train", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "new").exists(), "a refused run created its workdir"


def test_missing_subset_names_the_build_command_not_site_packages(tmp_path):
    from rsc_jax import config_checks
    from rsc_jax.validation import ConfigError
    c = config.from_file("mnist_subset")
    c.dataset.path = str(tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "shared" / "data"
                         / "mnist_subset.npz")    # where a bundled config looks after `pip install .`
    with pytest.raises(ConfigError) as e:
        config_checks.validate(c)
    msg = str(e.value)
    assert "python scripts/make_subsets.py --dataset=mnist --data_dir=DIR --out=mnist_subset.npz" in msg, msg
    assert "--config.dataset.path=" in msg and "site-packages" not in msg and "\n" not in msg, msg
    c.dataset.path = str(tmp_path / "elsewhere" / "mnist_subset.npz")
    with pytest.raises(ConfigError, match=f"does not exist at '{tmp_path}/elsewhere/mnist_subset.npz'; build it"):
        config_checks.validate(c)


# --------------------------------------------------------------------------- an export evaluated elsewhere

def test_fractions_on_the_command_line_and_eps_suggestions():
    from rsc_jax import main
    assert main._fractions("--config.attack.strong_eps=(16/255,)") == f"--config.attack.strong_eps=({16 / 255!r},)"
    assert main._fractions("--config.attack.sanity_eps=64/255") == f"--config.attack.sanity_eps={64 / 255!r}"
    assert main._fractions("--config.attack.eps_grid=(0, 8/255,16/255)") == \
        f"--config.attack.eps_grid=(0, {8 / 255!r},{16 / 255!r})"
    for untouched in ("--config.dataset.path=data/1/2.npz", "--workdir=runs/1/2", "--config.coding.sigma=0.25"):
        assert main._fractions(untouched) == untouched
    assert set(main._near_fields("--config.attack.eps", "eps")[:4]) == {"eps_grid", "strong_eps", "l2_eps_grid",
                                                                        "sanity_eps"}
    assert main._near_fields("--config.coding.sigmaa", "sigmaa") == ["sigma"]


def test_transfer_source_is_the_ann_twin_beside_the_export(tmp_path):
    from rsc_jax import pipeline
    c = config.from_file("digits")
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    (run / "ann_twin" / "export").mkdir(parents=True)
    got = pipeline.transfer_source_path(c, str(elsewhere), str(run / "export"))
    assert got == str(run / "ann_twin" / "export")
    # no twin beside the export: the new workdir's (what --mode=all trains); transfer_from wins
    assert pipeline.transfer_source_path(c, str(elsewhere), str(elsewhere / "x" / "export")) == \
        str(elsewhere / "ann_twin" / "export")
    c.attack.transfer_from = "/some/export"
    assert pipeline.transfer_source_path(c, str(elsewhere), str(run / "export")) == "/some/export"


# --------------------------------------------------------------------------- the command line

def _cli(*args: str):
    import os
    import subprocess
    import sys
    from tests.conftest import ROOT
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "rsc_jax.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_help_shows_the_values_that_run_and_eps_is_one_line_naming_the_eps_fields(tmp_path):
    h = _cli("--help")
    assert h.returncode == 0, h.stderr[-2000:]
    attack = h.stdout.split("\n  attack: ")[1].split("\n  certify: ")[0]
    for capped in ("apgd_steps=10", "judge_draws=4", "num_examples=256", "strong_steps=20", "convergence_eot=(1,4)"):
        assert f" {capped} " in f" {' '.join(attack.split())} ", capped     # digits: the quick preset applied
    assert "attack.quick=True: the quick preset's caps are applied" in h.stdout
    # no --config given (the digits default) and a misspelt eps: one line naming the eps fields
    p = _cli(f"--workdir={tmp_path / 'run'}", "--config.attack.eps=16/255")
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr[-3000:]
    for name in ("eps_grid", "strong_eps", "sanity_eps"):
        assert f"'{name}'" in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()
    # a value of the wrong type: one line too, not absl's "FATAL Flags parsing error ... --helpfull"
    p = _cli(f"--workdir={tmp_path / 'run'}", "--config.train.epochs=2.5")
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "FATAL" not in p.stderr, p.stderr
    assert p.stderr.startswith("error: flag --config.train.epochs=2.5: ") and "--help lists" in p.stderr, p.stderr


def _readme_commands() -> list[list[str]]:
    import os
    import shlex
    from tests.conftest import ROOT
    text = open(os.path.join(ROOT, "README.md")).read().split("## Evaluate an export elsewhere")[1]
    block = text.split("```bash\n")[1].split("```")[0].replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.startswith("python -m rsc_jax.main")]


def test_readme_export_elsewhere_commands_pass_every_check_up_to_the_export(tmp_path):
    """The README's commands as pasted, with the demo's folder replaced by one without an
    export: every flag, field and value (16/255 included) is accepted and validated, and
    the only refusal is the missing export (one line); nothing is created."""
    commands = _readme_commands()
    assert len(commands) == 3 and all("--export=runs/digits/export" in c for c in commands)
    for cmd in commands:
        args = [a.replace("runs/", f"{tmp_path}/runs/") for a in cmd[3:]]
        p = _cli(*args)
        assert p.returncode == 1 and p.stderr.count("\n") == 1, (cmd, p.stderr[-3000:])
        assert p.stderr.startswith("error: ") and "no config.json" in p.stderr, (cmd, p.stderr)
        assert not (tmp_path / "runs").exists(), cmd
