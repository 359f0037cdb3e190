"""Training on digits: the loss falls, 1 vs 4 devices agree, resume is exact, export round-trips."""

import json
import os

import jax
import numpy as np
import pytest

from rsc_jax import data, export, parallel, train
from rsc_jax.evaluators import clean
from tests.conftest import run_python
from tests.helpers import tiny_digits_config


@pytest.fixture(scope="module")
def digits():
    return data.load(tiny_digits_config())


def _params(clf):
    return jax.tree.leaves(clf.params)


def test_loss_falls_and_metrics_logged(digits, tmp_path):
    c = tiny_digits_config(epochs=2)
    clf, summary = train.train(c, digits, str(tmp_path), mesh=parallel.make_mesh(), progress=False)
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert summary["steps"] == 2 * (1437 // 32) == lines[-1]["step"]
    first, last = lines[0]["loss"], lines[-1]["loss"]
    assert last < 0.6 * first, (first, last)
    assert {"loss", "accuracy", "lr", "grad_norm", "epoch", "seconds"} <= set(lines[0])
    x, y = data.test_arrays(digits)
    r = clean.accuracy(clf, x, y, batch_size=120, draws=2, seed=0, mesh=parallel.make_mesh(), progress=False)
    assert r["accuracy"] > 0.5 and len(r["correct"]) == 360


def test_resume_gives_the_same_parameters(digits, tmp_path):
    c = tiny_digits_config(epochs=1, checkpoint_every=5)
    mesh = parallel.make_mesh()
    full, _ = train.train(c, digits, str(tmp_path / "full"), mesh=mesh, progress=False)
    part, s1 = train.train(c, digits, str(tmp_path / "cut"), mesh=mesh, progress=False, max_steps=17)
    assert s1["steps"] == 17
    resumed, s2 = train.train(c, digits, str(tmp_path / "cut"), mesh=mesh, progress=False)
    assert s2["resumed_from"] == 17 and s2["steps"] == 1437 // 32
    for a, b in zip(_params(full), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(_params(full), _params(part)))


def test_export_load_identical_logits(digits, tmp_path):
    c = tiny_digits_config(epochs=1)
    clf, _ = train.train(c, digits, str(tmp_path), mesh=parallel.make_mesh(), progress=False, max_steps=3)
    path = export.save(str(tmp_path / "export"), clf)
    loaded = export.load(path)
    assert loaded.config == clf.config
    x = jax.random.uniform(jax.random.key(0), (5, 8, 8, 1))
    key = jax.random.key(42)
    logits, logits0 = jax.jit(loaded.logits), jax.jit(clf.logits)     # eager op-by-op dispatch is slow
    np.testing.assert_array_equal(logits(key, x), logits0(key, x))
    # Per-example keys code each example as if it were alone.
    keys = jax.random.split(key, 5)
    np.testing.assert_allclose(logits(keys, x)[3], logits(keys[3], x[3:4])[0], rtol=1e-5, atol=1e-6)
    g = jax.jit(jax.grad(lambda x: loaded.logits(key, x).sum()))(x)
    assert g.shape == x.shape and np.all(np.isfinite(g)) and np.abs(g).max() > 0
    # Saving again replaces the old export only once the new one is complete.
    export.save(path, loaded)
    assert sorted(os.listdir(tmp_path / "export")) == ["config.json", "variables"]
    assert not os.path.exists(path + ".tmp") and not os.path.exists(path + ".old")


def test_export_errors(tmp_path):
    with pytest.raises(export.ExportError, match="no config.json"):
        export.load(str(tmp_path))


def test_one_vs_four_devices_same_parameters():
    out = run_python("""
import jax, numpy as np
from rsc_jax import data, parallel, train
from tests.helpers import tiny_digits_config
c = tiny_digits_config(epochs=1)
ds = data.load(c)
assert jax.device_count() == 4
res = []
for n in (1, 4):
    clf, _ = train.train(c, ds, f'/tmp/rsc_dev_test_{n}_{__import__("os").getpid()}', mesh=parallel.make_mesh(n),
                         progress=False, max_steps=6)
    res.append(jax.tree.leaves(clf.params))
print(max(float(np.abs(a - b).max()) for a, b in zip(*res)))
""", devices=4)
    diff = float(out.strip().splitlines()[-1])
    assert diff < 1e-5, diff
