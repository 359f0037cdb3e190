r"""Sweeps: train, attack and certify a grid of runs, resumably, and collect one table.

    python -m rsc_jax.sweep --sweep=configs/sweeps/digits_codings.py --workdir=runs/sweeps/digits

A sweep file defines ``get_sweep() -> dict`` with ``base`` (a config file under
``configs/``), ``modes`` (as ``--mode`` takes them), ``seeds``, optional ``overrides``
applied to every run, and ``runs``: a list of ``{"name": str, "overrides":
{"coding.sigma": 0.1, ...}}``, each with optional ``seeds`` of its own (e.g. three seeds
for the headline runs, one for the rest). Each run (x seed) gets its
own workdir ``WORKDIR/NAME_seedS``; a run that finished (``sweep_done.json`` present)
is skipped, an interrupted one resumes from its checkpoints. ``results.json``,
``results.md`` and plots collect every finished run.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import time
from typing import Any

import numpy as np
from absl import app, flags

from rsc_jax import config

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Registers the command-line flags on ``flag_values``, once. Not at import time: sweep
    files import this module for ``coding_grid`` while it also runs as ``__main__``; a process
    that already imported ``rsc_jax.main`` (whose ``--workdir`` and ``--progress`` mean other
    things) passes its own ``flags.FlagValues()``."""
    if "sweep" in flag_values:
        return
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("sweep", None, "Sweep file (defines get_sweep()).", **fv)
    flags.DEFINE_string("workdir", None, "Root directory of the sweep.", **fv)
    flags.DEFINE_string("only", "", "Run only runs whose directory name (NAME_seedS) contains this "
                        "string, e.g. 'rsc2_sigma0.3' or '_seed1'.", **fv)
    flags.DEFINE_bool("collect_only", False, "Only collect the results of finished runs.", **fv)
    flags.DEFINE_bool("progress", False, "Show tqdm bars inside runs.", **fv)

DONE = "sweep_done.json"


def grid(name: str, **axes: list[Any]) -> list[dict[str, Any]]:
    """The Cartesian product of ``axes`` (dotted config fields) as named runs."""
    keys = list(axes)
    runs = []
    for values in itertools.product(*(axes[k] for k in keys)):
        label = "_".join(f"{k.split('.')[-1]}{v}" for k, v in zip(keys, values))
        runs.append({"name": f"{name}_{label}", "overrides": dict(zip(keys, values))})
    return runs


# The paper's sigma grid (SPEC §5) and our settings for the reproduction sweeps, sized for
# a 2-core CPU (docs/RESULTS.md): full-strength attacks (PGD-50, EOT K = 10, M = 10 judge
# draws), Square with 200 queries as the black-box check, no per-run transfer twin (the
# ``ann`` row is the ANN comparison), and a small certification (n = 2,000 draws on 40
# test images, alpha = 0.001).
PAPER_SIGMAS = (0.05, 0.1, 0.2, 0.3, 0.5)


CPU_ATTACK = {
    "attack.quick": False,
    "attack.transfer": False,
    "attack.square_queries": 200,
    "attack.apgd": False,            # the sweeps of docs/RESULTS.md ran before APGD existed
    "attack.convergence": False,
}

# Digits and MNIST are easy at the paper's CIFAR budget (8/255 barely moves accuracy), so
# their sweeps extend the l_inf grid to 32/255 and run the strong attacks there instead.
WIDE_LINF = {
    "attack.eps_grid": tuple(e / 255 for e in (0, 1, 2, 4, 8, 16, 32)),
    "attack.strong_eps": (32 / 255,),
}

# The surrogate ensemble costs as much as the rest of the grid together; outside the
# headline runs of a sweep it is left out (their worst case then omits it).
NO_ENSEMBLE = {"attack.ensemble": False}

# config.RAND_ATTACK as sweep overrides: the AutoAttack-rand-level evaluation on every test image.
RAND = {f"attack.{k}": v for k, v in config.RAND_ATTACK.items()}


def baselines(sigmas: tuple[float, ...] = (0.1, 0.2), T: int | None = None) -> list[dict]:
    """Controlled ANN baselines: the ANN trained with Gaussian input noise of each sigma
    and evaluated as a smoothed classifier (Cohen et al., ICML 2019: ``ann_gauss_sigma<s>``,
    T = 1, one draw, certified like the RSC runs), and the ANN on Poisson coding
    (``ann_poisson``, one Bernoulli frame, T = 1: the noise variance x(1-x) of one frame,
    T times that of a T-step SNN's time average), so that coding and noise training are
    not confounded with the spiking network. With ``T`` > 1 also ``ann_poisson_mean<T>``:
    the ANN on the mean of T Bernoulli frames (``coding.Coding.ann_mean``), variance
    x(1-x)/T, the noise-matched control of the T-step Poisson SNN."""
    runs = [{"name": f"ann_gauss_sigma{s}",
             "overrides": {"model.spiking": False, "coding.method": "rsc1", "coding.sigma": s, "coding.T": 1}}
            for s in sigmas]
    runs.append({"name": "ann_poisson", "overrides": {"model.spiking": False, "coding.method": "poisson",
                                                      "coding.T": 1}})
    if T is not None and T > 1:
        runs.append({"name": f"ann_poisson_mean{T}", "overrides": {"model.spiking": False,
                                                                    "coding.method": "poisson", "coding.T": T}})
    return runs


def controlled_runs(sigma: float = 0.2, T: int = 4) -> list[dict]:
    """The runs of the controlled comparisons (the ``*_controlled`` sweeps): direct,
    Poisson, RSC-I and RSC-II at ``sigma``, RSC-I at sigma / sqrt(T) (the noise of
    RSC-II's time-average, and the same certified radius formula), the ANN twin, and
    ``baselines`` at sigma / sqrt(T) and sigma, with the ANN on the mean of T Poisson
    frames."""
    matched = round(sigma / T ** 0.5, 6)
    sigmas = tuple(sorted({matched, sigma}))
    keep = {f"direct_T{T}", f"poisson_T{T}", f"rsc1_sigma{matched}_T{T}", f"rsc1_sigma{sigma}_T{T}",
            f"rsc2_sigma{sigma}_T{T}", "ann"}
    return [r for r in coding_grid(Ts=(T,), sigmas=sigmas) if r["name"] in keep] + baselines(sigmas, T)


CPU_CERTIFY = {
    "certify.num_examples": 40,
    "certify.n": 2000,
    "certify.batch": 500,
    "certify.image_batch": 8,
    "certify.radii": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0),
}


def coding_grid(Ts: tuple[int, ...] = (4,), sigmas: tuple[float, ...] = PAPER_SIGMAS,
                headline: tuple[str, ...] = (), headline_seeds: tuple[int, ...] = (0, 1, 2),
                others: dict[str, Any] | None = None, skip: tuple[str, ...] = (),
                only_at: dict[int, tuple[str, ...]] | None = None) -> list[dict]:
    """direct, poisson, rsc1 x sigmas and rsc2 x sigmas at each T, plus the ANN twin
    (``ann``); the runs named in ``headline`` get ``headline_seeds``, the rest the sweep's
    seeds and the extra overrides ``others`` (e.g. a cheaper attack grid). Cuts to fit a
    machine: the runs named in ``skip`` are left out, and at each T of ``only_at`` only
    the runs it names are kept (e.g. ``{8: ("poisson_T8",)}``)."""
    runs = []
    for T in Ts:
        runs += [{"name": f"direct_T{T}", "overrides": {"coding.method": "direct", "coding.T": T}},
                 {"name": f"poisson_T{T}", "overrides": {"coding.method": "poisson", "coding.T": T}}]
        for method in ("rsc1", "rsc2"):
            runs += [{"name": f"{method}_sigma{s}_T{T}",
                      "overrides": {"coding.method": method, "coding.sigma": s, "coding.T": T}} for s in sigmas]
    runs.append({"name": "ann", "overrides": {"model.spiking": False, "coding.method": "direct", "coding.T": 1}})
    only_at = only_at or {}
    for what, names in (("headline", headline), ("skip", skip), *((f"only_at[{T}]", n) for T, n in only_at.items())):
        unknown = set(names) - {r["name"] for r in runs}
        if unknown:
            raise KeyError(f"{what} runs {sorted(unknown)} are not in the grid")
    runs = [r for r in runs if r["name"] not in skip
            and r["name"] in only_at.get(r["overrides"]["coding.T"], (r["name"],))]
    return [dict(r, seeds=list(headline_seeds)) if r["name"] in headline
            else dict(r, overrides={**r["overrides"], **(others or {})}) for r in runs]


def seeds_of(sweep: dict[str, Any], run: dict[str, Any]) -> list[int]:
    """The run's own ``seeds`` where it has them, else the sweep's."""
    return list(run.get("seeds", sweep["seeds"]))


def run_dir_name(run: dict[str, Any], seed: int) -> str:
    """The directory of one run of a sweep, under the sweep's workdir."""
    return f"{run['name']}_seed{seed}"


def run_priority(sweep: dict[str, Any], run: dict[str, Any], seed: int) -> tuple[int, int]:
    """Sort key of the work list: every run's first seed before any run's second, and runs
    with seeds of their own (the headline runs of ``coding_grid``) first, so an
    interrupted sweep holds the headline table, then the whole grid, then more seeds."""
    return seeds_of(sweep, run).index(seed), 0 if "seeds" in run else 1


def work_list(sweep: dict[str, Any], only: str = "") -> list[tuple[dict[str, Any], int]]:
    """``(run, seed)`` pairs in the order they run (``run_priority``), those whose
    directory name contains ``only`` (``--only``: a run name, or ``_seedS`` for a seed)."""
    return sorted(((r, s) for r in sweep["runs"] for s in seeds_of(sweep, r) if only in run_dir_name(r, s)),
                  key=lambda rs: run_priority(sweep, *rs))


def run_config(sweep: dict[str, Any], run: dict[str, Any], seed: int):
    """The base config with the run's overrides and seed applied (validated by main)."""
    cfg = config.from_file(sweep["base"])
    for field, value in {**sweep.get("overrides", {}), **run["overrides"], "seed": seed}.items():
        node = cfg
        *parents, leaf = field.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"sweep run {run['name']!r}: config field {field!r} does not exist")
        node[leaf] = value
    return cfg


def summarise(workdir: str) -> dict[str, Any]:
    """The headline numbers of one finished run (None where a part did not run)."""
    def read(name):
        p = os.path.join(workdir, name)
        return json.load(open(p)) if os.path.isfile(p) else None
    out: dict[str, Any] = {}
    ev, rob, cert, exp = read("evaluation.json"), read("robustness.json"), read("certified.json"), \
        read(os.path.join("export", "config.json"))
    if exp:
        out.update(coding=exp["coding"]["method"], sigma=exp["coding"]["sigma"], T=exp["coding"]["T"],
                   spiking=exp["model"]["spiking"], model=exp["model"]["name"])
    if ev:
        out["clean"] = ev["accuracy"]
    if rob:
        for r in rob["results"]:
            if r["name"] == "clean":            # on the attacked subset (attack.num_examples)
                out["clean_attacked"] = r["acc_single"]
            elif r["norm"] == "linf" and r["name"] != "sanity-pgd":
                out[f"{r['name']}@{r['eps_255']:g}"] = r["acc_single"]
        for name, c in rob["curves"].items():
            out[f"qte_{name}"] = c["qte_single"]
            out[f"curve_{name}"] = {"eta": c["eta"], "acc": c["acc_single"]}
        for w in rob["worst_case"]:
            out[f"worst@{w['eps_255']:g}"] = w["acc_single"]
        out["masking_flags"] = [c["name"] for c in rob["checks"] if c.get("status") != "pass"]
    done = read(DONE)
    if done:
        out["seconds"] = done["seconds"]
    if cert:
        out["acr"] = cert["acr"]
        out["certified"] = dict(zip(map(str, cert["radii"]), cert["certified_accuracy"]))
        out["max_certifiable_radius"] = cert.get("max_certifiable_radius")
    return out


def collect(root: str, sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Writes ``results.json``, ``results.md`` and ``results.png`` under ``root``."""
    rows = []
    for run in sweep["runs"]:
        for seed in seeds_of(sweep, run):
            d = os.path.join(root, run_dir_name(run, seed))
            if os.path.isfile(os.path.join(d, DONE)):
                rows.append({"run": run["name"], "seed": seed, **summarise(d)})
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    cols = ["clean", "fgsm@8", "pgd-7@8", "pgd-50@8", "pgd-7-eot10@8", "ensemble-pgd@8", "worst@8", "qte_pgd", "acr"]
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_run.setdefault(r["run"], []).append(r)
    md = [f"# Sweep `{sweep.get('title', sweep['base'])}`\n",
          ("Mean +- standard deviation over each row's seeds (column `seeds`); accuracies on one coding draw; "
           "l_inf attacks at eps 8/255.\n"),
          "| run | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, rs in by_run.items():
        cells = []
        for c in cols:
            v = [r[c] for r in rs if r.get(c) is not None]
            cells.append("-" if not v else f"{np.mean(v):.3f}" + (f" +- {np.std(v):.3f}" if len(v) > 1 else ""))
        md.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    flagged = [(r["run"], r["seed"], r["masking_flags"]) for r in rows if r.get("masking_flags")]
    if flagged:
        md.append("\nGradient-masking checks flagged: " + "; ".join(f"{n} seed {s}: {f}" for n, s, f in flagged))
    from rsc_jax import report        # here, not at import time: sweep files import this module
    certified = [(f"{r['run']} seed {r['seed']}",
                  report.read_json(os.path.join(root, run_dir_name({"name": r["run"]}, r["seed"]), "certified.json")))
                 for r in rows if r.get("certified")]
    if certified:
        md += ["", "## Certified accuracy by l_2 radius", "",
               "Per run and seed. The last column is the largest radius each run's n and alpha can certify "
               "(all n draws agreeing), with its l_inf equivalent r/sqrt(d) x 255: a 0 beyond it (†) is the "
               "sample size's, not the model's.", "",
               report.certification_comparison_markdown(
                   certified, radii=sorted({float(x) for _, c in certified for x in c["radii"]}))]
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    _plot(root, by_run)
    return rows


def _plot(root: str, by_run: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = {n: rs[0]["curve_pgd"] for n, rs in by_run.items() if rs and rs[0].get("curve_pgd")}
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in curves.items():
        accs = np.mean([r["curve_pgd"]["acc"] for r in by_run[name] if r.get("curve_pgd")], axis=0)
        ax.plot(np.asarray(c["eta"]) * 255, accs, marker="o", label=name)
    ax.set_xlabel("l_inf eps (x 1/255)")
    ax.set_ylabel("PGD-7 accuracy (1 draw)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(root, "results.png"), dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.sweep or not FLAGS.workdir:
        raise app.UsageError("--sweep and --workdir are required")
    from rsc_jax import pipeline
    try:
        path = config.resolve_file(FLAGS.sweep)      # a path, or a bundled name like sweeps/digits_codings
    except FileNotFoundError as e:
        sys.exit(f"error: --sweep: {e}")
    sweep = config.call_file(path, "get_sweep")
    root = os.path.abspath(FLAGS.workdir)
    os.makedirs(root, exist_ok=True)
    todo = work_list(sweep, FLAGS.only)
    for i, (run, seed) in enumerate(todo):
        d = os.path.join(root, run_dir_name(run, seed))
        if FLAGS.collect_only or os.path.isfile(os.path.join(d, DONE)):
            continue
        logging.info("sweep run %d/%d: %s seed %d", i + 1, len(todo), run["name"], seed)
        t0 = time.time()
        cfg = run_config(sweep, run, seed)
        pipeline.run(cfg, d, sweep.get("modes", "all"), progress=FLAGS.progress)
        with open(os.path.join(d, DONE), "w") as f:
            json.dump({"seconds": round(time.time() - t0, 1), "overrides": run["overrides"], "seed": seed}, f)
    rows = collect(root, sweep)
    print(f"{len(rows)} finished run(s); table: {os.path.join(root, 'results.md')}", file=sys.stderr)


if __name__ == "__main__":
    define_flags()
    app.run(main)
