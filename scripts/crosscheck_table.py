"""The Markdown table of independent checks of reported worst cases, from their JSON.

Reads every ``RUN.json`` written by ``scripts/crosscheck_torchattacks.py`` (torchattacks)
or ``scripts/anchor_sapgd.py`` (SA-PGD with ASSG / PDSG) in the ``--inputs`` folders (the
file name is the run's directory name, e.g. ``rsc1_sigma0.2_T4_seed0.json``) and writes
one row per run, check and eps: each attack's accuracy, their per-example worst and ours
with exact 95 % intervals, the union, the exact McNemar test and the verdict the
checking script computed (never typed here). ``--doc`` replaces what lies between
``<!-- NAME -->`` and ``<!-- /NAME -->`` (``--marker``) with the table::

    python scripts/crosscheck_table.py --inputs=RUNS/crosscheck,RUNS/anchor \\
        --doc=docs/CROSSCHECK.md --marker=cascade-crosscheck
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
from typing import Any, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ci(c: dict[str, Any]) -> str:
    return f"{c['acc_avg']:.3f} [{c['ci95_avg'][0]:.3f}, {c['ci95_avg'][1]:.3f}]"


def checker(result: dict[str, Any]) -> str:
    """Which script wrote ``result``: "torchattacks" or "SA-PGD"."""
    return "SA-PGD" if result.get("settings", {}).get("attack") == "sapgd" else "torchattacks"


def rows(results: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Table rows ``| run | check | eps | per attack | theirs | ours | union | McNemar | verdict | s |``."""
    out = []
    for name, _ in sorted(results):
        r = results[name, _]
        for c in r["comparisons"]:
            per = ", ".join(f"{k} {v['acc_avg']:.3f}" for k, v in c["theirs"]["per_attack"].items() if k != "clean")
            m = c.get("mcnemar")
            mc = f"{m['b']}, {m['c']}, {m['p_value']:.2g}" if m else "n/a"
            union = f"{c['union']['acc_avg']:.3f}" if c.get("union") else "n/a"
            out.append(f"| {name} | {checker(r)} | {c['eps_255']:.3g}/255 | {per} | {_ci(c['theirs']['worst'])} "
                       f"| {_ci(c['ours'])} | {union} | {mc} | {c['verdict']} | {r['seconds']:.0f} |")
    return out


def table(results: dict[tuple[str, str], dict[str, Any]]) -> str:
    head = ["| run | check | eps | their attacks (acc) | their worst | ours (worst case) | union "
            "| McNemar b, c, p | verdict | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(head + rows(results))


def load(folders: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(RUN, check): result}`` of every JSON in ``folders``."""
    out = {}
    for d in folders:
        for f in sorted(glob.glob(os.path.join(d, "*.json"))):
            with open(f) as fh:
                r = json.load(fh)
            if "comparisons" in r:
                out[os.path.basename(f)[:-5], checker(r)] = r
    return out


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", required=True, help="comma-separated folders of the checks' JSON files")
    p.add_argument("--doc", default=None, help="Markdown file whose marked block is replaced")
    p.add_argument("--marker", default="cascade-crosscheck", help="NAME of <!-- NAME --> ... <!-- /NAME -->")
    a = p.parse_args(argv)
    results = load([s for s in a.inputs.split(",") if s])
    if not results:
        sys.exit(f"error: --inputs={a.inputs!r}: no check results (JSON with 'comparisons') there")
    text = table(results)
    if a.doc:
        spec = importlib.util.spec_from_file_location("controlled", os.path.join(ROOT, "scripts", "controlled.py"))
        controlled = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(controlled)
        with open(a.doc) as f:
            doc = f.read()
        with open(a.doc, "w") as f:
            f.write(controlled.fill_markers(doc, {a.marker: text}))
    print(text)
    return text


if __name__ == "__main__":
    main()
