"""Bad input, tried systematically: every config field (type and range), inconsistent
combinations, malformed npz files, images outside [0, 1], labels out of range, an
export of another architecture, a workdir that is a file or read-only.

Each case must give one clear error naming the problem, before anything is compiled
(the compiling entry points are replaced by tripwires), with the workdir untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from rsc_jax import attacks, classifier, config, config_checks, data, export, parallel, pipeline, train
from rsc_jax.evaluators import certification, clean, robustness
from rsc_jax.validation import ConfigError
from tests.conftest import ROOT
from tests.helpers import with_changes

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def tripwires(monkeypatch):
    """Every entry point that would compile or train fails the test if reached."""
    def trip(name):
        def f(*a, **k):
            raise AssertionError(f"{name} was reached: the bad input was not refused first")
        return f
    for mod, name in [(train, "train"), (clean, "run"), (classifier, "init_variables"),
                      (robustness, "run"), (certification, "run")]:
        monkeypatch.setattr(mod, name, trip(f"{mod.__name__}.{name}"))


@pytest.fixture
def workdir(tmp_path):
    """A workdir holding a previous run's files; ``check()`` asserts they are intact."""
    wd = tmp_path / "run"
    wd.mkdir()
    files = {"keep.txt": "precious", "config.json": '{"old": true}', "metrics.jsonl": '{"step": 1}\n'}
    for k, v in files.items():
        (wd / k).write_text(v)

    return Workdir(str(wd), files)


class Workdir(str):
    """A workdir path (a str) that can check its previous files are intact."""

    def __new__(cls, path: str, files: dict[str, str]):
        obj = super().__new__(cls, path)
        obj.files = files
        return obj

    def check(self) -> None:
        assert sorted(os.listdir(self)) == sorted(self.files), os.listdir(self)
        for k, v in self.files.items():
            with open(os.path.join(self, k)) as f:
                assert f.read() == v


def _tiny():
    c = config.base()
    c.model.width = 0.25
    c.coding.T = 2
    return c


def _leaves(cfg: ml_collections.ConfigDict, prefix: str = ""):
    for k, v in cfg.items():
        if isinstance(v, ml_collections.ConfigDict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _set(cfg, field: str, value) -> None:
    *path, name = field.split(".")
    node = cfg
    for p in path:
        node = node[p]
    with cfg.unlocked():
        node[name] = value


# --------------------------------------------------------------------------- config: types


def _wrong_type(v):
    if isinstance(v, bool):
        return "yes"
    if isinstance(v, (int, float)):
        return "not-a-number"
    if isinstance(v, str):
        return 3
    return 3.5          # tuples / lists / None


TYPE_CASES = [(f, _wrong_type(v)) for f, v in _leaves(config.base())]


@pytest.mark.parametrize("field,value", TYPE_CASES, ids=[f for f, _ in TYPE_CASES])
def test_every_field_refuses_a_wrong_type(field, value, tripwires, workdir):
    """Assigning a value of the wrong type to any field is refused, naming the field
    (ml_collections' typed fields, or our validation when the type is accepted)."""
    c = _tiny()
    name = field.split(".")[-1]
    try:
        _set(c, field, value)
    except TypeError as e:
        assert f"'{name}'" in str(e), str(e)
        return
    with pytest.raises((ConfigError, TypeError, ValueError)) as e:
        pipeline.run(c, str(workdir), "all", progress=False)
    assert name in str(e.value), str(e.value)
    workdir.check()


# --------------------------------------------------------------------------- config: ranges


RANGE_CASES = [
    ("dataset.name", "svhn", "allowed"), ("dataset.num_train", 0, "-1"), ("dataset.num_test", -5, "-1"),
    ("dataset.std", (0.5, 0.5), "as many entries"), ("dataset.mean", (0.5,), "as many entries"),
    ("model.name", "vgg12", "allowed"), ("model.dtype", "float16", "allowed"), ("model.width", -1.0, "> 0"),
    ("neuron.surrogate", "relu", "allowed"), ("neuron.reset", "zero", "allowed"),
    ("neuron.grad_mode", "rate", "allowed"), ("neuron.tau", 0.5, ">= 1"), ("neuron.v_th", -1.0, "> 0"),
    ("neuron.alpha", -1.0, ">= 0"), ("coding.method", "gauss", "allowed"), ("coding.T", 0, ">= 1"),
    ("coding.sigma", -0.1, "> 0"), ("coding.sigma", float("nan"), "> 0"), ("coding.sigma", 0.0, "> 0"),
    ("train.optimizer", "lamb", "allowed"), ("train.schedule", "step", "allowed"),
    ("train.batch_size", 0, ">= 1"), ("train.batch_size", -64, ">= 1"), ("train.lr", 0.0, "> 0"),
    ("train.lr", float("nan"), "> 0"), ("train.momentum", 1.0, "[0, 1)"), ("train.momentum", -0.1, "[0, 1)"),
    ("train.weight_decay", -1e-4, ">= 0"), ("train.epochs", -1, ">= 0"), ("train.warmup_steps", -1, ">= 0"),
    ("train.log_every", 0, ">= 1"), ("train.checkpoint_every", 0, ">= 1"), ("train.keep_checkpoints", 0, ">= 1"),
    ("train.num_devices", -1, ">= 0"), ("train.num_devices", 99, "has 1 devices"),
    ("eval.batch_size", 0, ">= 1"), ("eval.draws", 0, ">= 1"),
    ("attack.batch_size", 0, "batch_size"), ("attack.steps", -1, "steps"), ("attack.eot", 0, "eot"),
    ("attack.judge_draws", 0, "judge_draws"), ("attack.num_examples", 0, "num_examples"),
    ("certify.n", 0, "n="), ("certify.n0", 0, "n0"), ("certify.alpha", 1.5, "alpha"),
    ("certify.alpha", 0.0, "alpha"), ("certify.batch", 0, "batch"), ("certify.image_batch", 0, "image_batch"),
    ("certify.num_examples", 0, "num_examples"), ("certify.radii", (), "radii"),
    ("certify.radii", (0.5, 0.25), "radii"),
]


@pytest.mark.parametrize("field,value,allowed", RANGE_CASES, ids=[f"{f}={v!r}" for f, v, _ in RANGE_CASES])
def test_every_range_is_checked_before_compiling(field, value, allowed, tripwires, workdir):
    c = _tiny()
    _set(c, field, value)
    with pytest.raises(ConfigError) as e:
        pipeline.run(c, str(workdir), "all", progress=False)
    msg = str(e.value)
    assert field in msg and allowed in msg, msg          # e.g. "config.train.lr=0.0 is not allowed; ..."
    assert msg.count("\n") <= 1, "one clear message, not a dump"
    workdir.check()


# --------------------------------------------------------------------------- inconsistent combinations


def _combo(c, **kv):
    for k, v in kv.items():
        _set(c, k.replace("__", "."), v)
    return c


COMBO_CASES = [
    ("certify of poisson coding", dict(coding__method="poisson"), "certify", "no Gaussian certificate"),
    ("certify of direct coding", dict(coding__method="direct"), "certify", "no Gaussian certificate"),
    ("npz without a path", dict(dataset__name="npz"), "train", "needs the path"),
    ("npz path missing", dict(dataset__name="npz", dataset__path="/nonexistent.npz"), "train", "does not exist"),
    ("transfer_from not an export", dict(attack__transfer_from="/tmp"), "attack", "export directory"),
    ("devices above the machine", dict(train__num_devices=2), "train", "this machine has"),
]


@pytest.mark.parametrize("name,kv,mode,match", COMBO_CASES, ids=[c[0] for c in COMBO_CASES])
def test_inconsistent_combinations(name, kv, mode, match, tripwires, workdir):
    c = _combo(_tiny(), **kv)
    with pytest.raises(ConfigError, match=match):
        pipeline.run(c, str(workdir), mode, progress=False)
    workdir.check()


@pytest.mark.parametrize("field", ["train.batch_size", "eval.batch_size"])
def test_batch_not_divisible_by_four_devices(field):
    c = _tiny()
    _set(c, field, 30)
    with pytest.raises(ConfigError, match=rf"config.{field}=30 .*divisible by the device count 4"):
        config_checks.validate(c, device_count=4)


# --------------------------------------------------------------------------- npz files


GOOD = dict(train_images=np.zeros((40, 5, 5, 1), np.uint8), train_labels=np.arange(40) % 3,
            test_images=np.zeros((8, 5, 5, 1), np.uint8), test_labels=np.arange(8) % 3)

NPZ_CASES = [
    ("missing train_labels", {"train_labels": None}, r"lacks key\(s\) \['train_labels'\]"),
    ("missing test split", {"test_images": None, "test_labels": None}, "lacks key"),
    ("float images", {"train_images": np.zeros((40, 5, 5, 1), np.float32)}, "dtype float32; uint8"),
    ("int64 images", {"test_images": np.zeros((8, 5, 5, 1), np.int64)}, "dtype int64; uint8"),
    ("1-d images", {"test_images": np.zeros((8,), np.uint8)}, "shape"),
    ("5-d images", {"train_images": np.zeros((40, 5, 5, 1, 1), np.uint8)}, "shape"),
    ("negative label", {"train_labels": np.r_[np.arange(39) % 3, -2]}, "non-negative"),
    ("float labels", {"test_labels": np.zeros(8, np.float32)}, "non-negative integers"),
    ("too few labels", {"train_labels": np.arange(10) % 3}, "one label per image"),
    ("2-d labels", {"test_labels": np.zeros((8, 1), np.int64)}, "one label per image"),
    ("train/test shapes differ", {"test_images": np.zeros((8, 6, 6, 1), np.uint8)}, "differ in shape"),
]


def _npz(tmp_path, change):
    p = tmp_path / "d.npz"
    np.savez(p, **with_changes(GOOD, change))
    return str(p)


@pytest.mark.parametrize("name,change,match", NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_malformed_npz_refused_by_run(name, change, match, tmp_path, tripwires, workdir):
    c = _combo(_tiny(), dataset__name="npz", dataset__path=_npz(tmp_path, change))
    with pytest.raises(data.DataError, match=match):
        pipeline.run(c, str(workdir), "train", progress=False)
    workdir.check()


def test_truncated_npz_file(tmp_path, tripwires, workdir):
    p = _npz(tmp_path, {})
    with open(p, "r+b") as f:
        f.truncate(100)
    c = _combo(_tiny(), dataset__name="npz", dataset__path=p)
    with pytest.raises(data.DataError, match="not a readable .npz"):
        pipeline.run(c, str(workdir), "train", progress=False)
    workdir.check()


# --------------------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two untrained exports on 5x5x1 npz-like data: convnet width 1/4 and width 1/2."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name, width in (("narrow", 0.25), ("wide", 0.5)):
        cc = classifier.classifier_config(
            model={"name": "convnet", "spiking": True, "overrides": {"width": width}},
            coding_cfg={"method": "rsc2", "sigma": 0.2, "T": 2},
            dataset={"name": "npz", "num_classes": 3, "image_shape": [5, 5, 1], "mean": [0.5], "std": [0.25]})
        clf = classifier.Classifier(cc, classifier.init_variables(cc, jax.random.key(0)))
        out[name] = export.save(str(root / name), clf)
    return out


def test_export_of_another_architecture(exports, tmp_path):
    """Variables of one architecture under another's config.json: refused on load."""
    import shutil
    mixed = str(tmp_path / "mixed")
    shutil.copytree(exports["narrow"], mixed)
    shutil.copy(os.path.join(exports["wide"], "config.json"), os.path.join(mixed, "config.json"))
    with pytest.raises(export.ExportError, match="could not be restored for model 'convnet'"):
        export.load(mixed)


@pytest.mark.parametrize("mode", ["evaluate", "attack", "certify"])
@pytest.mark.parametrize("case,change,match", [
    ("labels beyond the export's classes", {"test_labels": np.arange(8) % 5}, r"export has 3 classes|has 3 classes"),
    ("images of another shape", {"train_images": np.zeros((40, 6, 6, 1), np.uint8),
                                 "test_images": np.zeros((8, 6, 6, 1), np.uint8)}, r"shape \(6, 6, 1\)"),
])
def test_export_does_not_fit_the_data(mode, case, change, match, exports, tmp_path, tripwires, workdir):
    c = _combo(_tiny(), dataset__name="npz", dataset__path=_npz(tmp_path, change))
    with pytest.raises(classifier.InputError, match=match):
        pipeline.run(c, str(workdir), mode, export_path=exports["narrow"], progress=False)
    workdir.check()


def test_export_missing(tmp_path, tripwires, workdir):
    c = _combo(_tiny(), dataset__name="npz", dataset__path=_npz(tmp_path, {}))
    with pytest.raises(export.ExportError, match="no config.json"):
        pipeline.run(c, str(workdir), "evaluate", export_path=str(tmp_path / "nothing"), progress=False)
    workdir.check()


# --------------------------------------------------------------------------- images outside [0, 1]


BAD_IMAGES = [("above 1", 1.5), ("below 0", -0.2), ("NaN", float("nan")), ("Inf", float("inf"))]


@pytest.mark.parametrize("name,value", BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_images_outside_unit_interval(name, value, exports, tmp_path):
    clf = export.load(exports["narrow"])
    x = np.full((4, 5, 5, 1), 0.5, np.float32)
    x[1, 2, 2, 0] = value
    y = np.array([0, 1, 2, 0])
    with pytest.raises(classifier.InputError, match=r"\[0, 1\]"):
        clf.logits(jax.random.key(0), x)                         # host array: checked before tracing
    with pytest.raises(classifier.InputError, match=r"\[0, 1\]"):
        classifier.check_inputs(clf.config, x, y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.pgd(clf.logits, jax.random.key(0), x, y, eps=0.1, steps=1)
    c = config.attack()
    c.batch_size = 4
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        robustness.run(clf, x, y, c, workdir=str(tmp_path), mesh=parallel.make_mesh(1), progress=False)
    cc = config.certify()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        certification.run(clf, x, y, cc, workdir=str(tmp_path), mesh=parallel.make_mesh(1), progress=False)
    assert not os.listdir(tmp_path)                              # nothing was written


def test_uint8_images_refused_by_logits(exports):
    clf = export.load(exports["narrow"])
    with pytest.raises((classifier.InputError, TypeError), match="uint8"):
        clf.logits(jax.random.key(0), np.zeros((2, 5, 5, 1), np.uint8))


# --------------------------------------------------------------------------- workdir


def test_workdir_is_a_file(tmp_path, tripwires):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(pipeline.WorkdirError, match="is a file, not a directory"):
        pipeline.run(_tiny(), str(f), "train", progress=False)
    assert f.read_text() == "x"


def test_workdir_read_only(tmp_path, tripwires, monkeypatch):
    wd = tmp_path / "ro"
    wd.mkdir()
    (wd / "keep.txt").write_text("precious")
    os.chmod(wd, 0o555)
    if os.geteuid() == 0:        # root ignores permissions: simulate what the kernel would say
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if os.path.abspath(p) == str(wd) else real(p, m))
    try:
        with pytest.raises(pipeline.WorkdirError, match="is not writable"):
            pipeline.run(_tiny(), str(wd), "train", progress=False)
    finally:
        os.chmod(wd, 0o755)
    assert os.listdir(wd) == ["keep.txt"]


def test_workdir_parent_is_a_file(tmp_path, tripwires):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(pipeline.WorkdirError, match="cannot be created"):
        pipeline.run(_tiny(), str(f / "sub"), "train", progress=False)


# --------------------------------------------------------------------------- the command line


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "rsc_jax.main", "--config=configs/digits.py", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.mark.parametrize("args,match", [
    (["--config.coding.sigmaa=0.3"], "unknown config field --config.coding.sigmaa ('sigmaa' does not exist; "
                                     "did you mean 'sigma'?)"),
    (["--config.train.epochs=2.5"], "flag --config.train.epochs=2.5"),
    (["--config.certify.alpha=2.0", "--mode=certify"], "config.certify.alpha=2.0"),
], ids=["unknown field", "wrong type", "range"])
def test_cli_bad_flags_one_line_no_traceback(args, match, workdir):
    p = _cli(f"--workdir={workdir}", *args)
    assert p.returncode != 0
    assert match in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    workdir.check()


def test_counts(capsys):
    """Prints how many bad inputs this module tries (quoted in docs/RELIABILITY.md)."""
    n = {"config types": len(TYPE_CASES), "config ranges": len(RANGE_CASES), "combinations": len(COMBO_CASES) + 2,
         "npz files": len(NPZ_CASES) + 1, "exports": 1 + 2 * 3 + 1, "images": len(BAD_IMAGES) * 5 + 1,
         "workdirs": 3, "command line": 3}
    with capsys.disabled():
        print(f"\nRELIABILITY bad inputs tried: {sum(n.values())} {json.dumps(n)}")
    assert sum(n.values()) > 100
