r"""The statistics behind the verdicts of docs/RESULTS.md (used by scripts/results.py).

Exact intervals: an accuracy that is a count (k of n examples correct) gets the 95 %
Clopper-Pearson interval (``metrics.binomial_interval``); over seeds, the counts are
pooled (k and n summed over the seeds) and the interval is that of the pooled count.

Paired tests: two runs of a sweep judged on the same test images (same seed, same
``attack.num_examples``) are compared example by example with the exact McNemar test
(McNemar, 1947; ``metrics.mcnemar_exact``): with b = #(A right, B wrong) and
c = #(A wrong, B right) over the paired examples, under H0 (equal accuracy)
b ~ Bin(b + c, 1/2), and the two-sided p-value is ``binomtest(b, b + c, 0.5)``'s. The
pairs are read from ``correct_avg`` (correctness of the M-averaged logits, one character
per test image) of the same attack row or worst case of ``robustness.json``; over seeds,
the pairs of every seed both runs have are pooled into one test (independently trained
models per seed, the same images each seed), and each seed is also tested alone
(``per_seed``): the pooled test sees the test images' noise, not how much the comparison
changes from one training seed to the next.

Verdict rules (``decide``), on the data sets where both runs of a comparison ran:

- a claim that A is more accurate than B (direction ``>``) *holds* only if the test
  rejects (p < 0.05) with b > c on every such data set and no seed's own test rejects
  with b < c; it *does not hold* if the test rejects with b < c on some data set;
  otherwise it is *inconclusive* (also when the seeds disagree);
- a claim that A and B are alike (direction ``=``) *does not hold* if the test rejects
  on some data set, and is otherwise *inconclusive* (a test that does not reject does not
  show equality);
- where any of the runs compared lacks ``correct_avg`` (reports written before it
  existed), the verdict is "inconclusive (no per-example results; re-run the sweep)",
  never a guess from the mean accuracies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from rsc_jax import metrics, sweep  # noqa: E402

ALPHA = 0.05
HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
NO_PER_EXAMPLE = "inconclusive (no per-example results; re-run the sweep)"
SEEDS_DISAGREE = "the seeds disagree"      # in the reason of a pooled "holds" that a seed contradicts
Entry = dict[str, Any]          # {"k": int, "n": int, "correct": bool array or None, "attacks": list or None}


def metric_key(row: dict[str, Any]) -> str | None:
    """The results.py column of a ``robustness.json`` row (as ``sweep.summarise`` names
    them): ``clean_attacked``, ``<attack>@<eps x 255>`` (l_inf), ``l2@<eps>`` (l_2 PGD
    curve); None for the sanity attack."""
    if row["name"] == "clean":
        return "clean_attacked"
    if row["norm"] == "linf" and row["name"] != "sanity-pgd":
        return f"{row['name']}@{row['eps_255']:g}"
    if row["norm"] == "l2" and row.get("curve") == "pgd-l2":
        return f"l2@{row['eps']:g}"
    return None


def entry(acc: float, n: int, packed: str | None, attacks: list[str] | None = None) -> Entry:
    """One accuracy as a count: k from ``packed`` (a ``metrics.pack_correct`` string)
    where there is one, else round(acc n) (exact: acc was k / n)."""
    correct = None if packed is None else metrics.unpack_correct(packed)
    if correct is not None and correct.size != n:
        raise ValueError(f"correct_avg has {correct.size} examples but n_examples is {n}; the report is corrupt")
    k = int(correct.sum()) if correct is not None else int(round(acc * n))
    return {"k": k, "n": int(n), "correct": correct, "attacks": attacks}


def read_run(workdir: str) -> dict[str, Entry]:
    """Counts per column of one finished run: ``clean`` (evaluation.json, one draw, whole
    test split) and, from robustness.json, every row and worst case on the M-averaged
    logits (``acc_avg``; ``correct`` where the report has ``correct_avg``)."""
    out: dict[str, Entry] = {}
    p = os.path.join(workdir, "evaluation.json")
    if os.path.isfile(p):
        with open(p) as f:
            ev = json.load(f)
        if ev.get("correct") is not None:
            out["clean"] = {"k": int(np.sum(ev["correct"])), "n": len(ev["correct"]), "correct": None, "attacks": None}
    p = os.path.join(workdir, "robustness.json")
    if os.path.isfile(p):
        with open(p) as f:
            rob = json.load(f)
        n = rob["n_examples"]
        for r in rob["results"]:
            key = metric_key(r)
            if key is not None:
                out[key] = entry(r["acc_avg"], r.get("n_examples", n), r.get("correct_avg"))
        for w in rob.get("worst_case", []):
            out[f"worst@{w['eps_255']:g}"] = entry(w["acc_avg"], n, w.get("correct_avg"), w.get("attacks"))
    return out


def load_runs(root: str, sweep_def: dict[str, Any]) -> dict[str, dict[int, dict[str, Entry]]]:
    """``{run: {seed: read_run(...)}}`` for the finished runs of a sweep under ``root``."""
    out: dict[str, dict[int, dict[str, Entry]]] = {}
    for run in sweep_def["runs"]:
        for seed in sweep.seeds_of(sweep_def, run):
            d = os.path.join(root, sweep.run_dir_name(run, seed))
            if os.path.isfile(os.path.join(d, sweep.DONE)):
                out.setdefault(run["name"], {})[seed] = read_run(d)
    return out


def pooled(entries: list[Entry]) -> dict[str, Any]:
    """k and n summed over ``entries`` (seeds), their ratio and its exact 95 % interval."""
    k, n = sum(e["k"] for e in entries), sum(e["n"] for e in entries)
    return {"k": k, "n": n, "acc": k / n, "ci95": list(metrics.binomial_interval(k, n))}


def intervals(runs: dict[str, dict[int, dict[str, Entry]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{run: {column: pooled over the seeds that have it}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, seeds in runs.items():
        cols = sorted({m for e in seeds.values() for m in e})
        out[name] = {m: pooled([e[m] for e in seeds.values() if m in e]) for m in cols}
    return out


def fmt_per_seed(t: dict[str, Any]) -> str:
    """Each seed's own test, ``s0 15:12 (0.7); s1 37:7 (6e-06)`` (b:c and p), or "-"
    for a single seed."""
    ps = t.get("per_seed") or []
    return "; ".join(f"s{s['seed']} {s['b']}:{s['c']} ({s['p_value']:.2g})" for s in ps) if len(ps) > 1 else "-"


def fmt_ci(p: dict[str, Any] | None) -> str:
    return "-" if p is None else f"{p['acc']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]"


def interval_table(ints: dict[str, dict[str, dict[str, Any]]], columns: tuple[str, ...]) -> list[str]:
    """Markdown: per run, the M-averaged accuracy of each column with its interval."""
    cols = [c for c in columns if c != "clean" and any(c in v for v in ints.values())]
    if not cols:
        return []
    lines = ["| run | examples x seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, v in ints.items():
        n = next((v[c]["n"] for c in cols if c in v), None)
        lines.append(f"| {name} | {n if n is not None else '-'} | " + " | ".join(fmt_ci(v.get(c)) for c in cols) + " |")
    return lines


# --------------------------------------------------------------------------- paired tests


def resolve_metric(metric: str, a: dict[int, dict[str, Entry]], b: dict[int, dict[str, Entry]]) -> str | None:
    """``worst`` -> ``worst@E`` at the largest E every seed of both runs has (the budget
    results.py reads the worst case at); any other column as is (None if absent)."""
    have = [set(e) for e in (*a.values(), *b.values())]
    keys = set.intersection(*have) if have else set()
    if metric == "worst":
        worst = [k for k in keys if k.startswith("worst@")]
        return max(worst, key=lambda k: float(k.split("@")[1])) if worst else None
    return metric if metric in keys else None


def paired_test(a: dict[int, dict[str, Entry]], b: dict[int, dict[str, Entry]], metric: str) -> dict[str, Any] | None:
    """The exact McNemar test of runs A and B on ``metric`` (a column, or ``worst``),
    pooled over the seeds both ran; None when they share no seed or column. Without
    ``correct`` on some seed, ``missing`` is True and b, c, p_value are None."""
    seeds = sorted(set(a) & set(b))
    key = resolve_metric(metric, {s: a[s] for s in seeds}, {s: b[s] for s in seeds}) if seeds else None
    if key is None:
        return None
    ea, eb = [a[s][key] for s in seeds], [b[s][key] for s in seeds]
    pa, pb = pooled(ea), pooled(eb)
    out = {"metric": key, "seeds": seeds, "n": pa["n"], "acc_a": pa["acc"], "ci95_a": pa["ci95"],
           "acc_b": pb["acc"], "ci95_b": pb["ci95"], "b": None, "c": None, "p_value": None, "missing": False,
           "note": ""}
    if key.startswith("worst@") and any(x["attacks"] != y["attacks"] for x, y in zip(ea, eb)):
        out["note"] = "worst cases over different attack sets"
    if any(e["correct"] is None for e in ea + eb):
        return dict(out, missing=True)
    if pa["n"] != pb["n"] or any(x["n"] != y["n"] for x, y in zip(ea, eb)):
        raise ValueError(f"{key}: runs judged on different numbers of test images per seed "
                         f"({[x['n'] for x in ea]} vs {[y['n'] for y in eb]}); they cannot be paired")
    t = metrics.mcnemar_exact(np.concatenate([x["correct"] for x in ea]), np.concatenate([y["correct"] for y in eb]))
    per_seed = [{"seed": s, **{k: v for k, v in metrics.mcnemar_exact(x["correct"], y["correct"]).items()
                               if k in ("b", "c", "p_value")}} for s, x, y in zip(seeds, ea, eb)]
    return dict(out, b=t["b"], c=t["c"], p_value=t["p_value"], per_seed=per_seed)


def decide(tests: list[dict[str, Any]], direction: str) -> tuple[str, str]:
    """The verdict of one claim from its per-data-set tests (rules: module docstring).

    Args:
      tests: ``paired_test`` results, one per data set where both runs ran.
      direction: ``>`` (A more accurate than B) or ``=`` (A and B alike).

    Returns:
      ``(verdict, reason)``; verdict one of "holds", "does not hold", "inconclusive" or
      "inconclusive (no per-example results; re-run the sweep)".
    """
    if direction not in (">", "="):
        raise ValueError(f"direction={direction!r} is not allowed; use '>' (A better than B) or '=' (alike)")
    if not tests:
        return OPEN, "not run on any data set"
    if any(t["missing"] for t in tests):
        return NO_PER_EXAMPLE, "a run's robustness.json has no correct_avg"
    sig = [t["p_value"] < ALPHA for t in tests]
    if direction == "=":
        if any(sig):
            return FAILS, f"the paired test rejects equality (p < {ALPHA}) on some data set"
        return OPEN, "no difference detected; a test that does not reject cannot show equality"
    if any(s and t["b"] < t["c"] for s, t in zip(sig, tests)):
        return FAILS, f"rejects (p < {ALPHA}) in the opposite direction on some data set"
    against = [f"{t.get('dataset', '')} seed {s['seed']}".strip() for t in tests for s in t.get("per_seed") or []
               if len(t["per_seed"]) > 1 and s["p_value"] < ALPHA and s["b"] < s["c"]]
    if all(s and t["b"] > t["c"] for s, t in zip(sig, tests)):
        if against:
            return OPEN, (f"the pooled test rejects in the claimed direction, but {SEEDS_DISAGREE}: "
                          f"{', '.join(against)} alone rejects (p < {ALPHA}) in the opposite direction")
        return HOLDS, f"rejects (p < {ALPHA}) in the claimed direction on every data set"
    return OPEN, f"does not reject (p >= {ALPHA}) on some data set"


@dataclasses.dataclass(frozen=True)
class Claim:
    """A comparison a claim of docs/RESULTS.md rests on: run ``a`` against run ``b`` on
    ``metric`` (a column, or ``worst``: the worst case at the largest budget), in
    ``direction``. A run is a name (``poisson_T4``) or ``<coding>@min``, ``@max`` (the
    smallest, largest sigma of that coding at T = 4 in the data set's sweep) or
    ``@matched`` (the sigma nearest the Poisson-matched sigma)."""
    id: str
    text: str
    a: str
    b: str
    metric: str
    direction: str = ">"


CLAIMS = (
    Claim("1a", "claim 1: Poisson SNN more robust than the direct SNN", "poisson_T4", "direct_T4", "worst"),
    Claim("1b", "claim 1: Poisson SNN more robust than the ANN twin", "poisson_T4", "ann", "worst"),
    Claim("2a", "claim 2: RSC-II at the Poisson-matched sigma as robust as Poisson", "rsc2@matched", "poisson_T4",
          "worst", "="),
    Claim("2b", "claim 2: RSC-II at the Poisson-matched sigma as accurate (clean) as Poisson", "rsc2@matched",
          "poisson_T4", "clean_attacked", "="),
    Claim("3a", "claim 3: RSC-I at the smallest sigma more accurate (clean) than at the largest", "rsc1@min",
          "rsc1@max", "clean_attacked"),
    Claim("3b", "claim 3: RSC-I at the largest sigma more robust than at the smallest", "rsc1@max", "rsc1@min",
          "worst"),
    Claim("3c", "claim 3: RSC-II at the smallest sigma more accurate (clean) than at the largest", "rsc2@min",
          "rsc2@max", "clean_attacked"),
    Claim("3d", "claim 3: RSC-II at the largest sigma more robust than at the smallest", "rsc2@max", "rsc2@min",
          "worst"),
    Claim("4a", "claim 4: RSC-II at the Poisson-matched sigma more robust than the ANN twin", "rsc2@matched", "ann",
          "worst"),
    Claim("4b", "claim 4: RSC-II at sigma 0.2 more robust than the ANN twin", "rsc2_sigma0.2_T4", "ann", "worst"),
    Claim("4c", "claim 4: RSC-I at sigma 0.2 more robust than the ANN twin", "rsc1_sigma0.2_T4", "ann", "worst"),
    Claim("h1", "headline: RSC-I at sigma 0.2 more robust than Poisson", "rsc1_sigma0.2_T4", "poisson_T4", "worst"),
    Claim("h2", "headline: RSC-II at sigma 0.2 more robust than the direct SNN", "rsc2_sigma0.2_T4", "direct_T4",
          "worst"),
)


def pick_run(spec: str, meta: dict[str, dict[str, Any]], matched: float) -> str | None:
    """The run a ``Claim`` names in one data set (``meta``: run -> coding, sigma, T, spiking)."""
    if "@" not in spec:
        return spec if spec in meta else None
    coding, which = spec.split("@")
    grid = sorted((m["sigma"], n) for n, m in meta.items()
                  if m.get("coding") == coding and m.get("T") == 4 and m.get("spiking"))
    if not grid:
        return None
    if which == "matched":
        return min(grid, key=lambda t: abs(t[0] - matched))[1]
    return {"min": grid[0], "max": grid[-1]}[which][1]


def verdicts(datasets: dict[str, dict[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> list[dict[str, Any]]:
    """One verdict per claim. ``datasets``: name -> ``{"runs": load_runs(...), "meta":
    {run: {coding, sigma, T, spiking}}, "matched": Poisson-matched sigma}``."""
    out = []
    for cl in claims:
        tests = []
        for d, ds in datasets.items():
            a, b = (pick_run(s, ds["meta"], ds["matched"]) for s in (cl.a, cl.b))
            if a is None or b is None or a == b or a not in ds["runs"] or b not in ds["runs"]:
                continue
            t = paired_test(ds["runs"][a], ds["runs"][b], cl.metric)
            if t is not None:
                tests.append({"dataset": d, "run_a": a, "run_b": b, **t})
        v, why = decide(tests, cl.direction)
        out.append({"id": cl.id, "claim": cl.text, "a": cl.a, "b": cl.b, "metric": cl.metric,
                    "direction": cl.direction, "verdict": v, "reason": why, "tests": tests})
    return out


def verdict_lines(vs: list[dict[str, Any]]) -> list[str]:
    """Markdown: each claim's verdict and the test behind it on every data set."""
    lines = ["## Verdicts: paired exact McNemar tests\n",
             "Each claim compares run A with run B example by example on the same test images (same seed; "
             "seeds pooled), on the accuracy of the logits averaged over M draws. b = #(A right, B wrong), "
             "c = #(A wrong, B right); p: exact two-sided McNemar test (binomial test of b among b + c "
             "at 1/2). Accuracies: pooled over the paired seeds, 95 % Clopper-Pearson interval. Rules: "
             f"`A > B` holds only if p < {ALPHA} with b > c on every data set where both ran, does not "
             f"hold if p < {ALPHA} with b < c on some data set, else inconclusive; `A = B` does not hold if "
             f"p < {ALPHA} on some data set, else inconclusive. Without per-example results (`correct_avg`) "
             "a verdict is inconclusive. QTE and E-RSCT claims are not per-example accuracies and get no "
             "paired test.\n"]
    for v in vs:
        lines += [f"### {v['id']}. {v['claim']} (`{v['a']} {v['direction']} {v['b']}`, {v['metric']}): "
                  f"**{v['verdict']}**\n", f"{v['reason']}.\n"]
        if not v["tests"]:
            continue
        lines += ["| data set | A | B | metric | seeds | pairs | acc A [95 %] | acc B [95 %] | b | c | p | "
                  "per seed b:c (p) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for t in v["tests"]:
            ca = {"acc": t["acc_a"], "ci95": t["ci95_a"]}
            cb = {"acc": t["acc_b"], "ci95": t["ci95_b"]}
            stat = ("- | - | no per-example results | -" if t["missing"] else
                    f"{t['b']} | {t['c']} | {t['p_value']:.3g} | {fmt_per_seed(t)}")
            lines.append(f"| {t['dataset']} | {t['run_a']} | {t['run_b']} | {t['metric']} | "
                         f"{','.join(map(str, t['seeds']))} | {t['n']} | {fmt_ci(ca)} | {fmt_ci(cb)} | {stat}"
                         + (f" ({t['note']})" if t["note"] else "") + " |")
        lines.append("")
    return lines
