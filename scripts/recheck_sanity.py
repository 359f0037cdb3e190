r"""Re-runs the huge-budget sanity check of finished runs with today's settings, without
re-running their attack suites.

    python scripts/recheck_sanity.py RUN [RUN ...] [--sanity_eot=10] [--sanity_steps=20]

For each RUN (a training workdir with ``robustness.json``, ``config.json`` and
``export/``): the run's own attack config (seed, judge draws, test images, batch size,
sanity eps and steps) with today's ``attack.sanity_eot`` (or the flags), every other
attack family off, evaluated by ``evaluators.robustness`` on the same test images and
judge keys. Its result goes to ``RUN/sanity_recheck/robustness.json`` (nothing the run
wrote is overwritten; an earlier re-check is); one line per run gives the old and the
new ``huge-budget`` check.

Why: until 2026-11-30 the sanity PGD drew one coding draw per step and the check read the
larger of the averaged-logit and the single-draw accuracy, so the noisiest models were
flagged by their own gradient noise (docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402

from rsc_jax import config, export, parallel  # noqa: E402
from rsc_jax import report as rreport  # noqa: E402
from rsc_jax.evaluators import common, robustness  # noqa: E402

OFF = ("fgsm", "l2", "ensemble", "transfer", "transfer_expectation", "poisson_adaptive", "square", "apgd",
       "convergence", "gradient_check", "quick")
KEEP = ("seed", "judge_draws", "num_examples", "batch_size", "sanity_eps", "sanity_steps", "sanity_max_acc",
        "random_start", "common_random_numbers", "eot")
OUT_DIR = "sanity_recheck"


def sanity_config(old: dict[str, Any], **overrides: Any) -> ml_collections.ConfigDict:
    """``config.attack()`` with the run's ``KEEP`` fields, the sanity PGD on, every family
    in ``OFF`` off, the l_inf grid cut to (0, 1/255) (its PGD-7 row is the price of the
    evaluator's clean row) and no strong eps; then ``overrides`` (e.g. sanity_eot)."""
    c = config.attack()
    for k in KEEP:
        if k in old:
            c[k] = tuple(old[k]) if isinstance(old[k], list) else old[k]
    for k in OFF:
        c[k] = False
    c.sanity = True
    c.eps_grid, c.strong_eps = (0.0, 1 / 255), ()
    for k, v in overrides.items():
        c[k] = v
    return c


def huge_budget_check(report: dict[str, Any]) -> dict[str, Any] | None:
    """The ``huge-budget`` entry of a robustness result's ``checks`` (None if absent)."""
    return next((c for c in report.get("checks", []) if c["name"] == "huge-budget"), None)


def recheck(run: str, *, progress: bool = False, **overrides: Any) -> dict[str, Any]:
    """The new huge-budget check of ``run`` (and the old one), after writing
    ``run/sanity_recheck/robustness.json``."""
    report = rreport.read_json(os.path.join(run, "robustness.json"))
    cfg = sanity_config(report["config"], **overrides)
    clf = export.load(os.path.join(run, "export"))
    n = int(report["n_examples"])
    x, y, _ = common.run_test_set(clf, os.path.join(run, "config.json"), n)
    res = robustness.run(clf, x, y, cfg, workdir=os.path.join(run, OUT_DIR), mesh=parallel.make_mesh(1),
                         progress=progress, source=os.path.join(run, "export"))
    return {"run": run, "old": huge_budget_check(report), "new": huge_budget_check(res),
            "row": next(r for r in res["results"] if r["name"] == "sanity-pgd")}


def line(r: dict[str, Any]) -> str:
    o, n, row = r["old"], r["new"], r["row"]
    was = "-" if o is None else f"{o['status']} ({o['acc']:.4f})"
    return (f"{r['run']}: huge-budget {was} -> {n['status']}: PGD-{row['steps']} EOT-{row['eot']} at "
            f"{row['eps_255']:.0f}/255: averaged {row['acc_avg']:.4f} [{row['ci95_avg'][0]:.3f}, "
            f"{row['ci95_avg'][1]:.3f}], single draw {row['acc_single']:.4f} (n = {row['n_examples']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="training workdirs (robustness.json, config.json, export/)")
    p.add_argument("--sanity_eot", type=int, default=config.attack().sanity_eot, help="draws per step")
    p.add_argument("--sanity_steps", type=int, default=None, help="default: the run's")
    a = p.parse_args(argv)
    if a.sanity_eot < 1 or (a.sanity_steps is not None and a.sanity_steps < 1):
        print(f"--sanity_eot={a.sanity_eot} / --sanity_steps={a.sanity_steps}: must be ints >= 1", file=sys.stderr)
        return 1
    for run in a.runs:
        missing = [f for f in ("robustness.json", "config.json", "export") if not os.path.exists(os.path.join(run, f))]
        if missing:
            print(f"{run}: not a finished run (missing {', '.join(missing)})", file=sys.stderr)
            return 1
    over = {"sanity_eot": a.sanity_eot, **({} if a.sanity_steps is None else {"sanity_steps": a.sanity_steps})}
    for run in a.runs:
        print(line(recheck(run, **over)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
