"""What a newcomer sees on the terminal: ``--help``, one-line errors (a missing config
file, a damaged export), Ctrl-C outside training, and the optional TensorBoard writer.
The whole pipeline's terminal output is checked in ``tests/test_cli.py``; Ctrl-C during
training and the metrics.jsonl dedupe in ``tests/test_reliability.py``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import pytest

from rsc_jax import classifier, config, config_checks, data, export, parallel, train
from rsc_jax.validation import ConfigError
from tests.conftest import ROOT
from tests.helpers import tiny_digits_config

TINY = ["--config.model.width=0.25", "--config.coding.T=2", "--progress=false"]
# Reading a damaged export in-process leaves orbax reader coroutines that Python reports
# when they are collected (in whichever test runs then).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _cli(*args, timeout=300, config="--config=configs/digits.py"):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "rsc_jax.main", config, *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_help_lists_modes_and_config_fields_and_exits_0():
    p = _cli("--help")
    assert p.returncode == 0, p.stderr[-2000:]
    for mode in config.MODES:
        assert f"\n  {mode} " in p.stdout, mode
    for section, value in config.base().items():
        assert f"\n  {section}" in p.stdout, section
    assert "sigma=0.2" in p.stdout and "epochs=15" in p.stdout and "tensorboard=False" in p.stdout
    assert "--config.SECTION.FIELD=VALUE" in p.stdout and "--workdir" in p.stdout
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("extra", [[], ["--config.train.epochs=2"]], ids=["plain", "with override"])
def test_missing_config_file_is_one_line(extra, tmp_path):
    p = _cli(f"--workdir={tmp_path / 'run'}", *extra, config="--config=configs/no_such_config.py")
    assert p.returncode == 1
    lines = _lines(p.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no_such_config" in lines[0], p.stderr[-3000:]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- damaged exports


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """An untrained export of the tiny digits convnet (width 1/4, T 2): no training needed."""
    c = tiny_digits_config()
    cc = train.classifier_config(c, data.load(c))
    clf = classifier.Classifier(cc, classifier.init_variables(cc, jax.random.key(0)))
    return export.save(str(tmp_path_factory.mktemp("exports") / "good"), clf)


def _damaged(good: str, where: str) -> str:
    """A copy of ``good`` with its largest array file truncated to half."""
    bad = os.path.join(where, "damaged")
    shutil.copytree(good, bad)
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(bad, "variables")) for f in fs]
    big = max(files, key=os.path.getsize)
    with open(big, "r+b") as f:
        f.truncate(os.path.getsize(big) // 2)
    return bad


def test_truncated_export_config_json_names_the_file(tiny_export, tmp_path):
    bad = str(tmp_path / "cut")
    shutil.copytree(tiny_export, bad)
    text = open(os.path.join(bad, "config.json")).read()
    with open(os.path.join(bad, "config.json"), "w") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(export.ExportError, match=r"config\.json is damaged, not valid JSON") as e:
        export.load_config(bad)
    assert os.path.join(bad, "config.json") in str(e.value) and "\n" not in str(e.value)


def test_damaged_export_is_one_short_line_and_leaves_the_workdir_alone(tiny_export, tmp_path):
    """A certify run against a truncated export: one line naming the export and the kind
    of damage (no TensorStore spec), and the workdir's config.json (n = 2000) untouched."""
    bad = _damaged(tiny_export, str(tmp_path))
    with pytest.raises(export.ExportError) as e:
        export.load(bad)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 500 and "an array file is truncated" in msg and repr(bad) in msg, msg

    wd = tmp_path / "run"
    wd.mkdir()
    before = {"config.json": json.dumps({"certify": {"n": 2000}}), "certified.json": '{"n": 2000}'}
    for k, v in before.items():
        (wd / k).write_text(v)
    p = _cli(f"--workdir={wd}", "--mode=certify", f"--export={bad}", "--config.certify.n=500", *TINY)
    assert p.returncode == 1
    lines = _lines(p.stderr)
    head = msg.split(" (")[0]          # which array the reader trips on first varies
    assert len(lines) == 1 and lines[0].startswith(f"error: {head} (") and len(lines[0]) < 500, p.stderr[-3000:]
    assert sorted(os.listdir(wd)) == sorted(before)                     # no log.txt, no new config.json
    assert {k: (wd / k).read_text() for k in before} == before
    # absl's --verbosity brings the library's log lines (orbax's INFO lines) back to the
    # terminal; the error is still printed once.
    p = _cli(f"--workdir={wd}", "--mode=certify", f"--export={bad}", "--verbosity=0", *TINY)
    assert p.returncode == 1 and p.stderr.count(head) == 1, p.stderr[-3000:]
    assert any(ln.startswith("I") and "checkpoint" in ln for ln in p.stderr.splitlines()), p.stderr[-3000:]


def test_ctrl_c_outside_training_is_one_line(tiny_export, tmp_path):
    """SIGINT while the evaluation compiles or runs: one line, no traceback, status 130."""
    out = tmp_path / "stdout"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with open(out, "w") as fo, open(tmp_path / "stderr", "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "rsc_jax.main", "--config=configs/digits.py",
                                 f"--workdir={tmp_path / 'run'}", "--mode=evaluate", f"--export={tiny_export}",
                                 "--config.eval.draws=40", *TINY], stdout=fo, stderr=fe, cwd=ROOT, env=env)
    t_end = time.time() + 120
    while "[1/1] evaluate" not in out.read_text() and proc.poll() is None and time.time() < t_end:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=60)
    err = (tmp_path / "stderr").read_text()
    assert rc == 130, (rc, err[-3000:])
    lines = _lines(err)
    assert len(lines) == 1 and lines[0].startswith("interrupted (Ctrl-C) during [1/1] evaluate"), err[-3000:]
    assert "interrupted by Ctrl-C" in (tmp_path / "run" / "log.txt").read_text()


# --------------------------------------------------------------------------- TensorBoard


def _scalars(event_file: str) -> dict[str, list[tuple[int, float]]]:
    """The scalar summaries of a TFRecord event file (read with tensorboardX's protos)."""
    from tensorboardX.proto import event_pb2
    out: dict[str, list[tuple[int, float]]] = {}
    with open(event_file, "rb") as f:
        while header := f.read(12):
            (n,) = struct.unpack("<Q", header[:8])
            ev = event_pb2.Event.FromString(f.read(n))
            f.read(4)
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_tensorboard_scalars_written_when_enabled(tmp_path):
    pytest.importorskip("tensorboardX", reason="tensorboardX is optional (not in requirements.txt)")
    c = tiny_digits_config(log_every=5, checkpoint_every=5)
    c.model.spiking, c.coding.T = False, 1          # the ANN twin compiles fast
    c.train.tensorboard = True
    config_checks.check_train(c.train, c.eval)
    train.train(c, data.load(c), str(tmp_path), mesh=parallel.make_mesh(), progress=False, max_steps=10)
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "tensorboard") for f in fs]
    assert len(files) == 1 and "tfevents" in files[0]
    s = _scalars(files[0])
    assert [st for st, _ in s["train/loss"]] == [5, 10] and {"train/accuracy", "train/lr"} <= set(s)
    metrics = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [v for _, v in s["train/loss"]] == pytest.approx([m["loss"] for m in metrics], rel=1e-6)


def test_tensorboard_without_the_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)   # as if not installed
    c = config.base()
    c.train.tensorboard = True
    with pytest.raises(ConfigError, match=r"config\.train\.tensorboard=True is not allowed; tensorboardX is not "
                                          r"installed \(pip install tensorboardX\)"):
        config_checks.check_train(c.train, c.eval)
    c.train.tensorboard = False
    config_checks.check_train(c.train, c.eval)
