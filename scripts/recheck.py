r"""Re-runs one attack family of finished runs with today's (or given) settings, without
re-running their attack suites.

    python scripts/recheck.py RUN [RUN ...]                        # the huge-budget sanity PGD
    python scripts/recheck.py --family=square RUN [RUN ...] [--square_draws=4]

For each RUN (a training workdir with ``robustness.json``, ``config.json`` and
``export/``): the run's own attack config (seed, judge draws, test images, batch size,
and the family's own fields: sanity eps and steps, or strong eps, Square queries and
p_init) with today's value of the field being re-checked (``attack.sanity_eot``; for
Square ``config.RAND_ATTACK``'s draws per query) or the flag's, every other attack family
off, evaluated by ``evaluators.robustness`` on the same test images, attack keys and
judge keys. Its result goes to ``RUN/<family>_recheck/robustness.json`` (nothing the run
wrote is overwritten; an earlier re-check of that family is); one line per run.

- ``sanity``: the old and the new ``huge-budget`` check. Why: until 2026-11-30 the
  sanity PGD drew one coding draw per step and the check read the larger of the
  averaged-logit and the single-draw accuracy, so the noisiest models were flagged by
  their own gradient noise (docs/RESULTS.md).
- ``square``: Square's accuracy with the new draws per query beside the run's Square row,
  and the run's per-example worst case before and after taking the new Square into it
  (an image counts as robust only if the new Square also leaves it correct; same judge
  draws, so the union is per example). Why: the CPU sweeps ran Square with one draw per
  query (``configs/sweeps/digits_controlled.py``), which issue 19 asks to be several.
  The evaluator's fixed PGD rows at the strong eps (PGD-k, its strong steps and EOT) run
  too; on digits they cost seconds against Square's minutes.
  ``RUN/square_recheck/recheck.json`` holds the summary (``--markdown`` prints table rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from rsc_jax import config, export, metrics, parallel  # noqa: E402
from rsc_jax import report as rreport  # noqa: E402
from rsc_jax.evaluators import common, robustness  # noqa: E402

OFF = ("fgsm", "l2", "ensemble", "transfer", "transfer_expectation", "poisson_adaptive", "square", "apgd",
       "convergence", "doubled_budget", "gradient_check", "quick", "sanity")
KEEP = ("seed", "judge_draws", "num_examples", "batch_size", "random_start", "common_random_numbers", "eot")
SUMMARY = "recheck.json"         # the Square re-check's summary, in RUN/square_recheck/


class Family(NamedTuple):
    keep: tuple[str, ...]      # the run's own attack fields it keeps
    at_strong: bool            # whether its rows are at the run's strong eps
    flags: tuple[str, ...]     # the attack fields the command line may set for it


FAMILIES: dict[str, Family] = {
    "sanity": Family(("sanity_eps", "sanity_steps", "sanity_max_acc"), False, ("sanity_eot", "sanity_steps")),
    "square": Family(("square_queries", "square_p_init"), True, ("square_draws", "square_queries")),
}


def out_dir(family: str) -> str:
    return f"{family}_recheck"


def recheck_config(old: dict[str, Any], family: str, **overrides: Any) -> ml_collections.ConfigDict:
    """``config.attack()`` with the run's ``KEEP`` fields and the family's own, the family
    on, every other family in ``OFF`` off, the l_inf grid cut to (0, 1/255) (its PGD-7 row
    is the price of the evaluator's clean row), the run's strong eps only where the family
    attacks there; then ``overrides`` (e.g. sanity_eot, square_draws)."""
    fam = FAMILIES[family]
    c = config.attack()
    for k in KEEP + fam.keep + (("strong_eps",) if fam.at_strong else ()):
        if k in old:
            c[k] = tuple(old[k]) if isinstance(old[k], list) else old[k]
    for k in OFF:
        c[k] = False
    c[family] = True
    c.eps_grid = (0.0, 1 / 255)
    if not fam.at_strong:
        c.strong_eps = ()
    for k, v in overrides.items():
        c[k] = v
    return c


def huge_budget_check(report: dict[str, Any]) -> dict[str, Any] | None:
    """The ``huge-budget`` entry of a robustness result's ``checks`` (None if absent)."""
    return next((c for c in report.get("checks", []) if c["name"] == "huge-budget"), None)


def result_row(report: dict[str, Any], name: str, eps: float | None = None) -> dict[str, Any] | None:
    """The first row of a robustness result named ``name`` (at ``eps`` if given), or None."""
    return next((r for r in report.get("results", []) if r["name"] == name
                 and (eps is None or abs(r["eps"] - eps) < 1e-9)), None)


def square_summary(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Per strong eps of the re-check: the new Square row, the run's own Square row and
    worst case, and the worst case with the new Square in it (per-example minimum of the
    two ``correct_avg`` strings) with its 95 % interval. ``fooled_more`` counts the images
    only the new Square breaks (so the worst case falls by fooled_more / n)."""
    out = []
    for w in old.get("worst_case", []):
        row = result_row(new, "square", w["eps"])
        if row is None or "correct_avg" not in w:
            continue
        before, sq = metrics.unpack_correct(w["correct_avg"]), metrics.unpack_correct(row["correct_avg"])
        union = before & sq
        was = result_row(old, "square", w["eps"]) or {}
        out.append({"eps": w["eps"], "eps_255": w["eps_255"], "n_examples": len(union),
                    "square": {k: row[k] for k in ("queries", "draws", "acc_avg", "ci95_avg") if k in row},
                    # rows written before Square had draws per query record none: it drew once
                    "run_square": ({"queries": was.get("queries"), "draws": was.get("draws", 1),
                                    "acc_avg": was["acc_avg"]} if was else {}),
                    "worst_before": w["acc_avg"], "worst_after": float(np.mean(union)),
                    "ci95_after": metrics.binomial_interval(int(np.sum(union)), len(union)),
                    "fooled_more": int(np.sum(before & ~sq))})
    return out


def recheck(run: str, family: str = "sanity", *, progress: bool = False, **overrides: Any) -> dict[str, Any]:
    """Re-runs ``family`` on ``run`` into ``run/<family>_recheck/``; returns what ``line``
    prints: the old and new huge-budget check and the sanity row, or ``square_summary``."""
    report = rreport.read_json(os.path.join(run, "robustness.json"))
    cfg = recheck_config(report["config"], family, **overrides)
    clf = export.load(os.path.join(run, "export"))
    x, y, _ = common.run_test_set(clf, os.path.join(run, "config.json"), int(report["n_examples"]))
    where = os.path.join(run, out_dir(family))
    res = robustness.run(clf, x, y, cfg, workdir=where, mesh=parallel.make_mesh(1), progress=progress,
                         source=os.path.join(run, "export"))
    if family == "sanity":
        return {"run": run, "family": family, "old": huge_budget_check(report), "new": huge_budget_check(res),
                "row": result_row(res, "sanity-pgd")}
    out = {"run": run, "family": family, "rows": square_summary(report, res)}
    with open(os.path.join(where, SUMMARY), "w") as f:
        json.dump(out, f, indent=1)
    return out


def _ci(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def line(r: dict[str, Any]) -> str:
    """One line per run (several for Square with several strong eps)."""
    if r["family"] == "sanity":
        o, n, row = r["old"], r["new"], r["row"]
        was = "-" if o is None else f"{o['status']} ({o['acc']:.4f})"
        return (f"{r['run']}: huge-budget {was} -> {n['status']}: PGD-{row['steps']} EOT-{row['eot']} at "
                f"{row['eps_255']:.0f}/255: averaged {row['acc_avg']:.4f} {_ci(row['ci95_avg'])}, single draw "
                f"{row['acc_single']:.4f} (n = {row['n_examples']})")
    out = []
    for s in r["rows"]:
        sq, was = s["square"], s["run_square"]
        before = (f"the run's Square ({was['queries']} queries x {was['draws']}) {was['acc_avg']:.4f}"
                  if was else "the run had no Square")
        out.append(f"{r['run']}: Square {sq['queries']} queries x {sq['draws']} draws at {s['eps_255']:.0f}/255: "
                   f"{sq['acc_avg']:.4f} {_ci(sq['ci95_avg'])}; {before}; worst case {s['worst_before']:.4f} -> "
                   f"{s['worst_after']:.4f} {_ci(s['ci95_after'])} ({s['fooled_more']} more of "
                   f"{s['n_examples']} fooled)")
    return "\n".join(out) or f"{r['run']}: no worst case with per-example results to compare with"


def markdown(r: dict[str, Any]) -> str:
    """Table rows ``| run | eps | run's Square | new Square [CI] | worst before | after [CI] | more fooled |``."""
    rows = []
    for s in r.get("rows", []):
        sq, was = s["square"], s["run_square"]
        old = f"{was['acc_avg']:.3f} ({was['queries']} x {was['draws']})" if was else "-"
        rows.append(f"| {os.path.basename(os.path.normpath(r['run']))} | {s['eps_255']:.0f}/255 | {old} | "
                    f"{sq['acc_avg']:.3f} {_ci(sq['ci95_avg'])} ({sq['queries']} x {sq['draws']}) | "
                    f"{s['worst_before']:.3f} | {s['worst_after']:.3f} {_ci(s['ci95_after'])} | "
                    f"{s['fooled_more']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="training workdirs (robustness.json, config.json, export/)")
    p.add_argument("--family", default="sanity", help=f"one of {', '.join(FAMILIES)}")
    p.add_argument("--sanity_eot", type=int, default=config.attack().sanity_eot, help="sanity: draws per step")
    p.add_argument("--sanity_steps", type=int, default=None, help="sanity: steps (default: the run's)")
    p.add_argument("--square_draws", type=int, default=int(config.RAND_ATTACK["square_draws"]),
                   help="square: coding draws per query")
    p.add_argument("--square_queries", type=int, default=None, help="square: queries (default: the run's)")
    p.add_argument("--markdown", action="store_true", help="square: also print Markdown table rows")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    a = p.parse_args(argv)
    if a.family not in FAMILIES:
        print(f"--family={a.family}: must be one of {', '.join(FAMILIES)}", file=sys.stderr)
        return 1
    ints = {"sanity_eot": a.sanity_eot, "sanity_steps": a.sanity_steps, "square_draws": a.square_draws,
            "square_queries": a.square_queries}
    bad = [f"--{k}={v}" for k, v in ints.items() if v is not None and v < 1]
    if bad:
        print(f"{', '.join(bad)}: must be ints >= 1", file=sys.stderr)
        return 1
    for run in a.runs:
        missing = [f for f in ("robustness.json", "config.json", "export") if not os.path.exists(os.path.join(run, f))]
        if missing:
            print(f"{run}: not a finished run (missing {', '.join(missing)})", file=sys.stderr)
            return 1
    for run in a.runs:
        worst = rreport.read_json(os.path.join(run, "robustness.json")).get("worst_case", [])
        if a.family == "square" and any("judge" in w for w in worst):
            print(f"{run}: its worst case is judged on the report stream (docs/EVALUATION.md), which a Square "
                  "re-check's rows are not; re-run its attacks with --config.attack.square_draws=N instead",
                  file=sys.stderr)
            return 1
    over = {k: ints[k] for k in FAMILIES[a.family].flags if ints[k] is not None}
    done = []
    for run in a.runs:
        done.append(recheck(run, a.family, progress=a.progress, **over))
        print(line(done[-1]), flush=True)
    if a.markdown and a.family == "square":
        print("| run | eps | the run's Square (queries x draws) | re-check | worst case | with the re-check | "
              "more fooled |\n|---|---|---|---|---|---|---|")
        print("\n".join(markdown(r) for r in done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
