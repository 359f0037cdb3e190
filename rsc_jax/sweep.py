r"""Sweeps: train, attack and certify a grid of runs, resumably, and collect one table.

    python -m rsc_jax.sweep --sweep=configs/sweeps/digits_codings.py --workdir=runs/sweeps/digits

A sweep file defines ``get_sweep() -> dict`` with ``base`` (a config file under
``configs/``), ``modes`` (as ``--mode`` takes them), ``seeds`` and ``runs``: a list of
``{"name": str, "overrides": {"coding.sigma": 0.1, ...}}``. Each run (x seed) gets its
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

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file (defines get_sweep()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep.")
_ONLY = flags.DEFINE_string("only", "", "Run only runs whose name contains this string.")
_COLLECT = flags.DEFINE_bool("collect_only", False, "Only collect the results of finished runs.")
_PROGRESS = flags.DEFINE_bool("progress", False, "Show tqdm bars inside runs.")

DONE = "sweep_done.json"


def grid(name: str, **axes: list[Any]) -> list[dict[str, Any]]:
    """The Cartesian product of ``axes`` (dotted config fields) as named runs."""
    keys = list(axes)
    runs = []
    for values in itertools.product(*(axes[k] for k in keys)):
        label = "_".join(f"{k.split('.')[-1]}{v}" for k, v in zip(keys, values))
        runs.append({"name": f"{name}_{label}", "overrides": dict(zip(keys, values))})
    return runs


def run_config(sweep: dict[str, Any], run: dict[str, Any], seed: int):
    """The base config with the run's overrides and seed applied (validated by main)."""
    cfg = config.from_file(sweep["base"])
    for field, value in {**run["overrides"], "seed": seed}.items():
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
        top = max(rob["curves"]["pgd"]["eta"])
        for r in rob["results"]:
            if r["norm"] == "linf" and abs(r["eps"] - top) < 1e-9 and r["name"] in (
                    "fgsm", "pgd-7", "ensemble-pgd", "transfer-pgd", "square") or r["name"].startswith("pgd-") \
                    and r["norm"] == "linf" and abs(r["eps"] - top) < 1e-9:
                out[f"{r['name']}@{r['eps_255']:g}"] = r["acc_single"]
        for name, c in rob["curves"].items():
            out[f"qte_{name}"] = c["qte_single"]
            out[f"curve_{name}"] = {"eta": c["eta"], "acc": c["acc_single"]}
        if rob["worst_case"]:
            out["worst_linf"] = rob["worst_case"][-1]["acc_single"]
        out["masking_flags"] = [c["name"] for c in rob["checks"] if c.get("status") != "pass"]
    if cert:
        out["acr"] = cert["acr"]
        out["certified"] = dict(zip(map(str, cert["radii"]), cert["certified_accuracy"]))
    return out


def collect(root: str, sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Writes ``results.json``, ``results.md`` and ``results.png`` under ``root``."""
    rows = []
    for run in sweep["runs"]:
        for seed in sweep["seeds"]:
            d = os.path.join(root, f"{run['name']}_seed{seed}")
            if os.path.isfile(os.path.join(d, DONE)):
                rows.append({"run": run["name"], "seed": seed, **summarise(d)})
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    cols = ["clean", "fgsm@8", "pgd-7@8", "worst_linf", "qte_pgd", "acr"]
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_run.setdefault(r["run"], []).append(r)
    md = [f"# Sweep `{sweep.get('title', sweep['base'])}`\n",
          f"Mean +- standard deviation over seeds {list(sweep['seeds'])}; accuracies on one coding draw; "
          "l_inf attacks at eps 8/255.\n",
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
    if not _SWEEP.value or not _WORKDIR.value:
        raise app.UsageError("--sweep and --workdir are required")
    from rsc_jax import pipeline
    sweep = config.call_file(_SWEEP.value, "get_sweep")
    root = os.path.abspath(_WORKDIR.value)
    os.makedirs(root, exist_ok=True)
    todo = [(r, s) for r in sweep["runs"] for s in sweep["seeds"] if _ONLY.value in r["name"]]
    for i, (run, seed) in enumerate(todo):
        d = os.path.join(root, f"{run['name']}_seed{seed}")
        if _COLLECT.value or os.path.isfile(os.path.join(d, DONE)):
            continue
        logging.info("sweep run %d/%d: %s seed %d", i + 1, len(todo), run["name"], seed)
        t0 = time.time()
        cfg = run_config(sweep, run, seed)
        pipeline.run(cfg, d, sweep.get("modes", "all"), progress=_PROGRESS.value)
        with open(os.path.join(d, DONE), "w") as f:
            json.dump({"seconds": round(time.time() - t0, 1), "overrides": run["overrides"], "seed": seed}, f)
    rows = collect(root, sweep)
    print(f"{len(rows)} finished run(s); table: {os.path.join(root, 'results.md')}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
