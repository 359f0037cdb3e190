r"""The claims ledger: every pre-registered claim of ``configs/claims.py`` tested on the
runs of a sweep by the seed-level statistics of ``rsc_jax/stats.py`` (used by
scripts/controlled.py and scripts/results.py).

Exact intervals: an accuracy that is a count (k of n examples correct) gets the 95 %
Clopper-Pearson interval (``metrics.binomial_interval``); over seeds, ``pooled`` sums k
and n (a description of the runs, not a test).

The ledger (``ledger``): for each claim and data set, runs A and B judged on the same
test images are compared on the claim's pre-declared metric over the seeds both have:
the per-image correctness (``correct_avg`` of ``robustness.json``, or certified-and-
correct) of every seed forms ``[S, N]`` arrays, and ``stats.compare`` gives the
image-clustered sign-flip test, the hierarchical bootstrap interval of the accuracy
difference, TOST for ``=`` claims and each seed's own difference. Holm's correction runs
over the claims of one family on one data set (``stats.decide_family``), then
``stats.decide``'s rules give the verdict ("holds", "does not hold", "alike", "not
shown either way"). A claim whose runs, metric or per-image results are missing is
"not run", with the reason, never a guess from mean accuracies.

``paired_test`` and ``decide`` are the earlier pooled McNemar test (seeds concatenated
as if independent) and its rules, kept for scripts/ersct_study.py; no claim of the
ledger uses them.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from rsc_jax import config, metrics, stats, sweep  # noqa: E402

ALPHA = 0.05
HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
NO_PER_EXAMPLE = "inconclusive (no per-example results; re-run the sweep)"
SEEDS_DISAGREE = "the seeds disagree"      # in the reason of a pooled "holds" that a seed contradicts
Entry = dict[str, Any]          # {"k": int, "n": int, "correct": bool array or None, "attacks": list or None}


metric_key = stats.metric_key     # the column name of a robustness.json row (clean_attacked, apgd-ce@32, ...)


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
    test split) and, from robustness.json, every row and worst case (``worst@E``; over the
    attacks every model runs, ``worst_common@E``, where the report has it) on the M-averaged
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
        for w in rob.get("worst_case_common", []):       # over the attacks every model runs (issue 27)
            out[f"worst_common@{w['eps_255']:g}"] = entry(w["acc_avg"], n, w.get("correct_avg"), w.get("attacks"))
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




# --------------------------------------------------------------------------- the ledger

CLAIMS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "claims.py")
NOT_RUN = stats.NOT_RUN


def load_claims(path: str = CLAIMS_FILE, families: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """``get_claims()`` of the claims file (the claims of ``families`` only, if given),
    checked: unique ids, direction ``>`` or ``=``, a metric per data set, composites
    naming known ids. ValueError naming the claim and field otherwise."""
    claims = config.call_file(path, "get_claims")
    ids = [c["id"] for c in claims]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: claim ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
    for c in claims:
        if c["direction"] not in (">", "="):
            raise ValueError(f"{path}: claim {c['id']}: direction={c['direction']!r} is not allowed; use '>' or '='")
        if c["all_of"]:
            unknown = [i for i in c["all_of"] if i not in ids]
            if unknown:
                raise ValueError(f"{path}: claim {c['id']}: all_of names unknown ids {unknown}")
        elif c["test"] is not None and set(c["metric"]) != set(c["datasets"]):
            raise ValueError(f"{path}: claim {c['id']}: metric must name one column per data set "
                             f"{list(c['datasets'])}; got {sorted(c['metric'])}")
    return [c for c in claims if families is None or c["family"] in families]


def cells(a: dict[int, dict[str, Entry]], b: dict[int, dict[str, Entry]], metric: str
          ) -> tuple[np.ndarray | None, np.ndarray | None, list[int], str | None, str]:
    """``(A [S, N], B [S, N], seeds, column, why-not)``: the per-image correctness of both
    runs on ``metric`` over the seeds both have; arrays None with the reason when they
    cannot be formed. ValueError when the seeds were judged on different image counts."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None, None, [], None, "the two runs share no seed"
    key = resolve_metric(metric, {s: a[s] for s in seeds}, {s: b[s] for s in seeds})
    if key is None:
        return None, None, seeds, None, f"{metric} is missing on some seed"
    ea, eb = [a[s][key] for s in seeds], [b[s][key] for s in seeds]
    if any(e["correct"] is None for e in ea + eb):
        return None, None, seeds, key, "no per-image results (correct_avg) kept for some seed; re-run pending"
    ns = {e["n"] for e in ea + eb}
    if len(ns) != 1:
        raise ValueError(f"{key}: runs judged on different numbers of test images ({sorted(ns)}); "
                         "they cannot be paired")
    return np.stack([e["correct"] for e in ea]), np.stack([e["correct"] for e in eb]), seeds, key, ""


def _compose(parts: list[dict[str, Any]]) -> tuple[str, str]:
    """The verdict of a composite claim from its parts' verdicts (rules: configs/claims.py)."""
    v = {p["id"]: p["verdict"] for p in parts}
    if not parts or any(x == NOT_RUN for x in v.values()):
        return NOT_RUN, "parts not run: " + ", ".join(i for i, x in v.items() if x == NOT_RUN)
    if all(x == stats.ALIKE for x in v.values()):
        return stats.HOLDS, "every part is alike: " + ", ".join(v)
    if any(x == stats.FAILS for x in v.values()):
        return stats.FAILS, "shown not alike: " + ", ".join(i for i, x in v.items() if x == stats.FAILS)
    return stats.UNSHOWN, "; ".join(f"{i} {x}" for i, x in v.items())


def ledger(datasets: dict[str, dict[str, Any]], claims: list[dict[str, Any]], *,
           n_resamples: int = stats.N_RESAMPLES, seed: int = 0,
           absent: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per claim and data set of ``claims`` (``load_claims``).

    Args:
      datasets: name -> ``{"runs": load_runs(...)-like {run: {seed: {column: Entry}}},
        "meta": {run: {coding, sigma, T, spiking}} (for ``@min`` etc.; may be empty),
        "matched": Poisson-matched sigma}``.
      n_resamples, seed: of the bootstrap and, where used, the Monte-Carlo test.
      absent: data set -> why its runs are not in ``datasets`` (the "not run" reason).

    Returns:
      rows ``{"id", "text", "family", "dataset", "a", "b", "run_a", "run_b", "metric",
      "direction", "margin", "seeds", "result" (``stats.compare`` or None), "verdict",
      "reason", "p_adjusted", "family_size"}``, in the claims' order.
    """
    rows = []
    for cl in claims:
        if cl["all_of"]:
            continue
        for d in cl["datasets"]:
            row = {k: cl[k] for k in ("id", "text", "family", "a", "b", "direction", "margin")}
            row.update(dataset=d, run_a=None, run_b=None, metric=cl["metric"].get(d), seeds=[], result=None,
                       verdict=NOT_RUN, reason="", p_adjusted=None, family_size=None)
            ds = datasets.get(d)
            if cl["test"] is None:
                row["reason"] = cl["note"] or "no pre-registered per-image test"
            elif ds is None:
                row["reason"] = (absent or {}).get(d) or f"no {d} runs collected (re-run pending)"
            else:
                meta = ds.get("meta") or {r: {} for r in ds["runs"]}
                ra, rb = (pick_run(s, {**{r: {} for r in ds["runs"]}, **meta}, ds.get("matched", float("nan")))
                          for s in (cl["a"], cl["b"]))
                row.update(run_a=ra, run_b=rb)
                missing = [s for s, r in ((cl["a"], ra), (cl["b"], rb)) if r is None or r not in ds["runs"]]
                if missing:
                    row["reason"] = f"run {', '.join(missing)} has not run on {d}"
                else:
                    A, B, seeds, key, why = cells(ds["runs"][ra], ds["runs"][rb], row["metric"])
                    row.update(seeds=seeds, metric=key or row["metric"], reason=why)
                    if A is not None:
                        row["result"] = stats.compare(A, B, direction=cl["direction"], margin=cl["margin"],
                                                      seeds=seeds, n_resamples=n_resamples, seed=seed)
            rows.append(row)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["family"], r["dataset"]), []).append(i)
    for idx in groups.values():
        for i, dec in zip(idx, stats.decide_family([rows[i]["result"] for i in idx])):
            if rows[i]["result"] is not None:
                rows[i].update(verdict=dec["verdict"], reason=dec["reason"], p_adjusted=dec["p_adjusted"])
            rows[i]["family_size"] = dec["family_size"]
    out = []
    for cl in claims:
        if not cl["all_of"]:
            out += [r for r in rows if r["id"] == cl["id"]]
            continue
        for d in cl["datasets"]:
            parts = [r for r in rows if r["id"] in cl["all_of"] and r["dataset"] == d]
            v, why = _compose(parts)
            out.append({"id": cl["id"], "text": cl["text"], "family": cl["family"], "dataset": d, "a": "-", "b": "-",
                        "run_a": None, "run_b": None, "metric": None, "direction": cl["direction"],
                        "margin": cl["margin"], "seeds": [], "result": None, "verdict": v, "reason": why,
                        "p_adjusted": None, "family_size": None, "all_of": list(cl["all_of"])})
    return out


def fmt_diff(r: dict[str, Any] | None) -> str:
    """``+0.123 [+0.080, +0.160]``: the accuracy difference A - B and its bootstrap 95 % interval."""
    if r is None:
        return "-"
    return f"{r['diff']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"


def fmt_seeds(r: dict[str, Any] | None) -> str:
    """Each seed's own difference A - B with McNemar b:c, ``s0 +0.05 (20:2)``."""
    if r is None:
        return "-"
    return "; ".join(f"s{s['seed']} {s['diff']:+.3f} ({s['b']}:{s['c']})" for s in r["per_seed"])


def fmt_p(row: dict[str, Any]) -> str:
    """The family's p-values of a row, raw -> Holm-adjusted: the clustered test's for
    ``>``; TOST's and the larger-difference test's for ``=``."""
    r = row["result"]
    if r is None:
        return "-"
    raw = stats.family_pvalues(r)
    names = ["TOST", "differ"] if r["direction"] == "=" else ["test"]
    return "; ".join(f"{n} {p:.2g} -> {q:.2g}" for n, p, q in zip(names, raw, row["p_adjusted"] or raw))


def ledger_lines(rows: list[dict[str, Any]], title: str = "## Verdicts: the claims ledger") -> list[str]:
    """Markdown: the ledger's rules and one table row per claim and data set."""
    lines = [f"{title}\n",
             "Claims pre-registered in `configs/claims.py`; verdicts by the rules of `rsc_jax/stats.py`, "
             "generated by the code (`scripts/verdicts.py ledger`). A vs B on the same test images and "
             "training seeds: difference of accuracy (A - B) with its hierarchical-bootstrap 95 % interval "
             f"(seeds, then images; {stats.N_RESAMPLES:,} draws); p of the image-clustered sign-flip test "
             "(`>` claims), of TOST within the margin and of the test that the difference exceeds it (`=` "
             "claims, on the bootstrap draws) -> Holm-adjusted over the claims of its family on its data set. "
             "`>` holds only if the adjusted test rejects with A ahead and no seed's own difference is "
             "negative; `=` is alike only if TOST rejects, does not hold only if the difference is shown to "
             "exceed the margin; otherwise \"not shown either way\". Not run: the reason is given.\n",
             "| id | data set | A vs B (metric) | seeds x images | acc A | acc B | A - B [95 %] | p -> Holm | "
             "per seed A - B (b:c) | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["result"]
        what = (f"{r['a']} {r['direction']} {r['b']}" if not r.get("all_of") else "all of " + ", ".join(r["all_of"]))
        what += f" ({r['metric']})" if r["metric"] else ""
        if r["direction"] == "=" and not r.get("all_of"):
            what += f", margin {r['margin']:g}"
        size = f"{res['n_seeds']} x {res['n_images']}" if res else "-"
        acc = (f"{res['acc_a']:.3f} | {res['acc_b']:.3f}" if res else "- | -")
        lines.append(f"| {r['id']} | {r['dataset']} | {what} | {size} | {acc} | {fmt_diff(res)} | {fmt_p(r)} | "
                     f"{fmt_seeds(res)} | **{r['verdict']}**: {r['reason']} |")
    return lines + [""]
