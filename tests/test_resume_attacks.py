"""An attack stage stopped part-way resumes where it stopped (evaluators/cascade.Store):
the jobs it finished are read back, not re-run, and the report is the uninterrupted one."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from rsc_jax import coding, config, parallel
from rsc_jax.evaluators import cascade, robustness


class Linear:
    """A linear 10-class model behind RSC-II coding with the two attributes the store
    fingerprints (a ``Classifier``'s ``params`` and ``config``)."""

    def __init__(self, W):
        self.params = {"W": W}
        self.config = {"coding": {"method": "rsc2", "sigma": 0.2, "T": 2}}

    def logits(self, key, x):
        s = coding.encode(key, x, method="rsc2", T=2, sigma=0.2)
        return (s.reshape(2, x.shape[0], -1) @ self.params["W"]).mean(0)


def _setup():
    clf = Linear(jax.random.normal(jax.random.key(0), (64, 10)))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 8).astype(np.int32)
    c = config.attack()
    c.eps_grid, c.strong_eps, c.steps, c.strong_steps, c.strong_eot = (0.0, 0.1), (0.1,), 2, 2, 2
    c.judge_draws = c.select_draws = 2
    c.square_queries, c.ensemble, c.transfer, c.l2, c.sanity, c.gradient_check = 5, False, False, False, False, False
    c.convergence = c.doubled_budget = False
    c.batch_size, c.num_examples = 8, 8
    return clf, x, y, c


def _strip(r):
    r = json.loads(json.dumps(r))
    r.pop("seconds")
    for row in r["results"]:
        row.pop("seconds")
    return r


def test_a_stopped_attack_stage_resumes_with_the_same_report(tmp_path, monkeypatch):
    clf, x, y, c = _setup()
    mesh = parallel.make_mesh(1)
    real, calls = parallel.map_examples, []

    def counting(*a, **k):          # one call per job run on the examples it still has to do
        calls.append(1)
        if stop_at and len(calls) == stop_at:
            raise KeyboardInterrupt("preempted")
        return real(*a, **k)
    monkeypatch.setattr(parallel, "map_examples", counting)
    stop_at = 0
    whole = robustness.run(clf, x, y, c, workdir=str(tmp_path / "a"), mesh=mesh, progress=False)
    n_jobs = len(calls)
    assert n_jobs >= 5 and not os.path.exists(tmp_path / "a" / robustness.PARTIAL)    # removed with the report

    calls.clear()
    stop_at = 3
    with pytest.raises(KeyboardInterrupt):
        robustness.run(clf, x, y, c, workdir=str(tmp_path / "b"), mesh=mesh, progress=False)
    assert len(os.listdir(tmp_path / "b" / robustness.PARTIAL)) == 2
    assert not os.path.exists(tmp_path / "b" / "robustness.json")

    calls.clear()
    stop_at = 0
    again = robustness.run(clf, x, y, c, workdir=str(tmp_path / "b"), mesh=mesh, progress=False)
    assert len(calls) == n_jobs - 2                       # the two jobs saved before the stop are read back
    assert _strip(again) == _strip(whole)
    assert not os.path.exists(tmp_path / "b" / robustness.PARTIAL)


def test_store_keys_on_the_model_and_the_settings(tmp_path):
    """Another model, other images or another job setting never read a saved job."""
    clf, x, y, c = _setup()
    f = cascade.fingerprint(clf.params, clf.config, x, y, c)
    other = jax.tree.map(lambda v: v + 1.0, clf.params)
    assert cascade.fingerprint(clf.params, clf.config, x, y, c) == f
    assert cascade.fingerprint(other, clf.config, x, y, c) != f
    assert cascade.fingerprint(clf.params, clf.config, x[::-1].copy(), y, c) != f
    c2 = config.attack()
    c2.update(c.to_dict())
    c2.transfer_from = "/elsewhere/export"                      # another transfer model
    assert cascade.fingerprint(clf.params, clf.config, x, y, c2) != f
    assert cascade.fingerprint(clf.params, clf.config, x, y, c, (Linear(clf.params["W"] * 2),)) != f
    jobs = robustness.build_jobs(clf, c, {}, None)
    s = cascade.Store(str(tmp_path), f)
    assert len({s.path(j) for j in jobs}) == len(jobs)
    j = next(j for j in jobs if j.name.startswith("pgd-2") and j.eps == 0.1)
    s.save(j, {"avg": np.ones(8)})
    assert s.load(j, 8)["avg"].sum() == 8 and s.load(j, 9) is None
    assert cascade.Store(str(tmp_path), "another").load(j, 8) is None
    assert cascade.store_for(lambda k, xx: xx, x, y, c, str(tmp_path)) is None
