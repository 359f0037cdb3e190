"""The sweep tool: grids, overrides, resuming without redoing finished runs, the table."""

import json
import os

import pytest

from rsc_jax import config, sweep


def test_grid_and_overrides():
    runs = sweep.grid("rsc2", **{"coding.sigma": [0.1, 0.3], "coding.T": [4, 8]})
    assert [r["name"] for r in runs] == ["rsc2_sigma0.1_T4", "rsc2_sigma0.1_T8", "rsc2_sigma0.3_T4",
                                         "rsc2_sigma0.3_T8"]
    cfg = sweep.run_config({"base": "digits"}, runs[3], seed=2)
    assert (cfg.coding.sigma, cfg.coding.T, cfg.seed) == (0.3, 8, 2)
    with pytest.raises(KeyError, match="coding.sigmaa"):
        sweep.run_config({"base": "digits"}, {"name": "x", "overrides": {"coding.sigmaa": 1}}, 0)
    full = config.call_file(os.path.join(config.CONFIG_DIR, "sweeps", "digits_codings.py"), "get_sweep")
    assert len(full["runs"]) == 2 + 2 + 10 + 10 + 1 and full["seeds"] == [0, 1, 2]


def test_sweep_runs_resumes_and_collects(tmp_path, monkeypatch):
    sw = tmp_path / "s.py"
    sw.write_text(
        "def get_sweep():\n"
        "    o = {'model.width': 0.25, 'coding.T': 2, 'train.epochs': 1, 'dataset.num_train': 128,\n"
        "         'dataset.num_test': 40, 'eval.batch_size': 40, 'eval.draws': 2}\n"
        "    return {'base': 'digits', 'modes': 'train,evaluate', 'seeds': [0],\n"
        "            'runs': [{'name': 'a', 'overrides': dict(o, **{'coding.sigma': 0.1})},\n"
        "                     {'name': 'b', 'overrides': dict(o, **{'coding.method': 'poisson'})}]}\n")
    calls = []
    from rsc_jax import pipeline as cli
    real = cli.run
    monkeypatch.setattr(cli, "run", lambda cfg, d, modes, progress: calls.append(d) or real(cfg, d, modes, progress=False))
    argv = ["sweep", f"--sweep={sw}", f"--workdir={tmp_path / 'out'}"]
    from absl import flags
    flags.FLAGS(argv)
    sweep.main(argv)
    assert len(calls) == 2
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["run"], r["coding"]) for r in rows] == [("a", "rsc2"), ("b", "poisson")]
    assert all(0 <= r["clean"] <= 1 for r in rows)
    assert "| a | 1 |" in (tmp_path / "out" / "results.md").read_text()
    sweep.main(argv)                      # finished runs are not redone
    assert len(calls) == 2
    flags.FLAGS.unparse_flags()
