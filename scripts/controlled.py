r"""The controlled comparisons (the ``configs/sweeps/*_controlled.py`` sweeps) and the
claims ledger into docs/results/controlled.md and controlled.json, and the blocks of
docs/RESULTS.md and README.md generated from that JSON.

    python scripts/controlled.py --sweeps=runs/sweeps --out=docs/results \
        --results_md=docs/RESULTS.md --readme=README.md
    python scripts/controlled.py --from_json=docs/results/controlled.json \
        --out=docs/results --results_md=docs/RESULTS.md --readme=README.md   # no runs needed

For every controlled sweep with finished runs under ``--sweeps`` (``SWEEPS``), per run
and pooled over its seeds (``verdicts.pooled``: exact 95 % Clopper-Pearson intervals of
the summed counts): accuracy on the attacked test images (M-averaged logits), every
attack at the strong eps and the per-example worst case over all of them, certified
accuracy at a few radii (an example counts when it is correct and its certified radius
reaches r, from ``certify.jsonl``), whether the attack-convergence checks passed, and
each run's noise on the time average of what its network sees (``noise_rows``). The
JSON keeps, per data set, run and seed, the per-image correctness strings of the
columns the claims use (``per_image``), so that the ledger can be recomputed from the
committed file (``--from_json``) after the runs are gone. Then the ledger: every claim of
``configs/claims.py`` (families ``FAMILIES``) by ``verdicts.ledger`` (seed-level
statistics of ``rsc_jax/stats.py``, Holm per family and data set).

``--results_md`` rewrites only what lies between the markers ``<!-- NAME -->`` and
``<!-- /NAME -->`` of ``controlled-table``, ``controlled-noise`` and
``controlled-verdicts``; ``--readme`` that of ``claims-summary`` (the README's summary
sentences). A missing marker is an error and the file is left as it was. No verdict word
of these blocks is typed by hand: they come from the ledger rows of the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))          # scripts/verdicts.py, recheck.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import recheck as rc  # noqa: E402
import verdicts as vd  # noqa: E402
from rsc_jax import coding, config, metrics, report, stats, sweep  # noqa: E402

NOT_RUN = stats.NOT_RUN

SWEEPS = {"digits": "digits_controlled", "mnist": "mnist_controlled", "cifar10": "cifar10_controlled"}
CERT_RADII = (0.1, 0.25, 0.5)
FAMILIES = ("controlled", "matched", "certify", "ersct")     # configs/claims.py families of this ledger
JSON_NAME = "controlled.json"


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
          "ann_gauss_sigma0.2": "ANN, Gaussian noise 0.2, smoothed", "ann_poisson": "ANN on Poisson coding (1 frame)",
          "ann_poisson_mean4": "ANN on the mean of 4 Poisson frames"}
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
    return {"runs": runs, "facts": facts}


# --------------------------------------------------------------------------- per-image strings in the JSON


def claim_columns(claims: list[dict[str, Any]], dataset: str) -> set[str]:
    """The columns the claims test on ``dataset`` (kept per image in the JSON)."""
    return {c["metric"][dataset] for c in claims if not c["all_of"] and dataset in c["metric"]}


def per_image(runs: dict[str, dict[int, dict[str, vd.Entry]]], cols: set[str]) -> dict[str, dict[str, dict[str, str]]]:
    """``{run: {seed: {column: "0110..."}}}`` (``metrics.pack_correct``) for ``cols`` where
    the run has per-image results; ``worst`` resolves to the largest worst case."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for run, seeds in runs.items():
        for seed, entries in seeds.items():
            for col in cols:
                key = vd.resolve_metric(col, {seed: entries}, {seed: entries}) if col == "worst" else col
                e = entries.get(key) if key else None
                if e is not None and e["correct"] is not None:
                    out.setdefault(run, {}).setdefault(str(seed), {})[key] = metrics.pack_correct(e["correct"])
    return out


def runs_from_json(strings: dict[str, dict[str, dict[str, str]]]) -> dict[str, dict[int, dict[str, vd.Entry]]]:
    """``per_image`` back into ``verdicts.load_runs``'s form."""
    out: dict[str, dict[int, dict[str, vd.Entry]]] = {}
    for run, seeds in strings.items():
        for seed, cols in seeds.items():
            for col, packed in cols.items():
                c = metrics.unpack_correct(packed)
                out.setdefault(run, {}).setdefault(int(seed), {})[col] = {"k": int(c.sum()), "n": int(c.size),
                                                                           "correct": c, "attacks": None}
    return out


# --------------------------------------------------------------------------- noise on the time average


def time_average_noise(method: str, sigma: float, T: int, spiking: bool, poisson_rms: float | None
                       ) -> tuple[int, str, float | None]:
    """(frames the network averages, the noise s.d. of that average as a formula, its value).

    An SNN averages its logits over T steps; what matters for the comparison with an ANN
    is the noise of the coded input's time average (``coding.moments``' mean_var):
    direct 0, Poisson x(1-x)/T (per pixel; value: the root mean over training pixels,
    ``poisson_rms`` = sqrt(mean x(1-x)), divided by sqrt(T)), RSC-I sigma^2 (one draw
    shared by all steps), RSC-II sigma^2/T. An ANN sees one frame (T = 1), or the mean of
    T Poisson frames (``coding.Coding.ann_mean``)."""
    frames = T if spiking or (coding.get(method).ann_mean and T > 1) else 1
    if method == "direct":
        return frames, "0", 0.0
    if method == "poisson":
        v = None if poisson_rms is None else poisson_rms / math.sqrt(frames)
        return frames, f"sqrt(x(1-x)/{frames})", v
    if method == "rsc1":
        return frames, "sigma", float(sigma)
    return frames, f"sigma/sqrt({frames})", float(sigma) / math.sqrt(frames)


def noise_rows(sweep_def: dict[str, Any], poisson_rms: float | None) -> list[dict[str, Any]]:
    """One row per run of the sweep: coding, sigma, T, spiking, frames averaged, the
    noise s.d. on the time average (formula, value)."""
    rows = []
    for run in sweep_def["runs"]:
        cfg = sweep.run_config(sweep_def, run, seed=0)
        m, sg, T, sp = cfg.coding.method, float(cfg.coding.sigma), int(cfg.coding.T), bool(cfg.model.spiking)
        frames, formula, value = time_average_noise(m, sg, T, sp, poisson_rms)
        rows.append({"run": run["name"], "coding": m, "sigma": sg if coding.get(m).gaussian else None, "T": T,
                     "spiking": sp, "frames": frames, "formula": formula, "sd": value})
    return rows


def noise_pairs(noise: list[dict[str, Any]], pairs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Each control (an ANN with a noisy coding) next to the SNN a claim compares it with
    (``pairs``: (claim id, A, B)): their time-averaged noise s.d., the variance ratio and
    whether they match (s.d. within 1 %)."""
    by = {r["run"]: r for r in noise}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for cid, a, b in pairs:
        if a not in by or b not in by:
            continue
        snn, ann = by[a], by[b]
        if not snn["spiking"] or ann["spiking"] or ann["coding"] == "direct":
            continue
        if (a, b) in out:
            out[(a, b)]["claims"].append(cid)
            continue
        ok = (snn["sd"] is not None and ann["sd"] is not None
              and abs(snn["sd"] - ann["sd"]) <= 0.01 * max(snn["sd"], ann["sd"]))
        ratio = (ann["sd"] / snn["sd"]) ** 2 if snn["sd"] and ann["sd"] is not None else None
        out[(a, b)] = {"claims": [cid], "snn": a, "control": b, "snn_noise": snn, "control_noise": ann,
                       "variance_ratio": ratio, "matched": bool(ok)}
    return list(out.values())


def poisson_rms_of(dataset: str) -> float | None:
    """sqrt(mean x(1-x)) over the training pixels of ``dataset`` (scripts/results.py
    ``matched_sigma``); None where the data are not on this machine."""
    import results
    try:
        return float(results.matched_sigma(results.dataset_images(dataset)))
    except (OSError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"{dataset}: Poisson noise left as a formula ({type(e).__name__}: {e})", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- markdown


def columns(ints: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The table's columns: clean (attacked images), every attack any run ran at the
    largest strong eps and the worst case there, then certified accuracy."""
    keys = sorted({k for v in ints.values() for k in v})
    worst = sorted((k for k in keys if k.startswith("worst@")), key=lambda k: float(k.split("@")[1]))
    e = worst[-1].split("@")[1] if worst else None
    attacks = [k for k in keys if e and k.endswith(f"@{e}") and not k.startswith("worst@")]
    cols = ["clean_attacked"] + (attacks + [f"worst@{e}"] if e else [])
    return tuple(cols + [f"cert@{r:g}" for r in CERT_RADII if f"cert@{r:g}" in keys])


def _sd(r: dict[str, Any]) -> str:
    return r["formula"] + (f" = {r['sd']:.3f}" if r["sd"] is not None and r["formula"] not in ("0", "sigma") else
                           f" = {r['sd']:g}" if r["sd"] is not None and r["formula"] == "sigma" else "")


def noise_lines(pairs: list[dict[str, Any]]) -> list[str]:
    """Markdown: each control's noise on the time average next to its SNN's."""
    lines = ["| claims | SNN | its noise on the time average (s.d.) | control | the control's (frames averaged) | "
             "variance ratio control / SNN | matched |", "|---|---|---|---|---|---|---|"]
    for p in pairs:
        s, c = p["snn_noise"], p["control_noise"]
        ratio = "-" if p["variance_ratio"] is None else f"{p['variance_ratio']:.2f}"
        lines.append(f"| {', '.join(p['claims'])} | {p['snn']} (T = {s['T']}) | {_sd(s)} | {p['control']} | "
                     f"{_sd(c)} ({c['frames']}) | {ratio} | {'yes' if p['matched'] else '**no**'} |")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """controlled.md, from the JSON summary alone."""
    lines = ["# Controlled comparisons\n",
             "Generated by `python scripts/controlled.py` from the `configs/sweeps/*_controlled.py` sweeps "
             "(or from controlled.json with `--from_json`). Accuracies of the logits averaged over M judge draws, "
             "pooled over seeds, with exact 95 % intervals (a description of the runs; the tests are the ledger's, "
             "below); `worst` is per example the worst over every l_inf attack at that eps; `cert@r`: "
             "correct and certified at l2 radius r (not applicable to direct, Poisson and the clean ANN). "
             "Huge-budget checks (PGD at 64/255) written before 2026-11-30 judged the larger of the averaged and "
             "the single-draw accuracy after one draw per step; `scripts/recheck.py` re-runs them with "
             "today's check (averaged accuracy, EOT-10 on stochastic models): \"rechecked, was\" gives the old one. "
             "`scripts/recheck.py --family=square` re-runs Square with more draws per query (queries x draws); its "
             "column gives the run's worst case before and after taking it in (not in the pooled tables).\n"]
    for d, ints in summary["intervals"].items():
        facts = summary["facts"][d]
        f0 = next(iter(facts.values()))
        lines += [f"## {d}\n",
                  f"Attack preset `{f0['preset']}` ({f0['n_examples']} test images, M = {f0['judge_draws']}; "
                  + ", ".join(f"{k} {v}" for k, v in f0["budget"].items()) + ").\n"]
        lines += vd.interval_table(ints, columns(ints)) + [""]
        lines += ["| run | seeds | convergence checks | huge-budget check (accuracy judged, EOT draws per step) | "
                  "Square re-check | certification (n, alpha, images) | largest certifiable radius |",
                  "|---|---|---|---|---|---|---|"]
        for run, f in facts.items():
            c = f["certify"]
            hb = "; ".join(f"s{s}: {v}" for s, v in sorted(f.get("huge_budget", {}).items()))
            sq = "; ".join(f"s{s}: {v}" for s, v in sorted(f.get("square_recheck", {}).items()) if v != "-")
            seeds = ",".join(sorted(map(str, f.get("huge_budget", {}))))
            lines.append(f"| {run} | {seeds or '-'} | {f['convergence'] or '-'} | "
                         f"{hb or '-'} | {sq or '-'} | "
                         + (f"{c['n']:,}, {c['alpha']:g}, {c['num_examples']}" if c else "-") + " | "
                         + (f"{f['max_certifiable_radius']:.3f}" if f["max_certifiable_radius"] else "-") + " |")
        lines.append("")
        if summary.get("noise_pairs", {}).get(d):
            lines += ["Noise on the time average of what each network sees, control against SNN "
                      f"(`noise_rows`; Poisson: root mean over the training pixels):\n",
                      *noise_lines(summary["noise_pairs"][d]), ""]
    lines += vd.ledger_lines(summary["ledger"])
    sup = summary.get("superseded") or {}
    for d, tests in sup.items():
        lines += [f"### Superseded: the pooled McNemar tests of {d} (seeds concatenated as if independent)\n",
                  "Kept from the earlier controlled.json for the record; no verdict rests on them (the pooled test "
                  "counts the same images once per seed as if independent; see rsc_jax/stats.py).\n",
                  "| id | A vs B (metric) | seeds | acc A | acc B | pooled b:c | pooled p | per seed b:c (p) |",
                  "|---|---|---|---|---|---|---|---|"]
        for cid, t in tests.items():
            lines.append(f"| {cid} | {t['run_a']} vs {t['run_b']} ({t['metric']}) | {','.join(map(str, t['seeds']))} | "
                         f"{t['acc_a']:.3f} | {t['acc_b']:.3f} | {t['b']}:{t['c']} | {t['p_value']:.2g} | "
                         f"{vd.fmt_per_seed(t)} |")
        lines.append("")
    return "\n".join(lines)


def headline_blocks(summary: dict[str, Any], dataset: str) -> dict[str, str]:
    """docs/RESULTS.md's blocks for ``dataset``: the headline table (``HEADLINE`` columns
    at the largest strong eps, every run of ``LABELS`` that ran), the noise table, and the
    ledger (every claim on ``dataset``, then the composites and other data sets)."""
    ints, facts = summary["intervals"][dataset], summary["facts"][dataset]
    cols = columns(ints)
    pick = [(next((c for c in cols if c.startswith(k)), None), h) for k, h in HEADLINE]
    pick = [(c, f"{h} {c.split('@')[1]}/255" if h == "worst" else h) for c, h in pick if c is not None]
    f0 = next(iter(facts.values()))
    table = [f"Accuracy of the {f0['judge_draws'] or 'M'}-draw-averaged logits, exact 95 % interval; pooled over the "
             f"seeds listed ({f0['n_examples'] or '?'} images each; a description, the tests are the ledger's):", "",
             "| run | seeds | " + " | ".join(h for _, h in pick) + " |", "|---|---|" + "---|" * len(pick)]
    worst = next((c for c, _ in pick if c.startswith("worst@")), None)
    strings = summary.get("per_image", {}).get(dataset, {})
    table[-2] += f" {worst.split('@')[0]} per seed |" if worst else ""
    table[-1] += "---|" if worst else ""
    for run, label in LABELS.items():
        if run in ints:
            seeds = ",".join(sorted(map(str, facts.get(run, {}).get("huge_budget", {})))) or "-"
            per = " / ".join(f"{metrics.unpack_correct(v[worst]).mean():.3f}" for _, v in
                             sorted(strings.get(run, {}).items()) if worst in v) if worst else ""
            table.append(f"| {label} | {seeds} | " + " | ".join(vd.fmt_ci(ints[run].get(c)) for c, _ in pick) + " |"
                         + (f" {per or '-'} |" if worst else ""))
    noise = ["Noise on the time average of what each network sees (s.d.; Poisson: root mean over the "
             "training pixels), each noisy ANN control next to the SNN its claims compare it with:", "",
             *noise_lines(summary.get("noise_pairs", {}).get(dataset, []))]
    rows = [r for r in summary["ledger"] if r["dataset"] == dataset] + \
           [r for r in summary["ledger"] if r["dataset"] != dataset and r["family"] in ("certify",)]
    return {"controlled-table": "\n".join(table), "controlled-noise": "\n".join(noise),
            "controlled-verdicts": "\n".join(vd.ledger_lines(rows)[1:]).rstrip()}


def readme_block(summary: dict[str, Any], dataset: str = "digits") -> str:
    """The README's summary sentences, from the ledger rows of the JSON: the claims on
    ``dataset`` grouped by verdict, then the composite claims."""
    rows = [r for r in summary["ledger"] if r["dataset"] == dataset and not r.get("all_of")]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["verdict"], []).append(r)
    parts = []
    for verdict, rs in groups.items():
        if verdict == NOT_RUN:
            for why in dict.fromkeys(r["reason"] for r in rs):
                parts.append(f"{verdict}: " + ", ".join(r["id"] for r in rs if r["reason"] == why) + f" ({why})")
            continue
        parts.append(f"{verdict}: " + ", ".join(f"{r['id']}" + (f" ({vd.fmt_diff(r['result'])})" if r["result"] else "")
                                                 for r in rs))
    ints = summary["intervals"].get(dataset, {})
    worst = next((c for c in columns(ints) if c.startswith("worst@")), None) if ints else None
    means = [f"{label} {ints[run][worst]['acc']:.3f}" for run, label in LABELS.items()
             if worst and worst in ints.get(run, {})]
    comp = [r for r in summary["ledger"] if r.get("all_of") and r["dataset"] == dataset]
    text = (f"Verdicts of the pre-registered claims on {dataset} (`configs/claims.py`; written by "
            f"`scripts/controlled.py` from `docs/results/controlled.json`, rules in `rsc_jax/stats.py`): "
            + "; ".join(parts) + ".")
    for r in comp:
        text += f" \"{r['text'].split(' (')[0]}\" ({r['id']}): **{r['verdict']}** ({r['reason']})."
    if means:
        text += (f" Worst case at {worst.split('@')[1]}/255, pooled over seeds (a description, not a test): "
                 + "; ".join(means) + ".")
    return text


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


def superseded_of(old: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pooled McNemar tests of a controlled.json written before the ledger (its
    ``verdicts``), per data set and claim id: the record of what the docs quoted."""
    out: dict[str, dict[str, Any]] = {}
    for v in old.get("verdicts", []):
        for t in v.get("tests", []):
            if not t.get("missing"):
                out.setdefault(t["dataset"], {})[v["id"]] = {k: t[k] for k in (
                    "run_a", "run_b", "metric", "seeds", "acc_a", "acc_b", "b", "c", "p_value", "per_seed")}
    return out


def summarise(data: dict[str, dict[str, Any]], claims: list[dict[str, Any]], previous: dict[str, Any] | None,
              n_resamples: int) -> dict[str, Any]:
    """The JSON summary: intervals, facts, per-image strings, noise, the ledger."""
    strings = {d: per_image(ds["runs"], claim_columns(claims, d)) for d, ds in data.items()}
    return finish({"intervals": {d: vd.intervals(ds["runs"]) for d, ds in data.items()},
                   "facts": {d: ds["facts"] for d, ds in data.items()}, "per_image": strings,
                   "superseded": (previous or {}).get("superseded") or superseded_of(previous or {})},
                  claims, n_resamples)


def finish(summary: dict[str, Any], claims: list[dict[str, Any]], n_resamples: int) -> dict[str, Any]:
    """Adds the noise tables and the ledger, both from the summary's own content."""
    noise, pairs = {}, {}
    for d in summary["intervals"]:
        sw = config.call_file(os.path.join(config.CONFIG_DIR, "sweeps", f"{SWEEPS[d]}.py"), "get_sweep")
        noise[d] = noise_rows(sw, poisson_rms_of(d))
        cl = [(c["id"], c["a"], c["b"]) for c in claims if not c["all_of"]]
        sup = (summary.get("superseded") or {}).get(d, {})
        old = [(f"{i} (superseded)", t["run_a"], t["run_b"]) for i, t in sup.items()
               if (t["run_a"], t["run_b"]) not in {(a, b) for _, a, b in cl}]
        pairs[d] = noise_pairs(noise[d], cl + old)
    why = {d: "per-image results of each seed not in controlled.json, written before it kept them; re-run pending"
           for d in summary["intervals"] if not summary["per_image"].get(d)}
    datasets = {d: {"runs": runs_from_json(s)} for d, s in summary["per_image"].items() if s}
    rows = vd.ledger(datasets, claims, n_resamples=n_resamples, absent=why)
    return dict(summary, noise=noise, noise_pairs=pairs, ledger=rows, n_resamples=n_resamples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweeps", default="runs/sweeps", help="root of the sweeps' workdirs")
    p.add_argument("--from_json", default="", help="recompute the ledger and docs from this controlled.json "
                   "(per-image strings included) instead of reading runs")
    p.add_argument("--out", default="docs/results", help="folder for controlled.md / controlled.json")
    p.add_argument("--results_md", default="", help="also rewrite the digits blocks of this file (docs/RESULTS.md)")
    p.add_argument("--readme", default="", help="also rewrite the claims-summary block of this file (README.md)")
    p.add_argument("--n_resamples", type=int, default=0, help="bootstrap draws per comparison (default: "
                   f"--from_json's own, else {stats.N_RESAMPLES:,})")
    a = p.parse_args(argv)
    for flag, path in (("--results_md", a.results_md), ("--readme", a.readme), ("--from_json", a.from_json)):
        if path and not os.path.isfile(path):
            print(f"{flag}={path}: no such file", file=sys.stderr)
            return 1
    if a.n_resamples == 1 or a.n_resamples < 0:
        print(f"--n_resamples={a.n_resamples} is not allowed; need >= 2", file=sys.stderr)
        return 1
    claims = vd.load_claims(families=FAMILIES)
    previous = report.read_json(os.path.join(a.out, JSON_NAME))
    if a.from_json:
        old = report.read_json(a.from_json)
        if not old or "intervals" not in old or "facts" not in old:
            print(f"--from_json={a.from_json}: not a controlled.json (needs 'intervals' and 'facts')", file=sys.stderr)
            return 1
        summary = finish({"intervals": old["intervals"], "facts": old["facts"], "per_image": old.get("per_image", {}),
                          "superseded": old.get("superseded") or superseded_of(old)}, claims,
                         a.n_resamples or old.get("n_resamples") or stats.N_RESAMPLES)
    else:
        data = {d: ds for d, name in SWEEPS.items() if (ds := collect(a.sweeps, name)) is not None}
        if not data:
            print(f"no finished runs of {list(SWEEPS.values())} under {a.sweeps}", file=sys.stderr)
            return 1
        summary = summarise(data, claims, previous, a.n_resamples or stats.N_RESAMPLES)
    edits = {}
    for path, blocks in ((a.results_md, lambda: headline_blocks(summary, "digits")),
                         (a.readme, lambda: {"claims-summary": readme_block(summary, "digits")})):
        if not path:
            continue
        try:
            if "digits" not in summary["intervals"]:
                raise ValueError("no digits_controlled runs to write")
            with open(path) as f:
                edits[path] = fill_markers(f.read(), blocks())
        except ValueError as e:
            print(f"{path}: {e}; nothing written", file=sys.stderr)
            return 1
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "controlled.md"), "w") as f:
        f.write(markdown(summary))
    with open(os.path.join(a.out, JSON_NAME), "w") as f:
        json.dump(summary, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    for path, text in edits.items():
        with open(path, "w") as f:
            f.write(text)
    counts: dict[str, int] = {}
    for r in summary["ledger"]:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    print(f"{', '.join(summary['intervals'])} -> {a.out}/controlled.md; ledger: "
          + ", ".join(f"{v} {n}" for v, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
