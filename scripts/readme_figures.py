"""The README's digits-demo figures, generated from a run's report, with 95 % intervals.

    # after `python -m rsc_jax.main --config=digits --workdir=runs/digits`:
    python scripts/readme_figures.py --report=runs/digits/report.json    # figures JSON + README table
    python scripts/readme_figures.py --check                            # README table == figures JSON?
    python scripts/readme_figures.py --compare=runs/digits/report.json  # a fresh run vs the README

``--report`` extracts the figures into ``docs/results/digits_demo.json`` and rewrites the
README table between its two markers; ``--check`` (run by tests/test_readme_figures.py)
fails when the README table is not the rendering of that JSON; ``--compare`` says, per
row, whether a fresh run's value lies inside the committed 95 % interval (numbers move
between CPUs: XLA:CPU's kernels differ with the instruction set, so the last digits of a
trained model are machine-specific). Every accuracy is a proportion of examples, with
its exact Clopper-Pearson interval (``metrics.binomial_interval``); attack rows use the
accuracy of the logits averaged over the M judge draws (one 0/1 outcome per example).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from rsc_jax import metrics  # noqa: E402

FIGURES = os.path.join(ROOT, "docs", "results", "digits_demo.json")
README = os.path.join(ROOT, "README.md")
BEGIN, END = "<!-- digits-figures:begin -->", "<!-- digits-figures:end -->"
STRONG_EPS_255, L2_EPS, RADII = 8.0, (0.5, 1.0), (0.1, 0.25)


def _row(label: str, p: float, n: int) -> dict[str, Any]:
    k = int(round(p * n))
    low, high = metrics.binomial_interval(k, n)
    return {"label": label, "value": k / n, "k": k, "n": n, "low": low, "high": high}


def _attack(rob: dict[str, Any], name: str, norm: str, eps: float) -> dict[str, Any]:
    key = "eps_255" if norm == "linf" else "eps"
    rows = [r for r in rob["results"] if r["name"] == name and r["norm"] == norm and abs(r[key] - eps) < 1e-6]
    if not rows:
        raise KeyError(f"the report has no {name} row at {norm} eps {eps}")
    return rows[0]


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The README rows from a ``report.json`` of the digits demo."""
    ev, rob, cert = report["evaluation"], report["robustness"], report["certification"]
    n_ev, n_rob = ev["num_examples"], rob["n_examples"]
    m = rob["judge_draws"]
    rows = [_row("clean accuracy, 1 draw", ev["accuracy"], n_ev),
            _row(f"clean accuracy, logits averaged over {ev['draws']} draws", ev[f"accuracy_avg{ev['draws']}"], n_ev)]
    r = _attack(rob, f"pgd-{rob['config']['steps']}", "linf", STRONG_EPS_255)
    rows.append(_row(f"PGD-{r['steps']}, l_inf eps 8/255 ({m}-draw average)", r["acc_avg"], n_rob))
    w = [w for w in rob["worst_case"] if abs(w["eps_255"] - STRONG_EPS_255) < 1e-6][0]
    label = (f"worst case at 8/255, each image's chosen point judged on {m} fresh draws (docs/EVALUATION.md)"
             if "judge" in w else f"worst case over every l_inf attack at 8/255 ({m}-draw average)")
    rows.append(dict(_row(label, w["acc_avg"], n_rob), attacks=w["attacks"]))
    for e in L2_EPS:
        r = _attack(rob, f"pgd-{rob['config']['steps']}-l2", "l2", e)
        rows.append(_row(f"PGD-{r['steps']}, l_2 eps {e:g} ({m}-draw average)", r["acc_avg"], n_rob))
    s = cert["settings"]
    for radius in RADII:
        acc = cert["certified_accuracy"][[round(x, 6) for x in cert["radii"]].index(radius)]
        rows.append(_row(f"certified accuracy at l_2 radius {radius:g} (n = {s['n']:,}, alpha = {s['alpha']:g})",
                         acc, s["num_examples"]))
    return {"rows": rows, "preset": rob.get("preset", "quick" if rob["config"].get("quick") else "default"),
            "package_version": report.get("package_version")}


def render(fig: dict[str, Any]) -> str:
    """The README block (markers included) for a figures JSON."""
    lines = [BEGIN,
             f"Measured on {fig['machine']} ({fig['date']}; attack preset `{fig['preset']}`), from "
             f"`docs/results/digits_demo.json` (`python scripts/readme_figures.py --report=...`):",
             "",
             "| | value | 95 % interval | examples |", "|---|---|---|---|"]
    for r in fig["rows"]:
        label = r["label"] + (f": {', '.join(r['attacks'])}" if r.get("attacks") else "")
        lines.append(f"| {label} | {r['value']:.3f} | [{r['low']:.3f}, {r['high']:.3f}] | {r['n']} |")
    return "\n".join(lines + ["", END])


def _readme_block(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    return text[text.index(BEGIN):text.index(END) + len(END)]


def write(report_path: str) -> None:
    with open(report_path) as f:
        fig = figures(json.load(f))
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True)
    fig.update(machine=f"{os.cpu_count()} cores of an {cpu.stdout.strip() or platform.processor()}",
               date=datetime.date.today().isoformat(), report=os.path.relpath(report_path, ROOT))
    with open(FIGURES, "w") as f:
        json.dump(fig, f, indent=1)
    with open(README) as f:
        text = f.read()
    with open(README, "w") as f:
        f.write(text.replace(_readme_block(text), render(fig)))
    print(f"wrote {FIGURES} and the README table")


def check() -> bool:
    """True when the README block is the rendering of the committed figures."""
    with open(FIGURES) as f:
        fig = json.load(f)
    with open(README) as f:
        return _readme_block(f.read()) == render(fig)


def compare(report_path: str) -> list[dict[str, Any]]:
    """Per row: a fresh run's value and whether it lies in the committed interval."""
    with open(FIGURES) as f:
        ref = {r["label"]: r for r in json.load(f)["rows"]}
    with open(report_path) as f:
        new = figures(json.load(f))["rows"]
    return [{"label": r["label"], "value": r["value"], "readme": ref[r["label"]]["value"],
             "inside": ref[r["label"]]["low"] <= r["value"] <= ref[r["label"]]["high"]}
            for r in new if r["label"] in ref]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--report", help="report.json of a digits run: write the figures and the README table")
    g.add_argument("--check", action="store_true", help="exit 1 unless the README table matches the figures")
    g.add_argument("--compare", help="report.json of a fresh run: compare with the README's intervals")
    a = p.parse_args()
    if a.report:
        write(a.report)
    elif a.check:
        ok = check()
        print("README figures match docs/results/digits_demo.json" if ok else
              "README figures differ from docs/results/digits_demo.json: run --report=RUN/report.json")
        return 0 if ok else 1
    else:
        rows = compare(a.compare)
        for r in rows:
            print(f"{'inside ' if r['inside'] else 'OUTSIDE'} {r['label']}: {r['value']:.3f} (README {r['readme']:.3f})")
        return 0 if all(r["inside"] for r in rows) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
