"""Safe on a cluster (issue 28): a SIGTERM to a run piped through ``tee`` (what ``scancel``,
``timeout`` and Kubernetes send to the whole process group) loses no completed step,
``--help | head`` prints no traceback, and progress suits where it goes (bars on a
terminal, plain lines in a log file)."""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rsc_jax import progress, terminal
from tests.conftest import ROOT, xla_flags
from tests.test_reliability import _variables, committed_steps, metrics_steps, tmp_dirs

# Small steps, many of them, and no periodic checkpoint before the epoch ends: the only
# checkpoint a stopped run can have is the one its SIGTERM handler saves.
ARGS = ["--config=configs/digits.py", "--mode=train", "--config.model.width=0.25", "--config.coding.T=2",
        "--config.train.epochs=1", "--config.train.batch_size=16", "--config.train.checkpoint_every=1000",
        "--config.train.log_every=1"]
TOTAL_STEPS = 1437 // 16


def _env() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = xla_flags()
    return env


def _cli(workdir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rsc_jax.main", f"--workdir={workdir}", *ARGS, *extra]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_sigterm_to_a_tee_pipeline_loses_no_step_and_resumes_bit_for_bit(tmp_path):
    base = subprocess.run(_cli(str(tmp_path / "base"), "--progress=false"), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert base.returncode == 0, base.stderr[-3000:]
    want = _variables(str(tmp_path / "base" / "export"))

    wd = str(tmp_path / "cut")
    # `cmd 2>&1 | tee` in its own process group (a SLURM step, a `timeout` child): the
    # signal reaches python, tee and the shell at once; tee's end of the pipe goes away.
    shell = " ".join(map(shlex.quote, _cli(wd))) + f" 2>&1 | tee {shlex.quote(str(tmp_path / 'tee.log'))}"
    p = subprocess.Popen(["bash", "-c", shell], cwd=ROOT, env=_env(), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_end = time.time() + 300
    while len(metrics_steps(wd)) < 12:      # past 10 % (step 8): a plain progress line went through the pipe
        assert p.poll() is None and time.time() < t_end, "the piped run ended before it logged 12 steps"
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=60)
    while _group_alive(p.pid):      # python outlives the shell: it finishes the step and saves
        assert time.time() < t_end, "the signalled run did not end"
        time.sleep(0.05)
    done = max(metrics_steps(wd))   # every completed step is logged before any output is written
    assert done < TOTAL_STEPS, "the run finished before the signal: nothing was tested"
    assert committed_steps(wd) and max(committed_steps(wd)) >= done, (committed_steps(wd), done)
    assert not tmp_dirs(wd), f"a checkpoint save was left half-written: {tmp_dirs(wd)}"
    stopped = max(committed_steps(wd))
    piped = (tmp_path / "tee.log").read_text()      # what tee wrote before it died: lines, no redrawn bar
    assert "\r" not in piped and "train: step " in piped, piped[-2000:]
    log = open(os.path.join(wd, "log.txt")).read()
    assert f"stopped by SIGTERM after step {stopped}" in log and "Traceback" not in log, log[-3000:]

    resumed = subprocess.run(_cli(wd, "--progress=false"), cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {stopped} of {TOTAL_STEPS}" in open(os.path.join(wd, "log.txt")).read()
    got = _variables(os.path.join(wd, "export"))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)          # bit for bit


def test_help_into_a_closed_pipe_prints_no_traceback():
    """``rsc-jax --help | head``: the reader is gone before the help is written."""
    p = subprocess.Popen([sys.executable, "-m", "rsc_jax.main", "--help"], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                 # as `head` does once it has its lines
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


class _Broken(io.StringIO):
    """A stream whose reader went away (EPIPE on every write and flush)."""

    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        raise io.UnsupportedOperation("no fd")


def test_guarded_stream_drops_writes_after_a_broken_pipe_and_passes_other_errors():
    s = terminal.GuardedStream(_Broken())
    assert s.write("lost\n") == 5 and s.lost
    s.flush()
    s.write("also dropped\n")
    assert not s.isatty()

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        terminal.GuardedStream(Full()).write("x")


def test_line_progress_prints_a_plain_line_per_tenth_with_rate_and_eta(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    b = progress.bar(20, desc="train", unit="step", initial=0, file=out)   # StringIO is not a terminal
    assert isinstance(b, progress.LineProgress)
    for i in range(20):             # step i + 1 ends 0.5 s after step i
        now[0] = 0.5 * i
        if i == 9:
            b.set_postfix(loss="0.912")
        b.update(1)
    b.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 10, lines     # steps 2, 4, ..., 18 and the end
    # the clock starts at the end of step 1 (a first step's compile time is not a rate):
    # at step 2 one step in 0.5 s = 2 steps/s, 18 steps left -> ETA 9 s
    assert lines[0] == "train: step 2/20 (10%), 2 step/s, ETA 9 s", lines[0]
    assert lines[4] == "train: step 10/20 (50%), loss 0.912, 2 step/s, ETA 5 s", lines[4]
    assert lines[-1] == "train: step 20/20 (100%), loss 0.912, 2 step/s", lines[-1]
    # transient bars and disabled progress print nothing off a terminal
    quiet = io.StringIO()
    for b in (progress.bar(5, leave=False, file=quiet), progress.bar(5, enabled=False, file=quiet)):
        b.update(5)
        b.close()
    assert quiet.getvalue() == ""


def test_training_from_python_leaves_the_root_logger_alone(tmp_path):
    """orbax logs through absl, which adds a stderr handler to a bare root logger; a
    library call must not leave it behind (a notebook would print every library's warnings)."""
    import logging

    import jax

    from rsc_jax import checkpoints, classifier, data, parallel, train
    from tests.helpers import tiny_digits_config
    c = tiny_digits_config()
    c.model.spiking, c.coding.T = False, 1          # the ANN twin compiles fast
    root = logging.getLogger()
    saved = list(root.handlers)
    for h in saved:
        root.removeHandler(h)                       # a fresh interpreter's root logger (pytest adds its own)
    try:
        ds = data.load(c)
        cc = train.classifier_config(c, ds)
        zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),     # no init compiled: the test is about logging
                             jax.eval_shape(lambda: classifier.init_variables(cc, jax.random.key(0))))
        clf, _ = train.train(c, ds, str(tmp_path), mesh=parallel.make_mesh(), progress=False, max_steps=0,
                             init_variables=zeros)
        assert root.handlers == [], root.handlers
        checkpoints.save_variables(str(tmp_path / "v"), clf.params)         # exports: orbax too
        shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), clf.params)
        checkpoints.restore_variables(str(tmp_path / "v"), shapes)
        assert root.handlers == [], root.handlers
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)


def test_log_file_keeps_our_info_and_only_other_libraries_warnings(tmp_path):
    import logging

    def record(name: str, level: int, path: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, path, 1, f"{name} {logging.getLevelName(level)}", None, None)

    ours = os.path.join(os.path.dirname(terminal.__file__), "train.py")
    orbax = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
    for verbosity, want in ((None, ["rsc_jax.train INFO", "orbax WARNING"]),
                            (logging.INFO, ["rsc_jax.train INFO", "orbax INFO", "orbax WARNING"])):
        h = terminal._LogFile(libraries=verbosity or logging.WARNING)
        h.setFormatter(logging.Formatter("%(message)s"))
        for r in (record("rsc_jax.train", logging.INFO, ours), record("orbax", logging.INFO, orbax),
                  record("orbax", logging.WARNING, orbax)):
            h.handle(r)
        assert h.held == want, (verbosity, h.held)
