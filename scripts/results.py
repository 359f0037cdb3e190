r"""Collects the reproduction sweeps and the E-RSCT study into docs/results/.

    python scripts/results.py            # after the sweeps (launch/reproduce_cpu.sh runs everything)

Reads ``SWEEPS/<name>/`` for each sweep in ``SWEEP_FILES`` (finished runs only, so a
partial sweep gives a partial table) and the E-RSCT study JSONs, and writes to ``--out``:

- ``eps_curves.png``: PGD-7 (to 8/255) and FGSM accuracy vs l_inf eps for direct, Poisson, RSC-I/II at the
  headline sigma and the ANN twin (one panel per data set);
- ``sigma_tradeoff.png``: clean and robust accuracy (per-example worst case over all
  attacks at 32/255 on digits and MNIST, at 8/255 on CIFAR-10) vs sigma for RSC-I and RSC-II, with Poisson/direct/ANN as horizontal lines and the Poisson-matched sigma
  (``matched_sigma``) marked;
- ``qte_sigma.png``: QTE vs sigma (PGD-7 over [0, 8/255]; FGSM over [0, 32/255]);
- ``certified.png``: certified accuracy vs l_2 radius per sigma (RSC runs, T = 4);
- ``ersct.png``: clean accuracy vs training steps and seconds, for each arm of the E-RSCT study;
- ``tables.md`` and ``summary.json``: every number behind the plots, mean and standard
  deviation over seeds; 95 % exact intervals of pooled counts (``intervals``); the
  ledger of the ``sweeps`` claims of configs/claims.py (``verdicts.ledger``: seed-level
  tests of rsc_jax/stats.py, Holm per data set).

Accuracies in the main tables are on one coding draw (``acc_single``), as in the sweeps'
tables; the intervals and paired tests are on the logits averaged over M draws
(``acc_avg``, ``correct_avg``), the accuracy that is a count of test images.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))        # scripts/verdicts.py

import numpy as np  # noqa: E402
import verdicts  # noqa: E402

from rsc_jax import config, data, metrics, sweep  # noqa: E402

SWEEP_FILES = {"digits": "digits_codings", "mnist": "mnist_codings", "cifar10": "cifar10_codings"}
TITLES = {"digits": "digits (8x8, convnet)", "mnist": "MNIST subset (convnet)",
          "cifar10": "CIFAR-10 subset (VGG-11/4)"}
HEADLINE_SIGMA = 0.2
ERSCT_COLUMNS = {"steps_to_target": 0, "seconds_to_target": 1, "final_clean": 3, "pgd7": 3, "train_seconds": 1}
METRICS = ("clean", "clean_attacked", "fgsm@8", "pgd-7@8", "pgd-50@8", "pgd-7-eot10@8", "ensemble-pgd@8", "square@8", "worst@8",
           "fgsm@32", "pgd-50@32", "pgd-7-eot10@32", "ensemble-pgd@32", "square@32", "worst@32",
           "l2@0.5", "qte8", "qte_fgsm32", "acr", "seconds")


def matched_sigma(train_images: np.ndarray) -> float:
    """The Gaussian sigma whose per-step variance equals Poisson coding's on average over
    pixels: sigma^2 = E_pixels[x (1 - x)] with x in [0, 1] (coding.moments, step_var)."""
    x = np.asarray(train_images, np.float64) / 255.0
    return float(np.sqrt(np.mean(x * (1 - x))))


def dataset_images(name: str) -> np.ndarray:
    """Training images (uint8) of a sweep's data set, read as its base config reads them."""
    cfg = config.from_file(config.call_file(os.path.join(config.CONFIG_DIR, "sweeps",
                                                         f"{SWEEP_FILES[name]}.py"), "get_sweep")["base"])
    if cfg.dataset.name == "digits":
        return data.load_digits_arrays()["train_images"]
    return data.load_npz_arrays(cfg.dataset.path)["train_images"]


def _l2_at(row: dict[str, Any], eps: float) -> float | None:
    c = row.get("curve_pgd-l2")
    if not c:
        return None
    for e, a in zip(c["eta"], c["acc"]):
        if abs(e - eps) < 1e-9:
            return a
    return None


def _qte_upto(row: dict[str, Any], eps_max: float, curve: str = "curve_pgd") -> float | None:
    """QTE of a curve restricted to eps <= eps_max (None unless the grid reaches it)."""
    c = row.get(curve)
    if not c or max(c["eta"]) < eps_max - 1e-9:
        return None
    keep = [i for i, e in enumerate(c["eta"]) if e <= eps_max + 1e-9]
    return metrics.qte([c["eta"][i] for i in keep], [c["acc"][i] for i in keep])


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run name: coding fields, seeds, and ``metric: (mean, std, n)``; curves are
    averaged over seeds."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        r = dict(r, **{"l2@0.5": _l2_at(r, 0.5), "qte8": _qte_upto(r, 8 / 255),
                       "qte_fgsm32": _qte_upto(r, 32 / 255, "curve_fgsm")})
        a = out.setdefault(r["run"], {k: r.get(k) for k in ("coding", "sigma", "T", "spiking")} | {"rows": []})
        a["rows"].append(r)
    for a in out.values():
        rs = a.pop("rows")
        a["seeds"] = [r["seed"] for r in rs]
        for m in METRICS:
            v = [r[m] for r in rs if r.get(m) is not None]
            a[m] = (float(np.mean(v)), float(np.std(v)), len(v)) if v else None
        for c in ("curve_pgd", "curve_fgsm", "curve_pgd-l2"):
            cs = [r[c] for r in rs if r.get(c)]
            if cs:
                a[c] = {"eta": cs[0]["eta"], "acc": np.mean([x["acc"] for x in cs], axis=0).tolist()}
        certs = [r["certified"] for r in rs if r.get("certified")]
        if certs:
            a["certified"] = {k: float(np.mean([c[k] for c in certs])) for k in certs[0]}
    return out


def ersct_table(studies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run (plain RSC, E-RSCT): ``(mean, std, n)`` over seeds of the steps and training
    seconds to the study's target (seeds that never reach it are left out of the mean
    and counted in ``not_reached``), final clean accuracy, PGD-7 accuracy, seconds."""
    out: dict[str, dict[str, Any]] = {}
    for run in studies[0]["runs"]:
        rs = [s["runs"][run] for s in studies]

        def stat(v):
            v = [x for x in v if x is not None]
            return (float(np.mean(v)), float(np.std(v)), len(v)) if v else None
        reached = [r["reached"] for r in rs]
        out[run] = {"steps_to_target": stat([r["step"] if r else None for r in reached]),
                    "seconds_to_target": stat([r["train_seconds"] if r else None for r in reached]),
                    "not_reached": sum(r is None for r in reached),
                    "final_clean": stat([r["final_clean_accuracy"] for r in rs]),
                    "pgd7": stat([r["pgd7_accuracy"] for r in rs]),
                    "train_seconds": stat([r["train_seconds"] for r in rs]),
                    "target": studies[0]["target"], "seeds": [s.get("seed", 0) for s in studies],
                    "final_clean_ci95": ersct_interval(studies, run, "final_clean"),
                    "pgd7_ci95": ersct_interval(studies, run, "pgd7")}
    return out


def ersct_interval(studies: list[dict[str, Any]], run: str, field: str) -> dict[str, Any] | None:
    """``field`` (``final_clean`` or ``pgd7``, one draw per image) of ``run`` as a count
    pooled over the studies (seeds), with its exact 95 % interval (``verdicts.pooled``):
    k from ``<field>_k`` and n from ``<field>_correct`` where the study records them, else
    for PGD-7 k = round(acc x attack_examples) (acc was k / n); None where n is unknown."""
    counts = []
    for s in studies:
        r = s["runs"][run]
        if f"{field}_k" in r and isinstance(r.get(f"{field}_correct"), str):
            counts.append({"k": int(r[f"{field}_k"]), "n": len(r[f"{field}_correct"])})
        elif field == "pgd7" and "attack_examples" in s:
            counts.append({"k": int(round(r["pgd7_accuracy"] * s["attack_examples"])), "n": int(s["attack_examples"])})
        else:
            return None
    return verdicts.pooled(counts)


def _fmt(v: tuple[float, float, int] | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    mean, std, n = v
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def table(agg: dict[str, dict[str, Any]], ci: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Markdown: mean ± std over seeds per run; a cell whose column is in ``ci[run]``
    (a ``verdicts.pooled`` count of the same accuracy) gets its 95 % interval."""
    cols = [m for m in METRICS if any(a.get(m) for a in agg.values())]      # columns this data set has
    lines = ["| run | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, a in agg.items():
        cells = [_fmt(a[m], 0 if m == "seconds" else 3) for m in cols]
        cells = [c + (f" [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]" if (p := (ci or {}).get(name, {}).get(m))
                      and c != "-" else "") for c, m in zip(cells, cols)]
        lines.append(f"| {name} | {len(a['seeds'])} | " + " | ".join(cells) + " |")
    return lines


def _runs_of(agg, coding, T=4):
    return sorted(((a["sigma"], n, a) for n, a in agg.items() if a["coding"] == coding and a["T"] == T
                   and a["spiking"]), key=lambda t: t[0])


def _baselines(ax, agg, metric: str, label: str) -> None:
    """Dotted horizontal lines at ``metric`` of the Poisson, direct and ANN rows."""
    for name, who, color in (("poisson_T4", "Poisson", "C2"), ("direct_T4", "direct", "C7"), ("ann", "ANN", "C3")):
        if name in agg and agg[name].get(metric):
            ax.axhline(agg[name][metric][0], ls=":", lw=1, color=color, label=f"{who} {label}")


def _legend(ax, **kw) -> None:
    """A legend where the panel has labelled lines (a partial sweep may leave none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def plots(out: str, aggs: dict[str, dict[str, dict[str, Any]]], sigmas_matched: dict[str, float],
          ersct: dict[str, Any]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [d for d in aggs if aggs[d]]
    written = []

    def panels(title):
        fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False)
        fig.suptitle(title)
        return fig, axes[0]

    def save(fig, fname):
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=100)
        plt.close(fig)
        written.append(fname)

    if not names:
        return written
    fig, axes = panels("Accuracy vs l_inf eps: PGD-7 (solid, to 8/255), FGSM (dashed); T = 4, RSC sigma 0.2")
    for ax, d in zip(axes, names):
        agg = aggs[d]
        for run, label in (("direct_T4", "direct SNN"), ("poisson_T4", "Poisson SNN"),
                           (f"rsc1_sigma{HEADLINE_SIGMA}_T4", "RSC-I"), (f"rsc2_sigma{HEADLINE_SIGMA}_T4", "RSC-II"),
                           ("ann", "ANN twin")):
            if run in agg and agg[run].get("curve_pgd"):
                # PGD-7 with the paper's 2/255 step reaches 14/255 at most: its curve stops at
                # 8/255; beyond, the FGSM curve (one step of size eps) is drawn dashed.
                c, f = agg[run]["curve_pgd"], agg[run].get("curve_fgsm")
                keep = [i for i, e in enumerate(c["eta"]) if e <= 8 / 255 + 1e-9]
                line, = ax.plot([c["eta"][i] * 255 for i in keep], [c["acc"][i] for i in keep], marker="o",
                                label=label)
                if f and max(f["eta"]) > 8 / 255 + 1e-9:
                    ax.plot(np.asarray(f["eta"]) * 255, f["acc"], ls="--", marker=".", color=line.get_color())
        ax.set(title=TITLES[d], xlabel="eps (x 1/255)", ylabel="accuracy")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7)
    save(fig, "eps_curves.png")

    fig, axes = panels("Clean (solid) and robust (dashed) accuracy vs sigma (T = 4)")
    for ax, d in zip(axes, names):
        agg = aggs[d]
        # The per-example worst case over every attack, the figure the claims are read from
        # (FGSM alone overstates the noisy rows); at 32/255 where the grid reaches it
        # (digits, MNIST: 8/255 barely moves them), else at 8/255 (CIFAR-10).
        rob = "worst@32" if any(a.get("worst@32") for a in agg.values()) else "worst@8"
        for coding, color in (("rsc1", "C0"), ("rsc2", "C1")):
            rs = _runs_of(agg, coding)
            if rs:
                s = [t[0] for t in rs]
                ax.plot(s, [t[2]["clean"][0] for t in rs], "-o", color=color, label=f"{coding} clean")
                ax.plot(s, [t[2][rob][0] if t[2].get(rob) else np.nan for t in rs], "--o", color=color,
                        label=f"{coding} {rob}")
        _baselines(ax, agg, rob, rob)
        ax.axvline(sigmas_matched[d], color="k", lw=0.8, alpha=0.5, label="Poisson-matched sigma")
        ax.set(title=TITLES[d], xlabel="sigma", ylabel="accuracy")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=6)
    save(fig, "sigma_tradeoff.png")

    fig, axes = panels("QTE vs sigma (T = 4): PGD-7 over eps 0-8/255 (solid), FGSM over 0-32/255 (dashed)")
    for ax, d in zip(axes, names):
        agg = aggs[d]
        for coding, color in (("rsc1", "C0"), ("rsc2", "C1")):
            for q, style in (("qte8", "-"), ("qte_fgsm32", "--")):
                rs = [t for t in _runs_of(agg, coding) if t[2][q]]
                if rs:
                    ax.errorbar([t[0] for t in rs], [t[2][q][0] for t in rs], yerr=[t[2][q][1] for t in rs],
                                fmt=style + "o", color=color, capsize=3, label=f"{coding} ({q})")
        q = "qte_fgsm32" if any(a.get("qte_fgsm32") for a in agg.values()) else "qte8"
        _baselines(ax, agg, q, f"({q})")
        ax.set(title=TITLES[d], xlabel="sigma", ylabel="QTE")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7)
    save(fig, "qte_sigma.png")

    fig, axes = panels("Certified accuracy vs l_2 radius (T = 4; RSC-I solid, RSC-II dashed)")
    for ax, d in zip(axes, names):
        agg = aggs[d]
        for coding, style in (("rsc1", "-"), ("rsc2", "--")):
            for i, (s, _, a) in enumerate(_runs_of(agg, coding)):
                if a.get("certified"):
                    r = sorted(a["certified"].items(), key=lambda kv: float(kv[0]))
                    ax.plot([float(k) for k, _ in r], [v for _, v in r], style, color=f"C{i}",
                            label=f"{coding} sigma {s}")
        ax.set(title=TITLES[d], xlabel="l_2 radius", ylabel="certified accuracy")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=6, ncol=2)
    save(fig, "certified.png")

    if ersct:
        fig, axes = plt.subplots(1, 2 * len(ersct), figsize=(4.2 * 2 * len(ersct), 3.6), squeeze=False)
        fig.suptitle("E-RSCT and its controls (plain from scratch / from the teacher, KD only, alignment only): "
                     "clean accuracy during training (one line per seed)")
        for j, (d, studies) in enumerate(ersct.items()):
            for study in studies:
                for i, (run, res) in enumerate(study["runs"].items()):
                    acc = [p["clean_accuracy"] for p in res["curve"]]
                    label = run if study is studies[0] else None
                    axes[0][2 * j].plot([p["step"] for p in res["curve"]], acc, color=f"C{i}", lw=1, label=label)
                    axes[0][2 * j + 1].plot([p["train_seconds"] for p in res["curve"]], acc, color=f"C{i}", lw=1,
                                            label=label)
            axes[0][2 * j].set(title=f"{d}: vs steps", xlabel="training steps", ylabel="clean accuracy")
            axes[0][2 * j + 1].set(title=f"{d}: vs training seconds (teacher excluded)",
                                   xlabel="seconds", ylabel="clean accuracy")
            for ax in axes[0][2 * j:2 * j + 2]:
                ax.grid(alpha=0.3)
                _legend(ax, fontsize=7)
        save(fig, "ersct.png")
    return written


def presets(root: str) -> list[str]:
    """The attack presets the finished runs under ``root`` recorded (``robustness.json``
    ``preset``); reports written before presets were recorded say so."""
    out = set()
    for path in glob.glob(os.path.join(root, "*", "robustness.json")):
        if os.path.isfile(os.path.join(os.path.dirname(path), sweep.DONE)):
            with open(path) as f:
                out.add(json.load(f).get("preset") or "not recorded (run before presets were; see the sweep file)")
    return sorted(out)


def markdown(aggs: dict[str, dict[str, Any]], matched: dict[str, float], ints: dict[str, dict[str, Any]],
             ersct_summary: dict[str, dict[str, Any]], ersct_seeds: dict[str, int],
             vs: list[dict[str, Any]], preset_names: dict[str, list[str]] | None = None) -> list[str]:
    """The lines of tables.md: per data set the seed table (``table``) and the interval
    table of the M-averaged accuracies (``verdicts.interval_table``), the E-RSCT tables,
    and the claims ledger of the ``sweeps`` family (``verdicts.ledger_lines``)."""
    md = ["# Reproduction tables (generated by `python scripts/results.py`)\n",
          "Mean ± standard deviation over each row's seeds; accuracies on one coding draw; `clean`: "
          "the whole test split, `clean_attacked`: the attacked subset (first 256 / 128 test images on "
          "MNIST / CIFAR-10); l_inf "
          "attacks at eps 8/255 or 32/255 (`@8`, `@32`); `worst@E`: per example, the worst over all attacks "
          "run at E; `l2@0.5`: PGD-7 at l_2 radius 0.5; `qte8`: QTE of the PGD-7 curve over eps [0, 8/255]; "
          "`qte_fgsm32`: QTE of the FGSM curve over [0, 32/255] (digits and MNIST); `acr`: average certified "
          "radius (n = 2,000, or 1,000 on CIFAR-10); `seconds`: wall-clock of the whole run (train, evaluate, "
          "attack, certify).\n",
          "Intervals: `[lo, hi]` is the exact 95 % Clopper-Pearson interval of the count pooled over the "
          "row's seeds (correct images summed over seeds, out of images x seeds), given where the accuracy "
          "is a count: `clean` (one draw per image) in the first table of each data set; the other "
          "single-draw accuracies there are means over M draws per image, not counts, so their intervals "
          "are given for the accuracy of the M-averaged logits in the second table.\n"]
    for d, agg in aggs.items():
        if agg:
            md += [f"## {TITLES[d]}\n", f"Attack preset: {', '.join((preset_names or {}).get(d) or ['-'])}. "
                   f"Poisson-matched sigma (sqrt of mean x(1-x) over training pixels): {matched[d]:.3f}\n", *table(agg, {r: {"clean": v["clean"]} for r, v in ints.get(d, {}).items()
                                                       if "clean" in v}), ""]
            it = verdicts.interval_table(ints.get(d, {}), METRICS)
            if it:
                md += ["Accuracy of the logits averaged over M draws (`acc_avg`), pooled over the row's seeds, "
                       "with its exact 95 % interval `[lo, hi]`:\n", *it, ""]
    for d, rows in ersct_summary.items():
        md += [f"## E-RSCT, its ablation and plain training (from scratch and from the teacher's weights): "
               f"{d} ({ersct_seeds[d]} seed(s))\n",
               "Final clean and PGD-7 8/255: mean ± std over seeds, then the exact 95 % interval of the count "
               "pooled over seeds, where the study records the count (older studies do not record the size of "
               "the final clean test set: no interval there).\n",
               "| run | steps to target | train s to target | final clean | PGD-7 8/255 | train s, all steps |",
               "|---|---|---|---|---|---|",
               *[f"| {run} | " + " | ".join(_fmt(r[k], digits) + (
                   f" [{r[k + '_ci95']['ci95'][0]:.3f}, {r[k + '_ci95']['ci95'][1]:.3f}]"
                   if r.get(k + "_ci95") else "") for k, digits in ERSCT_COLUMNS.items())
                 + (f" (target not reached by {r['not_reached']} seed(s))" if r["not_reached"] else "") + " |"
                 for run, r in rows.items()], ""]
    return md + verdicts.ledger_lines(vs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweeps", default="runs/sweeps", help="root holding one directory per sweep")
    p.add_argument("--ersct", nargs="*", default=None,
                   help="E-RSCT study JSONs (default: runs/ersct_*.json; one per data set and seed)")
    p.add_argument("--out", default="docs/results")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    aggs, matched, per_example = {}, {}, {}
    for d, fname in SWEEP_FILES.items():
        root = os.path.join(args.sweeps, d)
        matched[d] = matched_sigma(dataset_images(d))
        if not os.path.isdir(root):
            print(f"{root}: no sweep here; skipped", file=sys.stderr)
            aggs[d] = {}
            continue
        sw = config.call_file(os.path.join(config.CONFIG_DIR, "sweeps", f"{fname}.py"), "get_sweep")
        aggs[d] = aggregate(sweep.collect(root, sw))
        per_example[d] = verdicts.load_runs(root, sw)
    ersct: dict[str, list[dict[str, Any]]] = {}
    for path in args.ersct if args.ersct is not None else sorted(glob.glob("runs/ersct_*.json")):
        if os.path.isfile(path):
            with open(path) as f:
                study = json.load(f)
            ersct.setdefault(os.path.basename(study["config"])[:-3], []).append(study)
    written = plots(args.out, aggs, matched, ersct)
    ints = {d: verdicts.intervals(runs) for d, runs in per_example.items()}
    vs = verdicts.ledger({d: {"runs": runs, "matched": matched[d], "meta": aggs[d]}
                          for d, runs in per_example.items()}, verdicts.load_claims(families=("sweeps",)),
                         absent={d: f"no {d} sweep under {args.sweeps}" for d in SWEEP_FILES})
    ersct_summary = {d: ersct_table(studies) for d, studies in ersct.items()}
    md = markdown(aggs, matched, ints, ersct_summary, {d: len(s) for d, s in ersct.items()}, vs,
                  {d: presets(os.path.join(args.sweeps, d)) for d in SWEEP_FILES})
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"matched_sigma": matched, "sweeps": aggs, "intervals": ints,
                   "ersct": ersct_summary, "verdicts": vs}, f, indent=1)
    print(f"wrote {', '.join(written + ['tables.md', 'summary.json'])} to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
