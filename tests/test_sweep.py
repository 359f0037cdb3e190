"""The sweep tool: grids, overrides, resuming without redoing finished runs, the table."""

import json
import os

import pytest

from rsc_jax import config, config_checks, sweep


def test_grid_and_overrides():
    runs = sweep.grid("rsc2", **{"coding.sigma": [0.1, 0.3], "coding.T": [4, 8]})
    assert [r["name"] for r in runs] == ["rsc2_sigma0.1_T4", "rsc2_sigma0.1_T8", "rsc2_sigma0.3_T4",
                                         "rsc2_sigma0.3_T8"]
    cfg = sweep.run_config({"base": "digits"}, runs[3], seed=2)
    assert (cfg.coding.sigma, cfg.coding.T, cfg.seed) == (0.3, 8, 2)
    with pytest.raises(KeyError, match="coding.sigmaa"):
        sweep.run_config({"base": "digits"}, {"name": "x", "overrides": {"coding.sigmaa": 1}}, 0)


def test_sweep_overrides_and_per_run_seeds():
    sw = {"base": "digits", "seeds": [0], "overrides": {"coding.sigma": 0.3, "attack.quick": False}}
    run = {"name": "r", "overrides": {"coding.sigma": 0.05}, "seeds": [4, 5]}
    cfg = sweep.run_config(sw, run, seed=5)
    assert (cfg.coding.sigma, cfg.attack.quick, cfg.seed) == (0.05, False, 5)   # the run's own value wins
    assert sweep.seeds_of(sw, run) == [4, 5] and sweep.seeds_of(sw, {"name": "q", "overrides": {}}) == [0]
    grid = sweep.coding_grid(Ts=(4,), sigmas=(0.1,), headline=("poisson_T4",), headline_seeds=(0, 1),
                             others={"attack.ensemble": False})
    sw = dict(sw, runs=grid)
    order = sweep.work_list(sw)
    assert [(r["name"], s) for r, s in order] == [("poisson_T4", 0), ("direct_T4", 0), ("rsc1_sigma0.1_T4", 0),
                                                  ("rsc2_sigma0.1_T4", 0), ("ann", 0), ("poisson_T4", 1)]
    assert [(r["name"], s) for r, s in sweep.work_list(sw, "_seed1")] == [("poisson_T4", 1)]
    assert [(r["name"], s) for r, s in sweep.work_list(sw, "rsc")] == [("rsc1_sigma0.1_T4", 0), ("rsc2_sigma0.1_T4", 0)]
    assert all(r["overrides"].get("attack.ensemble") is (False if r["name"] != "poisson_T4" else None) for r in grid)
    with pytest.raises(KeyError, match="rsc3"):
        sweep.coding_grid(headline=("rsc3_T4",))
    cut = sweep.coding_grid(Ts=(4, 8), sigmas=(0.1,), skip=("direct_T4",), only_at={8: ("poisson_T8",)})
    assert [r["name"] for r in cut] == ["poisson_T4", "rsc1_sigma0.1_T4", "rsc2_sigma0.1_T4", "poisson_T8", "ann"]
    with pytest.raises(KeyError, match=r"only_at\[8\] runs \['poisson_T9'\]"):
        sweep.coding_grid(Ts=(4, 8), only_at={8: ("poisson_T9",)})


@pytest.mark.parametrize("name,n_runs,n_jobs", [("digits_codings", 13 + 4, 17 + 2 * 5),
                                                ("mnist_codings", 13 + 2, 15 + 2 * 5),
                                                ("cifar10_codings", 10 + 2, 12 + 2 * 4)])
def test_paper_sweeps_are_complete_and_valid(name, n_runs, n_jobs):
    full = config.call_file(os.path.join(config.CONFIG_DIR, "sweeps", f"{name}.py"), "get_sweep")
    assert len(full["runs"]) == n_runs
    assert sum(len(sweep.seeds_of(full, r)) for r in full["runs"]) == n_jobs
    methods = {r["overrides"]["coding.method"] for r in full["runs"]}
    assert methods == {"direct", "poisson", "rsc1", "rsc2"}
    sigmas = {r["overrides"].get("coding.sigma") for r in full["runs"] if r["overrides"]["coding.method"] == "rsc2"}
    assert sigmas == set(sweep.PAPER_SIGMAS)
    for run in full["runs"]:                  # every run's config passes validation
        config_checks.validate(sweep.run_config(full, run, seed=0))


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
    fv = flags.FlagValues()               # another test in this process may have imported rsc_jax.main
    monkeypatch.setattr(sweep, "FLAGS", fv)
    sweep.define_flags(fv)
    fv(argv)
    sweep.main(argv)
    assert len(calls) == 2
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["run"], r["coding"]) for r in rows] == [("a", "rsc2"), ("b", "poisson")]
    assert all(0 <= r["clean"] <= 1 for r in rows)
    assert "| a | 1 |" in (tmp_path / "out" / "results.md").read_text()
    sweep.main(argv)                      # finished runs are not redone
    assert len(calls) == 2


@pytest.mark.parametrize("name", ["digits_controlled", "mnist_controlled", "cifar10_controlled"])
def test_controlled_sweeps(name):
    """The controlled comparisons: RSC-I at sigma / sqrt(T) beside RSC-II at sigma, the ANN
    baselines (Gaussian noise at both sigmas, T = 1 so the certificate is Cohen et al.'s;
    Poisson), the rand attack preset on every test image, every run valid."""
    from rsc_jax.evaluators import robustness
    full = config.call_file(os.path.join(config.CONFIG_DIR, "sweeps", f"{name}.py"), "get_sweep")
    runs = {r["name"]: r["overrides"] for r in full["runs"]}
    assert runs["rsc1_sigma0.1_T4"]["coding.sigma"] == pytest.approx(0.2 / 4 ** 0.5)
    assert runs["rsc2_sigma0.2_T4"]["coding.sigma"] == 0.2
    for s in (0.1, 0.2):
        assert runs[f"ann_gauss_sigma{s}"] == {"model.spiking": False, "coding.method": "rsc1", "coding.sigma": s,
                                               "coding.T": 1}
    assert runs["ann_poisson"]["coding.method"] == "poisson" and not runs["ann_poisson"]["model.spiking"]
    # the noise-matched Poisson control: the ANN on the mean of the SNN's 4 frames
    assert runs["ann_poisson_mean4"] == {"model.spiking": False, "coding.method": "poisson", "coding.T": 4}
    for run in full["runs"]:
        cfg = sweep.run_config(full, run, seed=0)
        config_checks.validate(cfg)
        assert cfg.attack.num_examples == -1 and cfg.attack.apgd_steps == 100 and cfg.attack.apgd_eot == 20
        assert robustness.preset(cfg.attack) == ("custom" if name == "digits_controlled" else "rand")
