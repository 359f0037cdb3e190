"""Real multi-process runs on localhost (gloo CPU collectives): 2 processes x 2 CPU
devices against 1 process x 4 devices, and the start-up errors."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from rsc_jax import export
from tests.conftest import ROOT, xla_flags

SMALL = ["--config=configs/digits.py", "--config.dataset.num_train=256", "--config.dataset.num_test=50",
         "--config.train.epochs=1", "--config.model.width=0.25", "--config.coding.T=2",
         "--config.eval.batch_size=32", "--config.eval.draws=2", "--config.certify.num_examples=6",
         "--config.certify.n=100", "--config.certify.n0=20", "--config.certify.batch=50",
         "--config.certify.image_batch=4", "--progress=false", "--mode=train,evaluate,certify"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags())


def _main(*args):
    return subprocess.Popen([sys.executable, "-m", "rsc_jax.main", *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p, timeout=600):
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


@pytest.mark.slow
def test_two_processes_give_the_results_of_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    ref = _main(*SMALL, f"--workdir={one}", "--num_cpu_devices=4")
    launcher = subprocess.Popen(["bash", "launch/local_multiprocess.sh", "2", *SMALL, f"--workdir={two}",
                                 "--num_cpu_devices=2"], cwd=ROOT, env=dict(_env(), LOGDIR=str(tmp_path / "logs")),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rc, out = _finish(ref)
    assert rc == 0, out[-3000:]
    rc, out = _finish(launcher)
    assert rc == 0, out[-3000:]
    log1 = (tmp_path / "logs" / "process_1.log").read_text()
    assert "process 1 of 2" in log1                       # every process logs its place
    # Only process 0 writes metrics and reports; both took part in training.
    a, b = export.load(str(one / "export")), export.load(str(two / "export"))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    e1, e2 = (json.loads((d / "evaluation.json").read_text()) for d in (one, two))
    assert len(e2["correct"]) == 50 and e1["correct"] == e2["correct"]   # 50 = padded over 2 hosts
    c1, c2 = ([json.loads(l) for l in (d / "certify.jsonl").read_text().splitlines()] for d in (one, two))
    assert len(c2) == 6
    assert [r["counts"] for r in c1] == [r["counts"] for r in c2]
    assert [r["counts_selection"] for r in c1] == [r["counts_selection"] for r in c2]
    s1, s2 = (json.loads((d / "train_summary.json").read_text()) for d in (one, two))
    assert s1["steps"] == s2["steps"] == 4


def test_mismatched_flags_are_reported_not_hung(tmp_path):
    port = _free_port()
    common = ["--config=configs/digits.py", f"--workdir={tmp_path}", "--mode=evaluate", "--num_cpu_devices=1",
              f"--coordinator_address=localhost:{port}", "--num_processes=2", "--distributed_timeout=60"]
    p0 = _main(*common, "--process_id=0")
    p1 = _main(*common, "--process_id=1", "--config.coding.sigma=0.3")
    for p in (p0, p1):
        rc, out = _finish(p, timeout=120)
        assert rc != 0 and "differs between processes" in out, out[-2000:]
    assert os.listdir(tmp_path) == []


def test_unreachable_coordinator_names_address_and_timeout(tmp_path):
    port = _free_port()
    rc, out = _finish(_main("--config=configs/digits.py", f"--workdir={tmp_path}",
                            f"--coordinator_address=localhost:{port}", "--num_processes=2", "--process_id=1",
                            "--distributed_timeout=2"), timeout=60)
    assert rc != 0
    assert f"could not reach the coordinator at localhost:{port} within 2 s" in out, out[-2000:]


def test_model_axis_shards_big_kernels_and_trains_the_same():
    from tests.conftest import run_python
    out = run_python("""
import jax, numpy as np
from rsc_jax import data, parallel, train
from tests.helpers import tiny_digits_config
parallel.MODEL_SHARD_MIN_SIZE = 1000          # the tiny convnet's kernels count as big here
c = tiny_digits_config(epochs=1)
ds = data.load(c)
mesh = parallel.make_mesh(4, model=2)
assert dict(mesh.shape) == {'data': 2, 'model': 2}
k = np.zeros((3, 3, 16, 32), np.float32)
assert parallel.param_sharding(k.shape, mesh).spec == jax.P(None, None, None, 'model')
assert parallel.param_sharding((32,), mesh).spec == jax.P()
res = []
for m in (parallel.make_mesh(4, model=2), parallel.make_mesh(4)):
    clf, _ = train.train(c, ds, f'/tmp/rsc_model_axis_{m.shape["model"]}_{__import__("os").getpid()}',
                         mesh=m, progress=False, max_steps=4)
    res.append(jax.tree.leaves(clf.params))
print(max(float(np.abs(a - b).max()) for a, b in zip(*res)))
""", devices=4)
    assert float(out.strip().splitlines()[-1]) < 1e-5


def test_checkpoint_resumes_on_another_device_count():
    # A run checkpointed on a 4-device mesh (model axis 2, so some leaves are split)
    # resumes on 1 device and ends where an uninterrupted 1-device run ends.
    from tests.conftest import run_python
    out = run_python("""
import os, jax, numpy as np
from rsc_jax import data, parallel, train
from tests.helpers import tiny_digits_config
parallel.MODEL_SHARD_MIN_SIZE = 1000
c = tiny_digits_config(epochs=1, checkpoint_every=4)
ds = data.load(c)
base = f'/tmp/rsc_reshard_{os.getpid()}'
_, s1 = train.train(c, ds, base + '_cut', mesh=parallel.make_mesh(4, model=2), progress=False, max_steps=8)
resumed, s2 = train.train(c, ds, base + '_cut', mesh=parallel.make_mesh(1), progress=False, max_steps=4)
full, _ = train.train(c, ds, base + '_full', mesh=parallel.make_mesh(1), progress=False, max_steps=12)
assert (s1['steps'], s2['resumed_from'], s2['steps']) == (8, 8, 12), (s1, s2)
print(max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params))))
""", devices=4)
    assert float(out.strip().splitlines()[-1]) < 1e-5
