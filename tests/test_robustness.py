"""Tests of the robustness evaluator (rsc_jax.evaluators.robustness, attack_suite, masking):
config, runner outputs, checks, batch/device invariance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from rsc_jax import apgd, attacks, coding, config, config_checks, judging, metrics, parallel, report
from rsc_jax.evaluators import masking, robustness
from tests.conftest import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- toy classifier


def digits():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]      # [1797, 8, 8, 1] in [0, 1]
    y = d.target.astype(np.int32)
    return x, y


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge regression onto one-hot targets (no training loop to compile)."""
    a = np.concatenate([x.reshape(len(x), -1), np.ones((len(x), 1), np.float32)], 1)
    t = np.eye(10, dtype=np.float32)[y]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ t).astype(np.float32)
    return w[:-1], w[-1]


class ToyClassifier:
    """A linear digits classifier behind RSC-II coding: logits = mean_t (x + eps_t) W + b."""

    def __init__(self, W, b, *, sigma=0.2, T=4, stop_grad=False, method=None):
        self.W, self.b, self.sigma, self.T, self.stop_grad = jnp.asarray(W), jnp.asarray(b), sigma, T, stop_grad
        self.method = method or ("rsc2" if sigma else "direct")
        self.config = {"coding": {"method": self.method, "sigma": sigma, "T": T}}

    def with_coding(self, method, sigma=0.0):
        return ToyClassifier(self.W, self.b, sigma=sigma, T=self.T, stop_grad=self.stop_grad, method=method)

    def logits(self, key, x):
        if self.stop_grad:
            x = jax.lax.stop_gradient(x)
        s = coding.encode(key, x, method=self.method, T=self.T, sigma=self.sigma)
        return (s.reshape(self.T, x.shape[0], -1) @ self.W + self.b).mean(0)


def toy_setup():
    x, y = digits()
    W, b = ridge(x[:1400], y[:1400], 1.0)
    Wt, bt = ridge(x[:1400], y[:1400], 10.0)
    clf = ToyClassifier(W, b)
    variants = {"masked": ToyClassifier(W, b, stop_grad=True).logits,
                "plain": ToyClassifier(W, b).logits}
    transfer = ToyClassifier(Wt, bt, sigma=0.0, T=1)        # "ANN twin": no noise
    return clf, variants, transfer, x[1400:], y[1400:]


def tiny_config(batch_size: int = 8):
    c = config.attack()
    c.eps_grid = (0.0, 0.05, 0.1)
    c.strong_eps = (0.1,)
    c.step_size = 0.05
    c.steps = 2
    c.strong_steps = 4
    c.strong_eot = 2
    c.judge_draws = 2
    c.select_draws = 2
    c.square_queries = 10
    c.square_p_init = 0.3
    c.sanity_eps = 0.5
    c.sanity_steps = 3
    c.apgd_steps = 3          # the ensemble and the transfer run APGD-CE at the APGD budget
    c.apgd_eot = 2
    c.l2_eps_grid = (0.0, 0.5, 1.0)
    c.batch_size = batch_size
    c.num_examples = 24
    c.seed = 3
    return c


def reduced_config(batch_size: int):
    """``tiny_config`` without FGSM, l_2, sanity and gradient check (fewer compilations);
    its rows are a subset of the tiny config's rows, with identical values."""
    c = tiny_config(batch_size)
    c.fgsm = False
    c.l2 = False
    c.sanity = False
    c.gradient_check = False
    return c


def _rows(result):
    """``{(name, eps): row}`` without wall-clock times."""
    out = {}
    for row in json.loads(json.dumps(result["results"])):
        row.pop("seconds")
        out[(row["name"], row["eps"])] = row
    return out


def _strip(result):
    """The result without wall-clock times (for equality across runs)."""
    r = json.loads(json.dumps(result))
    r.pop("seconds")
    r.pop("devices")
    r["config"].pop("batch_size")
    for row in r["results"]:
        row.pop("seconds")
    return r


@pytest.fixture(scope="module")
def setup():
    return toy_setup()


@pytest.fixture(scope="module")
def run8(setup, tmp_path_factory):
    clf, variants, transfer, x, y = setup
    wd = str(tmp_path_factory.mktemp("rob8"))
    res = robustness.run(clf, x, y, tiny_config(8), workdir=wd, mesh=parallel.make_mesh(1),
                         variants=variants, transfer=transfer, progress=False)
    return res, wd


# --------------------------------------------------------------------------- runner


def test_runner_writes_json_png_and_markdown(run8, setup):
    res, wd = run8
    clf, _, _, x, y = setup
    with open(os.path.join(wd, "robustness.json")) as f:
        assert json.load(f) == json.loads(json.dumps(res))
    with open(os.path.join(wd, "robustness.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert res["n_examples"] == 24 and res["judge_draws"] == 2 and res["seed"] == 3
    assert res["coding"] == {"method": "rsc2", "sigma": 0.2, "T": 4}
    rows = res["results"]
    clean = rows[0]
    assert clean["name"] == "clean"
    # Clean accuracy equals a direct judge on the judge stream (stream 1).
    jk = judging.example_keys(3, jnp.arange(24), stream=robustness.STREAM_JUDGE)
    direct = judging.judge(clf.logits, jk, jnp.asarray(x[:24]), jnp.asarray(y[:24]), draws=2)
    assert clean["acc_avg"] == pytest.approx(float(direct["correct_avg"].mean()), abs=1e-6)
    assert clean["acc_single"] == pytest.approx(float(direct["correct_single"].mean()), abs=1e-6)
    assert clean["acc_avg"] > 0.8
    for r in rows:
        assert r["all_in_range"], r["name"]
        assert {"eps", "judge_draws", "n_examples", "seed", "crafted_with", "acc_single", "acc_avg"} <= set(r)
        if r["eps"] == 0:
            assert (r["acc_avg"], r["acc_single"]) == (clean["acc_avg"], clean["acc_single"])
        if r["norm"] == "linf" and r["name"] != "clean":
            assert r["max_linf"] <= r["eps"] + 1e-6, r["name"]
        if r["norm"] == "l2":
            assert r["max_l2"] <= r["eps"] + 1e-5
    names = [r["name"] for r in rows]
    for nm in ("fgsm", "pgd-2", "pgd-4", "pgd-2-eot2", "ensemble-apgd", "transfer-apgd", "square",
               "sanity-pgd", "pgd-2-l2"):
        assert nm in names, nm
    pgd = {r["eps"]: r for r in rows if r["name"] == "pgd-2"}
    assert pgd[0.1]["acc_avg"] < clean["acc_avg"] - 0.1
    assert pgd[0.1]["max_linf"] >= 0.05
    assert pgd[0.1]["steps"] == 2 and pgd[0.1]["step_size"] == 0.05 and pgd[0.1]["eot"] == 1
    # at the strong eps the stronger PGD rows step strong_step_scale * eps / steps
    strong = {r["name"]: r for r in rows if r["eps"] == 0.1}
    assert strong["pgd-4"]["step_size"] == pytest.approx(2.5 * 0.1 / 4)
    assert strong["pgd-2-eot2"]["step_size"] == pytest.approx(2.5 * 0.1 / 2)
    assert strong["transfer-apgd"]["steps"] == 3 and strong["transfer-apgd"]["eot"] == 2
    ens = next(r for r in rows if r["name"] == "ensemble-apgd")
    assert ens["steps"] == 3 and ens["eot"] == 2
    assert set(ens["per_variant"]) == {"model", "masked", "plain"}
    assert sum(ens["chosen_counts"].values()) == 24
    # The stop-gradient variant is a weak attack, and the ensemble is not weaker than model PGD.
    assert ens["per_variant"]["masked"]["acc_avg"] > ens["per_variant"]["model"]["acc_avg"]
    assert ens["acc_avg"] <= ens["per_variant"]["model"]["acc_avg"] + 1 / 24
    sanity = next(r for r in rows if r["name"] == "sanity-pgd")
    assert sanity["acc_avg"] == 0.0
    assert sanity["eot"] == config.attack().sanity_eot == 10        # RSC-II coding: stochastic
    # QTE per curve equals metrics.qte of the rows.
    assert set(res["curves"]) == {"fgsm", "pgd", "pgd-l2"}
    for c in res["curves"].values():
        assert c["qte_avg"] == pytest.approx(metrics.qte(c["eta"], c["acc_avg"]))
        assert c["qte_single"] == pytest.approx(metrics.qte(c["eta"], c["acc_single"]))
    assert res["curves"]["pgd"]["eta"] == [0.0, 0.05, 0.1]
    # The worst case selects per example over all l_inf attacks at 0.1 on the judge
    # stream: what the selection saw is at most the smallest row.
    w = res["worst_case"][0]
    at01 = [r["acc_avg"] for r in rows if r["eps"] == 0.1 and r["norm"] == "linf"]
    assert w["selection_acc_avg"] <= min(at01) + 1e-9
    assert w["attacks"][0] == "clean" and w["judge"] == {"stream": 3, "draws": 2}
    # Checks: all five kinds, each pass/FLAG consistent with its numbers.
    checks = {c["name"]: c for c in res["checks"]}
    for nm in ("monotone/pgd", "huge-budget", "input-gradient"):
        assert nm in checks
    assert any(n.startswith("strong-vs-pgd2") for n in checks)
    assert any(n.startswith("transfer-apgd-not-stronger") for n in checks)
    assert any(n.startswith("square-not-stronger") for n in checks)
    assert checks["huge-budget"]["status"] == "pass"
    assert checks["input-gradient"]["status"] == "pass"
    assert checks["input-gradient"]["frac_finite_nonzero"] == 1.0
    for c in res["checks"]:
        if c["name"].startswith("monotone/"):
            assert (c["status"] == "pass") == (c["max_rise"] <= 0.02)
    md = report.robustness_markdown(res)
    assert "## Adversarial robustness" in md and "![robustness](robustness.png)" in md
    assert "| pgd-2 | linf | 0.1 |" in md
    for c in res["checks"]:
        assert c["name"] in md
    assert f"{res['curves']['pgd']['qte_avg']:.4f}" in md


def test_correct_avg_records_acc_avg_per_example_in_test_set_order(run8, setup):
    res, wd = run8
    clf, _, _, x, y = setup
    n = res["n_examples"]
    for r in res["results"] + res["worst_case"]:
        s = r["correct_avg"]
        assert len(s) == n and set(s) <= {"0", "1"}
        assert s.count("1") / n == pytest.approx(r["acc_avg"], abs=1e-6)       # acc_avg: a float32 mean
        assert round(r["acc_avg"] * n) == s.count("1")
        assert r["ci95_avg"] == pytest.approx(list(metrics.binomial_interval(s.count("1"), n)))
    # Test-set order: the clean row is, example by example, a direct judge on the judge stream.
    jk = judging.example_keys(3, jnp.arange(n), stream=robustness.STREAM_JUDGE)
    direct = judging.judge(clf.logits, jk, jnp.asarray(x[:n]), jnp.asarray(y[:n]), draws=2)
    clean = res["results"][0]
    np.testing.assert_array_equal(metrics.unpack_correct(clean["correct_avg"]),
                                  np.asarray(direct["correct_avg"]) == 1)
    # The worst case's selection is right on an example only where every one of its
    # attacks (clean included) is, on the judge stream.
    w = res["worst_case"][0]
    rows = [r for r in res["results"] if r["name"] in w["attacks"] and (r["eps"] == w["eps"] or r["name"] == "clean")]
    assert len(rows) == len(w["attacks"])
    both = np.all([metrics.unpack_correct(r["correct_avg"]) for r in rows], 0)
    assert w["selection_acc_avg"] == pytest.approx(both.mean())
    # The report renders no per-example strings.
    md = report.robustness_markdown(res)
    assert "correct_avg" not in md and clean["correct_avg"] not in md and w["correct_avg"] not in md


def _same_rows(reduced, full):
    a, b = _rows(reduced), _rows(full)
    assert len(a) >= 7
    for k, row in a.items():
        assert row == b[k], k


def test_runner_identical_for_two_batch_sizes(run8, setup, tmp_path):
    clf, variants, transfer, x, y = setup
    # The 24 examples in batches of 16 (the second one padded with 8 repeats) versus
    # batches of 8 in ``run8``; this run uses the reduced config without the transfer
    # attack, and its rows must equal those of the full run exactly.
    res16 = robustness.run(clf, x, y, reduced_config(16), workdir=str(tmp_path), mesh=parallel.make_mesh(1),
                           variants=variants, transfer=None, progress=False)
    assert res16["n_examples"] == 24
    assert "transfer-apgd" not in {r["name"] for r in res16["results"]}
    _same_rows(res16, run8[0])


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 devices (see the subprocess variant)")
def test_runner_identical_for_1_and_4_devices_in_process(run8, setup, tmp_path):
    clf, variants, transfer, x, y = setup
    res4 = robustness.run(clf, x, y, reduced_config(8), workdir=str(tmp_path), mesh=parallel.make_mesh(4),
                          variants=variants, transfer=transfer, progress=False)
    _same_rows(res4, run8[0])


_SUBPROCESS = textwrap.dedent("""
    import json, sys, tempfile
    import jax
    assert jax.device_count() == 4, jax.device_count()
    sys.path.insert(0, {tests!r})
    import test_robustness as t
    from rsc_jax import parallel
    from rsc_jax.evaluators import robustness
    clf, variants, transfer, x, y = t.toy_setup()
    with tempfile.TemporaryDirectory() as wd:
        r = robustness.run(clf, x, y, t.reduced_config(8), workdir=wd, mesh=parallel.make_mesh(4),
                           variants=variants, transfer=transfer, progress=False)
    print("RESULT" + json.dumps(r))
""")


@pytest.mark.slow
def test_runner_identical_for_1_and_4_devices_subprocess(run8):
    """The 4-device run (forced host devices, in a subprocess) equals the 1-device run here."""
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=4"), JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = _SUBPROCESS.format(tests=os.path.join(REPO, "tests"))
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT"))
    res4 = json.loads(line[len("RESULT"):])
    assert res4["devices"] == 4
    _same_rows(res4, run8[0])


# --------------------------------------------------------------------------- checks logic


def _synthetic(pgd7=0.5, pgd50=0.3, eot=0.45, transfer=0.2, square=0.6, sanity=0.3, grad=0.5,
               curve=(0.9, 0.95, 0.5)):
    cfg = config.attack()
    e = cfg.strong_eps[0]
    row = lambda name, acc, **kw: {"name": name, "eps": e, "norm": "linf", "acc_avg": acc,
                                   "acc_single": acc, **kw}
    rows = [row("pgd-7", pgd7), row("pgd-50", pgd50), row("pgd-7-eot10", eot), row("transfer-apgd", transfer),
            row("square", square),
            {"name": "sanity-pgd", "eps": 64 / 255, "eps_255": 64.0, "steps": 20, "norm": "linf",
             "acc_avg": sanity, "acc_single": sanity}]
    curves = {"pgd": {"eta": [0, 1, 2], "acc_avg": list(curve), "acc_single": list(curve)}}
    g = {"frac_finite_nonzero": grad, "frac_nan": 0.0, "frac_zero": 1 - grad, "median_norm": 1.0, "eot": 1}
    return {c["name"]: c for c in masking.checks(rows, curves, g, cfg)}


def test_checks_flag_gradient_masking_symptoms():
    bad = _synthetic()
    e = "8/255"
    assert bad["monotone/pgd"]["status"] == "FLAG" and bad["monotone/pgd"]["max_rise"] == pytest.approx(0.05)
    assert bad["huge-budget"]["status"] == "FLAG"
    assert bad[f"strong-vs-pgd7@{e}"]["status"] == "FLAG"
    assert bad[f"strong-vs-pgd7@{e}"]["gap"] == pytest.approx(0.2)
    assert bad[f"transfer-apgd-not-stronger@{e}"]["status"] == "FLAG"      # 0.2 < white-box 0.3
    assert bad[f"square-not-stronger@{e}"]["status"] == "pass"            # 0.6 >= 0.3
    assert bad["input-gradient"]["status"] == "FLAG"
    good = _synthetic(pgd7=0.32, pgd50=0.3, eot=0.31, transfer=0.5, square=0.4, sanity=0.0, grad=1.0,
                      curve=(0.9, 0.6, 0.3))
    assert all(c["status"] == "pass" for c in good.values()), good
    assert len(good) == 6


def test_huge_budget_judges_the_averaged_accuracy_not_single_draws():
    """A noisy model keeps some correct single draws at any eps (digits, sigma 0.2, PGD-100
    EOT-10 at 64/255: averaged 0.003, single 0.04): the check reads the averaged-logit
    accuracy, the one every table reports, and records the single-draw one."""
    cfg = config.attack()
    row = {"name": "sanity-pgd", "eps": 64 / 255, "eps_255": 64.0, "steps": 20, "eot": 10, "norm": "linf"}
    ok = masking.huge_budget([dict(row, acc_avg=0.0028, acc_single=0.0425)], cfg)[0]
    assert ok["status"] == "pass" and ok["acc"] == 0.0028 and ok["acc_single"] == 0.0425
    assert "PGD-20 EOT-10 at eps 64/255" in ok["detail"]
    bad = masking.huge_budget([dict(row, acc_avg=0.0611, acc_single=0.0611)], cfg)[0]
    assert bad["status"] == "FLAG" and "got 0.0611" in bad["detail"]
    assert masking.huge_budget([dict(row, acc_avg=cfg.sanity_max_acc, acc_single=0.5)], cfg)[0]["status"] == "pass"


def test_sanity_pgd_draws_sanity_eot_per_step_only_on_stochastic_models():
    from rsc_jax.evaluators import attack_suite
    c = config.attack()
    c.sanity_eot = 7
    f = lambda k, x: x
    noisy = [j for j in attack_suite.jobs(c, f, {}, None, 10) if j.name == "sanity-pgd"][0]
    direct = [j for j in attack_suite.jobs(c, f, {}, None, 10, stochastic=False) if j.name == "sanity-pgd"][0]
    assert (noisy.record["eot"], noisy.record["steps"]) == (7, 20) and direct.record["eot"] == c.eot == 1
    assert noisy.record["step_size"] == pytest.approx(2.5 * (64 / 255) / 20)
    q = config.attack()
    q.quick = True
    assert robustness.effective_config(q).sanity_eot == 4


def test_markdown_shows_flags(run8):
    res = json.loads(json.dumps(run8[0]))
    res["checks"][0]["status"] = "FLAG"
    md = report.robustness_markdown(res, png="figs/rob.png")
    assert "**FLAG**" in md and "![robustness](figs/rob.png)" in md


# --------------------------------------------------------------------------- config


def test_default_config_values():
    c = config.attack()
    config_checks.check_attack(c)
    assert c.eps_grid == pytest.approx((0, 1 / 255, 2 / 255, 4 / 255, 8 / 255))
    assert isinstance(c.eps_grid, tuple) and all(isinstance(e, float) for e in c.eps_grid)
    assert (c.steps, c.strong_steps, c.eot, c.strong_eot, c.judge_draws) == (7, 50, 1, 10, 10)
    assert c.step_size == pytest.approx(2 / 255) and c.sanity_eps == pytest.approx(64 / 255)
    assert c.surrogates == ("sigmoid", "atan", "triangle", "rectangle", "assg", "pdsg")
    assert c.num_examples == -1


def test_quick_config():
    c = config.attack()
    c.quick = True
    q = robustness.effective_config(c)
    assert (q.strong_steps, q.strong_eot, q.judge_draws, q.square_queries, q.num_examples) == (20, 4, 4, 100, 256)
    c.num_examples = 50
    assert robustness.effective_config(c).num_examples == 50
    c.quick = False
    assert robustness.effective_config(c).strong_steps == 50


@pytest.mark.parametrize("field,value,match", [
    ("steps", 0, r"config\.attack\.steps=0 .*>= 1"),
    ("eot", 0, r"config\.attack\.eot=0"),
    ("step_size", -1.0, r"config\.attack\.step_size=-1\.0 .*> 0"),
    ("eps_grid", (0.1, 0.05), r"config\.attack\.eps_grid=\(0\.1, 0\.05\) .*increasing"),
    ("eps_grid", (0.1,), r"config\.attack\.eps_grid=\(0\.1,\) .*QTE .*strong_eps"),
    ("l2_eps_grid", (-1.0, 0.5), r"config\.attack\.l2_eps_grid"),
    ("surrogates", ("sigmoid", "foo"), r"config\.attack\.surrogates=.*'foo'"),
    ("judge_draws", 0, r"config\.attack\.judge_draws=0"),
    ("num_examples", 0, r"config\.attack\.num_examples=0 .*-1"),
    ("square_p_init", 2.0, r"config\.attack\.square_p_init=2\.0"),
    ("grad_min_frac", 1.5, r"config\.attack\.grad_min_frac=1\.5"),
    ("strong_eps", (0.0,), r"config\.attack\.strong_eps"),
    ("doubled_fields", ("apgd_steps", "steps"), r"config\.attack\.doubled_fields=.*'steps'.*'apgd_eot'"),
    ("doubled_fields", (), r"config\.attack\.doubled_fields=\(\) .*non-empty"),
])
def test_validate_config_errors(field, value, match):
    c = config.attack()
    c[field] = value
    with pytest.raises(ValueError, match=match):
        config_checks.check_attack(c)


def test_validate_config_unknown_field_and_run_validates_first(tmp_path):
    c = config.attack()
    c.stepz = 3
    with pytest.raises(ValueError, match=r"config\.attack\.stepz=3 .*unknown"):
        config_checks.check_attack(c)
    c = config.attack()
    c.steps = 0

    class Never:
        config = {"coding": {}}

        def logits(self, key, x):
            raise AssertionError("must not be called")

    with pytest.raises(ValueError, match=r"config\.attack\.steps=0"):
        robustness.run(Never(), np.zeros((2, 8, 8, 1), np.float32), np.zeros(2, np.int32), c,
                       workdir=str(tmp_path), mesh=parallel.make_mesh(1), progress=False)
    assert not os.path.exists(tmp_path / "robustness.json")


def test_make_variants_uses_with_neuron():
    calls = []

    class Fake:
        def __init__(self, config=None):
            self.config = config or {"model": {"spiking": True, "overrides": {}}}

        def with_neuron(self, **kw):
            calls.append(kw)
            obj = Fake()
            obj.logits = lambda key, x, kw=kw: kw
            return obj

    cfg = config.attack()
    cfg.surrogates = ("sigmoid", "atan")
    cfg.sharp_alpha_factor = 4.0
    v = robustness.make_variants(Fake(), cfg)
    # The model's own backward pass (sigmoid, alpha 4, BPTT) is the ensemble's "model" entry.
    assert sorted(v) == ["atan", "atan_sharp", "bptr", "sigmoid_sharp"]
    assert v["sigmoid_sharp"](None, None) == {"surrogate": "sigmoid", "alpha": 16.0}
    assert v["atan"](None, None) == {"surrogate": "atan", "alpha": 2.0}
    assert v["bptr"](None, None) == {"grad_mode": "bptr"}
    own_atan = Fake({"model": {"spiking": True, "overrides": {"surrogate": "atan"}}})
    assert sorted(robustness.make_variants(own_atan, cfg)) == ["atan_sharp", "bptr", "sigmoid", "sigmoid_sharp"]
    cfg.bptr = False
    cfg.sharp_alpha_factor = 0.0
    assert sorted(robustness.make_variants(own_atan, cfg)) == ["sigmoid"]
    # the input-adaptive surrogates get no sharp copy (their sharpness follows the input)
    cfg.surrogates, cfg.sharp_alpha_factor = ("assg", "pdsg"), 4.0
    assert sorted(robustness.make_variants(Fake(), cfg)) == ["assg", "pdsg"]
    assert robustness.make_variants(Fake(), cfg)["assg"](None, None) == {"surrogate": "assg", "alpha": 2.0}
    assert config.attack().surrogates[-2:] == ("assg", "pdsg")
    assert robustness.make_variants(Fake({"model": {"spiking": False, "overrides": {}}}), cfg) == {}
    assert robustness.make_variants(object(), cfg) == {}


def test_apgd_rows_join_the_worst_case_and_the_checks(tmp_path):
    """With attack.apgd on, APGD-CE and APGD-DLR run at the strong eps, count in the
    per-example worst case and in the white-box side of the black-box check."""
    clf, variants, transfer, x, y = toy_setup()
    c = reduced_config(8)
    c.apgd, c.apgd_steps, c.apgd_eot, c.apgd_losses = True, 3, 2, ("ce", "dlr")
    c.square, c.num_examples, c.eps_grid = False, 8, (0.0, c.strong_eps[0])
    res = robustness.run(clf, x, y, c, workdir=str(tmp_path), mesh=parallel.make_mesh(1), variants={},
                         transfer=None, progress=False)
    rows = {r["name"]: r for r in res["results"]}
    assert {"apgd-ce", "apgd-dlr"} <= set(rows)
    assert rows["apgd-ce"]["steps"] == 3 and rows["apgd-ce"]["eot"] == 2 and rows["apgd-dlr"]["loss"] == "dlr"
    worst = res["worst_case"][0]
    assert worst["attacks"][:3] == ["clean", "apgd-ce", "apgd-dlr"]          # AutoAttack's order
    assert worst["selection_acc_avg"] <= min(rows["apgd-ce"]["acc_avg"], rows["apgd-dlr"]["acc_avg"]) + 1e-9
    assert rows["apgd-ce"]["max_linf"] <= rows["apgd-ce"]["eps"] + 1e-6 and rows["apgd-ce"]["all_in_range"]


def test_convergence_grid_table_checks_and_files(tmp_path):
    """APGD-CE over a steps x EOT grid: intervals that hold the values, the two
    last-doubling checks (exact McNemar, flagged only when the larger budget breaks
    significantly more), the files."""
    from rsc_jax.evaluators import convergence
    clf, _, _, x, y = toy_setup()
    c = reduced_config(8)
    c.convergence_steps, c.convergence_eot, c.convergence_examples, c.doubled_budget = (1, 2, 4), (1, 2), 16, False
    res = convergence.run(clf, x, y, c, workdir=str(tmp_path), mesh=parallel.make_mesh(1), progress=False)
    g = res["grid"]
    assert g["steps"] == [1, 2, 4] and g["eot"] == [1, 2] and g["n_examples"] == 16 and res["doubled"] is None
    assert g["grad_evals"] == [[1, 2, 4], [2, 4, 8]]
    for accs, cis in zip(g["accuracy"], g["ci95"]):
        assert all(lo <= a <= hi for a, (lo, hi) in zip(accs, cis))
    names = [ch["name"] for ch in res["checks"]]
    assert names == ["converged-in-steps@EOT2", "converged-in-EOT@4steps"]
    for ch in res["checks"]:
        flag = ch["mcnemar_p"] < 0.05 and ch["b"] > ch["c"]
        assert ch["status"] == ("FLAG" if flag else "pass")
        assert ch["acc_before"] - ch["acc_after"] == pytest.approx((ch["b"] - ch["c"]) / 16)
    assert os.path.isfile(tmp_path / "convergence.json") and os.path.isfile(tmp_path / "convergence.png")
    md = report.convergence_markdown(res)
    assert "Attack convergence" in md and "converged-in-steps@EOT2" in md


def test_masked_gradients_are_caught_end_to_end(tmp_path):
    """A model whose input gradient is zero (a hard quantiser's, here stop_gradient) looks
    robust to every gradient attack; the input-gradient check and the black-box
    (Square) check flag it."""
    x, y = digits()
    W, b = ridge(x[:1400], y[:1400], 1.0)
    masked = ToyClassifier(W, b, stop_grad=True)
    c = reduced_config(8)
    c.gradient_check, c.square_queries, c.square_p_init, c.num_examples = True, 60, 0.5, 16
    c.eps_grid, c.strong_eps = (0.0, 0.3), (0.3,)
    res = robustness.run(masked, x[1400:], y[1400:], c, workdir=str(tmp_path), mesh=parallel.make_mesh(1),
                         variants={}, transfer=None, progress=False)
    checks = {ch["name"]: ch["status"] for ch in res["checks"]}
    assert checks["input-gradient"] == "FLAG"
    assert checks["square-not-stronger@76.5/255"] == "FLAG", checks


def test_transfer_from_the_noise_free_copy(tmp_path):
    """attack.transfer_expectation crafts APGD-CE on the same weights with direct coding (the
    coding's expectation) and judges it on the noisy model, in the worst case and the
    transfer check; the row equals APGD-CE (one draw) run by hand through the copy."""
    clf, _, _, x, y = toy_setup()
    c = reduced_config(8)
    c.transfer_expectation, c.square, c.num_examples = True, False, 8
    res = robustness.run(clf, x, y, c, workdir=str(tmp_path), mesh=parallel.make_mesh(1), variants={},
                         transfer=None, progress=False)
    row = {r["name"]: r for r in res["results"]}["expectation-apgd"]
    assert row["crafted_with"] == "noise-free copy (direct coding)" and row["eps"] == c.strong_eps[0]
    assert row["eot"] == 1 and row["steps"] == c.apgd_steps
    assert "expectation-apgd" in res["worst_case"][0]["attacks"]
    assert "expectation-apgd" not in res["worst_case_common"][0]["attacks"]
    assert any(ch["name"].startswith("expectation-apgd-not-stronger") for ch in res["checks"])
    copy = clf.with_coding(method="direct")
    idx = jnp.arange(8)
    xa = apgd.apgd(copy.logits, judging.example_keys(c.seed, idx, stream=0), jnp.asarray(x[:8]), jnp.asarray(y[:8]),
                   eps=c.strong_eps[0], steps=c.apgd_steps, eot=1)
    jr = judging.judge(clf.logits, judging.example_keys(c.seed, idx, stream=1), xa, jnp.asarray(y[:8]),
                       draws=c.judge_draws)
    assert row["acc_avg"] == pytest.approx(float(jr["correct_avg"].mean()))


def test_adaptive_attacks_on_poisson_coding(tmp_path):
    """A Poisson-coded model gets the Gumbel-sigmoid PGD (white-box, exact spikes forward),
    PGD on the relaxed copy and APGD-CE through each, at every strong eps and temperature,
    all in the worst case; the Gumbel row equals PGD (eps-scaled step) run by hand through
    ``with_coding(method="poisson_gumbel", sigma=tau)``. A Gaussian-coded model gets none."""
    x, y = digits()
    W, b = ridge(x[:1400], y[:1400], 1.0)
    clf = ToyClassifier(W, b, sigma=0.0, method="poisson")
    c = reduced_config(8)
    c.square, c.ensemble, c.num_examples, c.apgd, c.apgd_steps, c.apgd_eot = False, False, 8, True, 3, 2
    c.apgd_losses = ("ce",)
    res = robustness.run(clf, x[1400:], y[1400:], c, workdir=str(tmp_path), mesh=parallel.make_mesh(1),
                         variants={}, transfer=None, progress=False)
    rows = {r["name"]: r for r in res["results"]}
    names = ["gumbel-pgd-4-eot2", "relaxed-pgd-4-eot2", "apgd-ce-gumbel", "apgd-ce-relaxed"]
    assert set(names) <= set(rows) and set(names) <= set(res["worst_case"][0]["attacks"])
    assert all(rows[n]["gumbel_temperature"] == 0.5 and rows[n]["max_linf"] <= c.strong_eps[0] + 1e-6 for n in names)
    # a temperature sweep adds the same four at every further temperature (jobs built, not run)
    c.gumbel_temperatures = (0.5, 1.0)
    swept = {j.name: j for j in robustness.build_jobs(clf, c, {}, None)}
    assert all(swept[n + "-tau1"].record["gumbel_temperature"] == 1.0 for n in names)
    copy = clf.with_coding(method="poisson_gumbel", sigma=0.5)
    idx = jnp.arange(8)
    xa = attacks.pgd(copy.logits, judging.example_keys(c.seed, idx, stream=0), jnp.asarray(x[1400:1408]),
                     jnp.asarray(y[1400:1408]), eps=c.strong_eps[0], step_size=2.5 * c.strong_eps[0] / c.strong_steps,
                     steps=c.strong_steps,
                     eot=c.strong_eot)
    jr = judging.judge(clf.logits, judging.example_keys(c.seed, idx, stream=1), xa, jnp.asarray(y[1400:1408]),
                       draws=c.judge_draws)
    assert rows["gumbel-pgd-4-eot2"]["acc_avg"] == pytest.approx(float(jr["correct_avg"].mean()))
    from rsc_jax.evaluators import attack_suite
    gauss = attack_suite.jobs(c, ToyClassifier(W, b).logits, {}, None, 10)
    assert not any("gumbel" in j.name or "relaxed" in j.name for j in gauss)
