r"""The controlled comparisons (the ``configs/sweeps/*_controlled.py`` sweeps) into
docs/results/controlled.md and controlled.json.

    python scripts/controlled.py --sweeps=runs/sweeps --out=docs/results

For every controlled sweep with finished runs under ``--sweeps`` (``SWEEPS``), per run
and pooled over its seeds (``verdicts.pooled``: exact 95 % Clopper-Pearson intervals of
the summed counts): accuracy on the attacked test images (M-averaged logits), every
attack at the strong eps and the per-example worst case over all of them, certified
accuracy at a few radii (an example counts when it is correct and its certified radius
reaches r, from ``certify.jsonl``), and whether the attack-convergence checks passed.
Then the verdict of each comparison of ``CLAIMS`` by the paired exact McNemar test and
the rules of scripts/verdicts.py (certified accuracy is paired per example too). Every
table names the attack preset and budgets that produced it.

``--results_md=docs/RESULTS.md`` also rewrites the digits headline table and verdict
table there, between the markers ``<!-- controlled-table -->`` ... ``<!-- /controlled-table -->``
and ``<!-- controlled-verdicts -->`` ... ``<!-- /controlled-verdicts -->`` (nothing else
in the file changes; a missing marker is an error and the file is left as it was).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))          # scripts/verdicts.py, recheck.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import recheck as rc  # noqa: E402
import verdicts as vd  # noqa: E402
from rsc_jax import config, report  # noqa: E402

SWEEPS = {"digits": "digits_controlled", "mnist": "mnist_controlled", "cifar10": "cifar10_controlled"}
CERT_RADII = (0.1, 0.25, 0.5)
C = vd.Claim
CLAIMS = (
    C("c1", "RSC-I (sigma 0.2) more robust than the Poisson SNN", "rsc1_sigma0.2_T4", "poisson_T4", "worst"),
    C("c2", "RSC-II (sigma 0.2) more robust than the direct SNN", "rsc2_sigma0.2_T4", "direct_T4", "worst"),
    C("c3", "the Poisson SNN more robust than the direct SNN", "poisson_T4", "direct_T4", "worst"),
    C("c4", "RSC-II (sigma 0.2) more robust than the clean ANN twin", "rsc2_sigma0.2_T4", "ann", "worst"),
    C("c10", "the Poisson SNN more robust than the clean ANN twin", "poisson_T4", "ann", "worst"),
    C("c11", "RSC-I: sigma 0.1 more accurate (clean) than sigma 0.2", "rsc1_sigma0.1_T4", "rsc1_sigma0.2_T4",
      "clean_attacked"),
    C("c12", "RSC-I: sigma 0.2 more robust than sigma 0.1", "rsc1_sigma0.2_T4", "rsc1_sigma0.1_T4", "worst"),
    C("c5", "RSC-II (sigma 0.2, T 4) more robust than an ANN trained and smoothed with Gaussian noise of its "
            "time-averaged level (sigma / sqrt(T) = 0.1)", "rsc2_sigma0.2_T4", "ann_gauss_sigma0.1", "worst"),
    C("c6", "RSC-I (sigma 0.2) more robust than an ANN trained and smoothed with the same Gaussian noise",
      "rsc1_sigma0.2_T4", "ann_gauss_sigma0.2", "worst"),
    C("c7", "the Poisson SNN more robust than an ANN on the same Poisson coding", "poisson_T4", "ann_poisson",
      "worst"),
    C("c8", "RSC-II (sigma 0.2) and RSC-I (sigma 0.1) alike under attack", "rsc2_sigma0.2_T4", "rsc1_sigma0.1_T4",
      "worst", "="),
    C("c9", "RSC-II (sigma 0.2) and RSC-I (sigma 0.1) alike in clean accuracy", "rsc2_sigma0.2_T4",
      "rsc1_sigma0.1_T4", "clean_attacked", "="),
    C("k1", "RSC-II (sigma 0.2) and RSC-I (sigma 0.1) alike in certified accuracy at l2 radius 0.25",
      "rsc2_sigma0.2_T4", "rsc1_sigma0.1_T4", "cert@0.25", "="),
    C("k2", "RSC-II (sigma 0.2) certifies more than the Gaussian ANN of the same radius formula (sigma 0.1) "
            "at l2 radius 0.25", "rsc2_sigma0.2_T4", "ann_gauss_sigma0.1", "cert@0.25"),
)


def read_certified(workdir: str, radii: tuple[float, ...] = CERT_RADII) -> dict[str, vd.Entry]:
    """``cert@r`` columns of one run from ``certify.jsonl``: example i counts when it is
    correct and its certified l2 radius is >= r (Cohen et al.'s certified accuracy)."""
    p = os.path.join(workdir, "certify.jsonl")
    if not os.path.isfile(p):
        return {}
    with open(p) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    rad = np.array([ln["radius"] for ln in lines], float)
    ok = np.array([ln["correct"] for ln in lines], bool)
    out = {}
    for r in radii:
        c = ok & (rad >= r)
        out[f"cert@{r:g}"] = {"k": int(c.sum()), "n": len(c), "correct": c, "attacks": None}
    return out


def run_facts(workdir: str) -> dict[str, Any]:
    """Preset, budgets, convergence status and certification limits of one run."""
    rob = report.read_json(os.path.join(workdir, "robustness.json")) or {}
    conv = report.read_json(os.path.join(workdir, "convergence.json")) or {}
    cert = report.read_json(os.path.join(workdir, "certified.json")) or {}
    cfg = rob.get("config", {})
    flagged = [c["name"] for c in conv.get("checks", []) if c.get("status") != "pass"]
    return {"preset": rob.get("preset"), "n_examples": rob.get("n_examples"), "judge_draws": rob.get("judge_draws"),
            "budget": {k: cfg.get(k) for k in ("apgd_steps", "apgd_eot", "apgd_restarts", "square_queries",
                                               "square_draws", "strong_steps", "strong_eot")},
            "convergence": (None if not conv else ("FLAG: " + ", ".join(flagged) if flagged else "pass")),
            "certify": ({k: cert["settings"][k] for k in ("n", "alpha", "num_examples")} if cert else None),
            "max_certifiable_radius": cert.get("max_certifiable_radius")}


def huge_budget(workdir: str) -> str:
    """The run's huge-budget check in a few words; a re-check by scripts/recheck.py
    (``sanity_recheck/robustness.json``) replaces it and says what it was."""
    def check(rob: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return rc.huge_budget_check(rob), rc.result_row(rob, "sanity-pgd")
    old, old_row = check(report.read_json(os.path.join(workdir, "robustness.json")) or {})
    new, new_row = check(report.read_json(os.path.join(workdir, rc.out_dir("sanity"), "robustness.json")) or {})
    if old is None and new is None:
        return "-"
    c, row = (new, new_row) if new is not None else (old, old_row)
    out = f"{c['status']} ({c['acc']:.3f}, EOT-{(row or {}).get('eot', 1)})"
    return out + (f"; rechecked, was {old['status']} ({old['acc']:.3f}, EOT-{(old_row or {}).get('eot', 1)})"
                  if new is not None and old is not None else "")


def square_recheck(workdir: str) -> str:
    """Square re-run with more draws per query by ``scripts/recheck.py --family=square``
    (``square_recheck/recheck.json``) in a few words: its accuracy, and the run's worst case
    before and after it is taken in; "-" if not re-checked. The pooled tables above keep
    the run's own worst case (a re-check of some seeds only would unpair the tests)."""
    rows = (report.read_json(os.path.join(workdir, rc.out_dir("square"), rc.SUMMARY)) or {}).get("rows", [])
    return "; ".join(f"{s['square']['queries']} x {s['square']['draws']} at {s['eps_255']:.0f}/255: "
                     f"{s['square']['acc_avg']:.3f}, worst {s['worst_before']:.3f} -> {s['worst_after']:.3f}"
                     for s in rows) or "-"


# docs/RESULTS.md's headline table: run labels, and (column key prefix, header) pairs
LABELS = {"direct_T4": "direct SNN", "poisson_T4": "Poisson SNN", "rsc1_sigma0.1_T4": "RSC-I sigma 0.1",
          "rsc1_sigma0.2_T4": "RSC-I sigma 0.2", "rsc2_sigma0.2_T4": "RSC-II sigma 0.2",
          "ann": "ANN twin (clean)", "ann_gauss_sigma0.1": "ANN, Gaussian noise 0.1, smoothed",
          "ann_gauss_sigma0.2": "ANN, Gaussian noise 0.2, smoothed", "ann_poisson": "ANN on Poisson coding"}
HEADLINE = (("clean_attacked", "clean"), ("apgd-ce@", "APGD-CE"), ("square@", "Square"), ("worst@", "worst"),
            ("cert@0.25", "certified r = 0.25"))


def collect(root: str, name: str) -> dict[str, Any] | None:
    """Runs, columns and facts of one controlled sweep under ``root/<name>``; None if absent."""
    sw = config.call_file(os.path.join(config.CONFIG_DIR, "sweeps", f"{name}.py"), "get_sweep")
    base = os.path.join(root, name)
    runs = vd.load_runs(base, sw)
    if not runs:
        return None
    facts = {}
    for run, seeds in runs.items():
        for seed in seeds:
            d = os.path.join(base, f"{run}_seed{seed}")
            seeds[seed].update(read_certified(d))
            f = facts.setdefault(run, run_facts(d))
            f.setdefault("huge_budget", {})[seed] = huge_budget(d)
            f.setdefault("square_recheck", {})[seed] = square_recheck(d)
    return {"runs": runs, "facts": facts, "meta": {r: {} for r in runs}, "matched": float("nan")}


def columns(runs: dict[str, dict[int, dict[str, vd.Entry]]]) -> tuple[str, ...]:
    """The table's columns: clean (attacked images), every attack any run ran at the
    largest strong eps (in the order the runs list them) and the worst case there, then
    certified accuracy."""
    keys = list(dict.fromkeys(k for seeds in runs.values() for e in seeds.values() for k in e))
    worst = sorted((k for k in keys if k.startswith("worst@")), key=lambda k: float(k.split("@")[1]))
    e = worst[-1].split("@")[1] if worst else None
    attacks = [k for k in keys if e and k.endswith(f"@{e}") and not k.startswith("worst@")]
    cols = ["clean_attacked"] + (attacks + [f"worst@{e}"] if e else [])
    return tuple(cols + [f"cert@{r:g}" for r in CERT_RADII if f"cert@{r:g}" in keys])


def markdown(data: dict[str, dict[str, Any]], vs: list[dict[str, Any]]) -> str:
    lines = ["# Controlled comparisons\n",
             "Generated by `python scripts/controlled.py` from the `configs/sweeps/*_controlled.py` sweeps. "
             "Accuracies of the logits averaged over M judge draws, pooled over seeds, with exact 95 % "
             "intervals; `worst` is per example the worst over every l_inf attack at that eps; `cert@r`: "
             "correct and certified at l2 radius r (not applicable to direct, Poisson and the clean ANN). "
             "Huge-budget checks (PGD at 64/255) written before 2026-11-30 judged the larger of the averaged and "
             "the single-draw accuracy after one draw per step; `scripts/recheck.py` re-runs them with "
             "today's check (averaged accuracy, EOT-10 on stochastic models): \"rechecked, was\" gives the old one. "
             "`scripts/recheck.py --family=square` re-runs Square with more draws per query (queries x draws); its "
             "column gives the run's worst case before and after taking it in (not in the pooled tables).\n"]
    for d, ds in data.items():
        f0 = next(iter(ds["facts"].values()))
        lines += [f"## {d}\n",
                  f"Attack preset `{f0['preset']}` ({f0['n_examples']} test images, M = {f0['judge_draws']}; "
                  + ", ".join(f"{k} {v}" for k, v in f0["budget"].items()) + ").\n"]
        ints = vd.intervals(ds["runs"])
        lines += vd.interval_table(ints, columns(ds["runs"])) + [""]
        lines += ["| run | seeds | convergence checks | huge-budget check (accuracy judged, EOT draws per step) | "
                  "Square re-check | certification (n, alpha, images) | largest certifiable radius |",
                  "|---|---|---|---|---|---|---|"]
        for run, f in ds["facts"].items():
            c = f["certify"]
            hb = "; ".join(f"s{s}: {v}" for s, v in sorted(f.get("huge_budget", {}).items()))
            sq = "; ".join(f"s{s}: {v}" for s, v in sorted(f.get("square_recheck", {}).items()) if v != "-")
            lines.append(f"| {run} | {','.join(map(str, sorted(ds['runs'][run])))} | {f['convergence'] or '-'} | "
                         f"{hb or '-'} | {sq or '-'} | "
                         + (f"{c['n']:,}, {c['alpha']:g}, {c['num_examples']}" if c else "-") + " | "
                         + (f"{f['max_certifiable_radius']:.3f}" if f["max_certifiable_radius"] else "-") + " |")
        lines.append("")
    return "\n".join(lines + vd.verdict_lines(vs))


def headline_blocks(ds: dict[str, Any], vs: list[dict[str, Any]], dataset: str) -> dict[str, str]:
    """docs/RESULTS.md's two blocks for ``dataset``: the headline table (``HEADLINE``
    columns at the largest strong eps, every run of ``LABELS`` that ran) and the verdict
    table (each claim's test on ``dataset``)."""
    cols = columns(ds["runs"])
    pick = [(next((c for c in cols if c.startswith(k)), None), h) for k, h in HEADLINE]
    pick = [(c, f"{h} {c.split('@')[1]}/255" if h == "worst" else h) for c, h in pick if c is not None]
    ints = vd.intervals(ds["runs"])
    n = next(iter(ds["facts"].values()))["n_examples"]
    m = next(iter(ds["facts"].values()))["judge_draws"]
    table = [f"Accuracy of the {m or 'M'}-draw-averaged logits, exact 95 % interval; pooled over the seeds "
             f"listed ({n or '?'} images each):", "", "| run | seeds | " + " | ".join(h for _, h in pick) + " |",
             "|---|---|" + "---|" * len(pick)]
    for run, label in LABELS.items():
        if run in ints:
            table.append(f"| {label} | {','.join(map(str, sorted(ds['runs'][run])))} | "
                         + " | ".join(vd.fmt_ci(ints[run].get(c)) for c, _ in pick) + " |")
    names = {c: h for c, h in pick}
    ver = ["Verdicts (paired exact McNemar test on the same images, seeds both runs have; b = A right and B "
           "wrong, c = the reverse; rules of `scripts/verdicts.py`):", "",
           "| id | claim (A vs B, metric) | seeds | acc A | acc B | b | c | p | per seed b:c (p) | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for v in vs:
        t = next((t for t in v["tests"] if t["dataset"] == dataset), None)
        if t is None:
            ver.append(f"| {v['id']} | {v['claim']} | - | - | - | - | - | - | - | {v['verdict']} (not run) |")
            continue
        stat = "- | - | - | -" if t["missing"] else f"{t['b']} | {t['c']} | {t['p_value']:.2g} | {vd.fmt_per_seed(t)}"
        ver.append(f"| {v['id']} | {v['claim']} ({names.get(t['metric'], t['metric'])}) | "
                   f"{','.join(map(str, t['seeds']))} | {t['acc_a']:.3f} | {t['acc_b']:.3f} | {stat} | "
                   f"**{v['verdict']}**{' (seeds disagree)' if vd.SEEDS_DISAGREE in v['reason'] else ''} |")
    return {"controlled-table": "\n".join(table), "controlled-verdicts": "\n".join(ver)}


def fill_markers(text: str, blocks: dict[str, str]) -> str:
    """``text`` with what lies between ``<!-- NAME -->`` and ``<!-- /NAME -->`` replaced
    by ``blocks[NAME]``; ValueError naming a marker that is missing or not unique."""
    for name, block in blocks.items():
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        i, j = text.find(start), text.find(end)
        if text.count(start) != 1 or text.count(end) != 1 or j < i:
            raise ValueError(f"the markers {start} ... {end} must each appear once, in that order "
                             f"(found {text.count(start)} and {text.count(end)})")
        text = text[:i + len(start)] + "\n" + block + "\n" + text[j:]
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweeps", default="runs/sweeps", help="root of the sweeps' workdirs")
    p.add_argument("--out", default="docs/results", help="folder for controlled.md / controlled.json")
    p.add_argument("--results_md", default="", help="also rewrite the digits blocks of this file (docs/RESULTS.md)")
    a = p.parse_args(argv)
    if a.results_md and not os.path.isfile(a.results_md):
        print(f"--results_md={a.results_md}: no such file (give the markdown file whose blocks to rewrite)",
              file=sys.stderr)
        return 1
    data = {d: ds for d, name in SWEEPS.items() if (ds := collect(a.sweeps, name)) is not None}
    if not data:
        print(f"no finished runs of {list(SWEEPS.values())} under {a.sweeps}", file=sys.stderr)
        return 1
    vs = vd.verdicts(data, CLAIMS)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "controlled.md"), "w") as f:
        f.write(markdown(data, vs))
    summary = {"intervals": {d: vd.intervals(ds["runs"]) for d, ds in data.items()},
               "facts": {d: ds["facts"] for d, ds in data.items()}, "verdicts": vs}
    with open(os.path.join(a.out, "controlled.json"), "w") as f:
        json.dump(summary, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    if a.results_md:
        if "digits" not in data:
            print(f"--results_md: no digits_controlled runs under {a.sweeps}", file=sys.stderr)
            return 1
        with open(a.results_md) as f:
            text = f.read()
        try:
            text = fill_markers(text, headline_blocks(data["digits"], vs, "digits"))
        except ValueError as e:
            print(f"--results_md={a.results_md}: {e}", file=sys.stderr)
            return 1
        with open(a.results_md, "w") as f:
            f.write(text)
    print(f"{sum(len(ds['runs']) for ds in data.values())} runs of {list(data)} -> {a.out}/controlled.md; "
          + ", ".join(f"{v['id']}: {v['verdict']}" for v in vs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
