"""Everything a run writes for people: JSON results, plots and ``report.md``.

The evaluators hand their results here (``write_robustness``, ``write_certification``,
``write_json``); ``build`` collects the JSON files of a workdir into ``report.json`` and
a readable ``report.md``, with one markdown renderer per section (``RENDERERS``). Only
process 0 writes (every host holds the same gathered results).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rsc_jax import __version__, certify, coding, metrics, parallel

# (file in the workdir, key in report.json, title)
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("train_summary.json", "train", "Training"),
    ("evaluation.json", "evaluation", "Clean evaluation"),
    ("robustness.json", "robustness", "Robustness"),
    ("convergence.json", "convergence", "Attack convergence"),
    ("certified.json", "certification", "Certification"),
)


def path(workdir: str, key: str) -> str:
    """The file of report key ``key`` (``SECTIONS``) in ``workdir``."""
    return os.path.join(workdir, next(f for f, k, _ in SECTIONS if k == key))


def read_json(path: str) -> Any | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(path: str, obj: Any, **dump_kw: Any) -> None:
    """Writes ``obj`` atomically (a reader never sees half a file); process 0 only."""
    if not parallel.is_primary():
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, **(dump_kw or {"indent": 2, "sort_keys": True}))
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    if parallel.is_primary():
        with open(path, "w") as f:
            f.write(text)


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_robustness(workdir: str, result: Mapping[str, Any]) -> None:
    """``robustness.json`` and ``robustness.png``."""
    if not parallel.is_primary():
        return
    os.makedirs(workdir, exist_ok=True)
    write_json(path(workdir, "robustness"), result, indent=1)
    plot_robustness(result, os.path.join(workdir, "robustness.png"))


def write_convergence(workdir: str, result: Mapping[str, Any]) -> None:
    """``convergence.json`` and, with the APGD-CE grid, ``convergence.png`` (accuracy
    against gradient evaluations)."""
    if not parallel.is_primary():
        return
    os.makedirs(workdir, exist_ok=True)
    write_json(path(workdir, "convergence"), result, indent=1)
    grid = result.get("grid")
    if not grid:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, accs, cis, evals in zip(grid["eot"], grid["accuracy"], grid["ci95"], grid["grad_evals"]):
        line, = ax.plot(evals, accs, "o-", label=f"EOT {k}")
        ax.fill_between(evals, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("gradient evaluations per example (steps x EOT draws)")
    ax.set_ylabel(f"accuracy (M = {result['judge_draws']} draws averaged)")
    ax.set_title(f"APGD-CE at eps {result['eps_255']:.3g}/255, n = {grid['n_examples']} "
                 f"(95 % intervals shaded)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "convergence.png"), dpi=110)
    plt.close(fig)


def convergence_markdown(result: Mapping[str, Any]) -> str:
    """The convergence section of report.md."""
    lines = ["## Attack convergence", ""]
    d = result.get("doubled")
    if d:
        doubled = d.get("doubled", list(d["fields"]))
        fields = ", ".join(f"{k} {v}" for k, v in d["fields"].items() if k in doubled)
        lines += [f"Worst case at l_inf eps {result['eps_255']:.3g}/255 on the first {d['n_examples']} test images "
                  f"(preset `{result['preset']}`) at the run's budget and with {fields} (doubled), judged on the "
                  f"same report-stream draws: {d['acc_avg']:.3f} -> {d['acc_avg_doubled']:.3f} "
                  f"[{d['ci95_doubled'][0]:.3f}, {d['ci95_doubled'][1]:.3f}].", ""]
    grid = result.get("grid")
    if grid:
        steps = grid["steps"]
        lines += [f"APGD-CE at l_inf eps {result['eps_255']:.3g}/255 on the first {grid['n_examples']} test images: "
                  f"accuracy of the {result['judge_draws']}-draw-averaged logits [95 % interval] by steps (columns) "
                  "and EOT draws per step (rows).", "",
                  "| EOT \\ steps | " + " | ".join(str(t) for t in steps) + " |", "|---|" + "---|" * len(steps)]
        for k, accs, cis in zip(grid["eot"], grid["accuracy"], grid["ci95"]):
            lines.append(f"| {k} | " + " | ".join(f"{a:.3f} [{c[0]:.3f}, {c[1]:.3f}]" for a, c in zip(accs, cis))
                         + " |")
        lines.append("")
    lines += ["| check | status | detail |", "|---|---|---|"]
    for c in result["checks"]:
        lines.append(f"| {c['name']} | {'pass' if c['status'] == 'pass' else '**FLAG**'} | {c['detail']} |")
    return "\n".join(lines + (["", "![convergence](convergence.png)", ""] if grid else [""]))


def write_certification(workdir: str, result: Mapping[str, Any], lines: Sequence[str], radius: np.ndarray,
                        correct: np.ndarray) -> None:
    """``certify.jsonl`` (one JSON line per example), ``certified.json`` and ``certified.png``."""
    if not parallel.is_primary():
        return
    os.makedirs(workdir, exist_ok=True)
    write_text(os.path.join(workdir, "certify.jsonl"), "".join(line + "\n" for line in lines))
    write_json(path(workdir, "certification"), result, indent=2)
    s = result["settings"]
    plot_certified(os.path.join(workdir, "certified.png"), result["radii"], result["certified_accuracy"], radius,
                   correct, f"{s['coding']}, sigma={s['sigma']:g}, T={s['T']}, n={s['n']}, alpha={s['alpha']:g}, "
                            f"{s['num_examples']} images",
                   max_radius=result.get("max_certifiable_radius"), input_dim=result.get("input_dim"))


# --------------------------------------------------------------------------- robustness


def _fit_ylim(ax: Any, values: Sequence[float]) -> None:
    """A y range around the data (at least 0.1 wide, inside [0, 1] plus a margin), so
    curves that differ by a point are not squeezed against 1.0."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(0.1 - (hi - lo), 0.0) / 2 + 0.05 * max(hi - lo, 0.1)
    ax.set_ylim(max(lo - pad, -0.02), min(hi + pad, 1.02))


def plot_robustness(result: Mapping[str, Any], path: str) -> None:
    """Accuracy (M-draw averaged, solid; single draw, dotted) vs eps per attack curve,
    l_inf (eps x 255) and l_2 panels, each scaled to its data; single-eps attacks as
    markers; legends below the panels."""
    plt = _pyplot()
    curves = result["curves"]
    has_l2 = any(c["norm"] == "l2" for c in curves.values())
    fig, axes = plt.subplots(1, 2 if has_l2 else 1, figsize=(12 if has_l2 else 6.5, 5.2), squeeze=False)
    panels = {"linf": axes[0, 0], "l2": axes[0, 1] if has_l2 else None}
    shown: dict[str, list[float]] = {"linf": [], "l2": []}
    for name, c in curves.items():
        a = panels[c["norm"]]
        eta = np.asarray(c["eta"]) * (255.0 if c["norm"] == "linf" else 1.0)
        line, = a.plot(eta, c["acc_avg"], "o-", label=f"{name} (M-avg, QTE {c['qte_avg']:.3f})")
        a.plot(eta, c["acc_single"], ":", color=line.get_color(), label=f"{name} (1 draw)")
        shown[c["norm"]] += list(c["acc_avg"]) + list(c["acc_single"])
    markers = "sv^Dxp*h"
    point_rows = [r for r in result["results"] if r["curve"] is None and r["norm"] == "linf"
                  and r["name"] not in ("clean", "sanity-pgd")]
    for i, r in enumerate(point_rows):
        panels["linf"].plot([r["eps_255"]], [r["acc_avg"]], markers[i % len(markers)], ms=7,
                            label=f"{r['name']} (M-avg)")
        shown["linf"].append(r["acc_avg"])
    for norm, a in panels.items():
        if a is None:
            continue
        a.set_xlabel("eps (l_inf, x 1/255)" if norm == "linf" else "eps (l_2)")
        a.set_ylabel("accuracy")
        a.set_title(f"{'l_inf' if norm == 'linf' else 'l_2'} attacks")
        a.grid(alpha=0.3)
        _fit_ylim(a, shown[norm])
        a.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    cod = result.get("coding", {})
    fig.suptitle(f"robustness: coding {cod.get('method', '?')} sigma={cod.get('sigma', '?')} "
                 f"T={cod.get('T', '?')}, n={result['n_examples']}, M={result['judge_draws']}, "
                 f"preset {result.get('preset', '?')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


def _ci(r: Mapping[str, Any]) -> str:
    ci = r.get("ci95_avg")
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"


def _passes(p: Mapping[str, Any] | None) -> str:
    return f"{p['forward']:,.0f} / {p['backward']:,.0f}" if p else "-"


def robustness_markdown(result: Mapping[str, Any], *, png: str | None = None) -> str:
    """A robustness section for report.md: settings, results, QTE, worst case, checks, plot."""
    cod = result.get("coding", {})
    cfg = result.get("config", {})
    lines = ["## Adversarial robustness", "",
             f"Coding `{cod.get('method', '?')}`, sigma = {_fmt(cod.get('sigma'))}, T = {_fmt(cod.get('T'))}; "
             f"{result['n_examples']} test examples, seed {result['seed']}, "
             f"M = {result['judge_draws']} judge draws, {result.get('devices', 1)} device(s). "
             "`acc (1 draw)` is the single-draw accuracy averaged over the M fresh draws; "
             "`acc (M-avg)` classifies the logits averaged over the M draws. "
             "Attacks are crafted and judged on separate per-example key streams.", "",
             f"Attack budget preset: `{result.get('preset', '?')}`"
             + (" (`config.attack.quick`: the reductions of `config.QUICK_ATTACK`; every setting below "
                "is the one that ran)" if result.get("preset") == "quick" else "")
             + (f"; export attacked: `{result['export']}`" if result.get("export") else "") + ".", "",
             "### Settings and accuracy", "",
             "| attack | norm | eps | eps x 255 | steps | step size | EOT K | crafted with | "
             "passes per image (fwd / bwd) | images attacked | acc (1 draw) | acc (M-avg) | 95 % interval (M-avg) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        extra = f" (queries {r['queries']}, p_init {_fmt(r['p_init'])})" if r.get("attack") == "square" else ""
        p = r.get("passes_per_example")
        lines.append(
            f"| {r['name']}{extra} | {r['norm']} | {_fmt(r['eps'])} | {_fmt(r.get('eps_255'))} | "
            f"{_fmt(r.get('steps'))} | {_fmt(r.get('step_size'))} | {_fmt(r.get('eot'))} | "
            f"{r.get('crafted_with', 'model')} | {_passes(p)} | "
            f"{_fmt(r.get('examples_attacked'))} | {r['acc_single']:.4f} | {r['acc_avg']:.4f} | {_ci(r)} |")
        if "per_variant" in r:
            for nm, v in r["per_variant"].items():
                lines.append(f"| &nbsp;&nbsp;via `{nm}` | linf | {_fmt(r['eps'])} | {_fmt(r.get('eps_255'))} | "
                             f"{_fmt(r.get('steps'))} | {_fmt(r.get('step_size'))} | {_fmt(r.get('eot'))} | "
                             f"{nm} | | | {v['acc_single']:.4f} | {v['acc_avg']:.4f} | |")
    lines += ["", "### QTE (normalised area under accuracy vs eps)", "",
              "| curve | norm | eta grid | QTE (1 draw) | QTE (M-avg) |", "|---|---|---|---|---|"]
    for name, c in result["curves"].items():
        grid = ", ".join(f"{e * 255:.3g}/255" if c["norm"] == "linf" else f"{e:.3g}" for e in c["eta"])
        lines.append(f"| {name} | {c['norm']} | {grid} | {c['qte_single']:.4f} | {c['qte_avg']:.4f} |")
    if result.get("worst_case"):
        fresh = "judge" in result["worst_case"][0]
        lines += ["", "### Worst case over l_inf attacks (per example)", ""]
        if fresh:
            lines += ["Per image the point of the first attack (in this order, clean first) that the judge "
                      "draws' averaged logits misclassify, else the point of lowest margin, judged again on "
                      "the report stream's M draws (docs/EVALUATION.md); `all` takes every attack the model "
                      "got, `common` only those every model gets. `selection` is the judge-stream accuracy "
                      "the choice saw (optimistic for the attacker).", "",
                      "| eps x 255 | set | attacks | passes per image (fwd / bwd) | selection | acc (1 draw) | "
                      "acc (M-avg) | 95 % interval (M-avg) |", "|---|---|---|---|---|---|---|---|"]
            for w in result["worst_case"] + result.get("worst_case_common", []):
                lines.append(f"| {w['eps_255']:.3g} | {w['set']} | {', '.join(w['attacks'])} | "
                             f"{_passes(w['passes_per_example'])} | {w['selection_acc_avg']:.4f} | "
                             f"{w['acc_single']:.4f} | {w['acc_avg']:.4f} | {_ci(w)} |")
        else:
            lines += ["| eps x 255 | attacks | acc (1 draw) | acc (M-avg) | 95 % interval (M-avg) |",
                      "|---|---|---|---|---|"]
            for w in result["worst_case"]:
                lines.append(f"| {w['eps_255']:.3g} | {', '.join(w['attacks'])} | {w['acc_single']:.4f} | "
                             f"{w['acc_avg']:.4f} | {_ci(w)} |")
    lines += ["", "### Gradient-masking checks (Athalye et al., 2018)", "",
              "| check | status | detail |", "|---|---|---|"]
    for c in result["checks"]:
        status = "pass" if c["status"] == "pass" else "**FLAG**"
        lines.append(f"| {c['name']} | {status} | {c['detail']} |")
    if cfg:
        lines += ["", "<details><summary>attack config</summary>", "", "```",
                  json.dumps(cfg, indent=1), "```", "</details>"]
    lines += ["", f"![robustness]({png or result.get('png', 'robustness.png')})", ""]
    return "\n".join(lines)


def plot_certified(path: str, radii_grid: Sequence[float], acc: np.ndarray, rad: np.ndarray,
          correct: np.ndarray, title: str, *, max_radius: float | None = None,
          input_dim: int | None = None) -> None:
    """Certified accuracy against the l2 radius (curve and grid points); with ``max_radius``
    a dashed line at the largest radius n and alpha allow, with ``input_dim`` (d) a top
    axis in l_inf-equivalent units r * 255 / sqrt(d) (``certify.linf_equivalent``)."""
    plt = _pyplot()
    finite = rad[np.isfinite(rad)]
    top = max(float(max(radii_grid)), float(finite.max()) if finite.size else 0.0,
              float(max_radius) if max_radius is not None and np.isfinite(max_radius) else 0.0) * 1.05 + 1e-3
    grid = np.linspace(0.0, top, 400)
    fig, ax = plt.subplots(figsize=(5, 3.8 if input_dim else 3.5))
    ax.plot(grid, certify.certified_accuracy(grid, rad, correct), lw=1.5, label="certified")
    ax.plot(list(radii_grid), acc, "o", ms=4, label="grid")
    if max_radius is not None and np.isfinite(max_radius):
        ax.axvline(max_radius, color="gray", ls="--", lw=1,
                   label=f"largest certifiable ({max_radius:.3g})")
    ax.set_xlabel("l2 radius")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    if input_dim:
        scale = 255.0 / np.sqrt(float(input_dim))
        top_ax = ax.secondary_xaxis("top", functions=(lambda r: r * scale, lambda e: e / scale))
        top_ax.set_xlabel(f"l_inf equivalent r/sqrt(d) (x 1/255), d = {input_dim}", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def certification_markdown(result: Mapping[str, Any]) -> str:
    """The certification section of report.md for a ``run`` result.

    The table gives the certified accuracy at each grid l2 radius, the l_inf-equivalent
    radius r / sqrt(d) (x 1/255; when the result has ``input_dim``) and marks with a dagger
    the radii beyond the largest one n and alpha can certify (a 0 there is the sample
    size's, not the model's)."""
    s = result["settings"]
    radii = result["radii"]
    max_r = result.get("max_certifiable_radius")
    d = result.get("input_dim")
    linf = result.get("linf_equivalent") or {}
    beyond = [max_r is not None and r > max_r for r in radii]
    if d and "radii_255" not in linf:       # an older certified.json: derive them
        linf = {"radii_255": [255 * float(v) for v in certify.linf_equivalent(radii, d)]}
        if max_r is not None:
            linf["max_certifiable_radius_255"] = 255 * float(certify.linf_equivalent(max_r, d))
    table = [
        "| l2 radius | " + " | ".join(f"{r:g}" for r in radii) + " |",
        "|---|" + "---|" * len(radii),
        *(["| l_inf equivalent r/sqrt(d), x 1/255 | " + " | ".join(f"{v:.3g}" for v in linf["radii_255"]) + " |"]
          if d and linf.get("radii_255") else []),
        "| certified accuracy | " + " | ".join(f"{100 * a:.1f}%" + (" †" if b else "") for a, b in
                                               zip(result["certified_accuracy"], beyond)) + " |",
        "| 95 % interval | " + " | ".join(
            "[{:.1f}, {:.1f}]".format(*(100 * v for v in metrics.binomial_interval(
                int(round(a * result["num_examples"])), result["num_examples"])))
            for a in result["certified_accuracy"]) + " |",
    ]
    notes = []
    if max_r is not None:
        linf_max = (f"; l_inf equivalent {max_r / np.sqrt(d):.4g} = {linf['max_certifiable_radius_255']:.3g}/255 "
                    f"for d = {d:,} pixel values" if d and "max_certifiable_radius_255" in linf else "")
        at_max = result.get("at_max_certifiable_radius")
        notes.append(f"- Largest radius n = {s['n']:,} and alpha = {s['alpha']:g} can certify: "
                     f"{max_r:.3f}{linf_max} (a 0 beyond it is the sample size's, not the model's"
                     + ("; † marks the grid radii beyond it" if any(beyond) else "") + ")"
                     + (f"; {100 * at_max:.1f}% of the images reached it (all n draws agreed), so the certified "
                        "accuracy near it is limited by n" if at_max else ""))
    if d:
        notes.append(f"- l_inf equivalent: an l2 certificate r covers the l_inf ball of radius r/sqrt(d), "
                     f"d = H x W x C = {d:,} (|u|_2 <= sqrt(d) |u|_inf): a lower bound on the certified l_inf "
                     "radius, not a separate certificate")
    lines = [
        "## Certified robustness (randomized smoothing)",
        "",
        f"Cohen et al. (ICML 2019) CERTIFY on the "
        f"{coding.CODINGS[s['coding']].label if s['coding'] in coding.CODINGS else s['coding']}-coded network as base "
        f"classifier: sigma = {s['sigma']:g}, T = {s['T']}, n0 = {s['n0']}, n = {s['n']:,}, "
        f"alpha = {s['alpha']:g}, {s['num_examples']} test images, seed {s['seed']}. "
        f"Certified l2 radius R = {result['radius_formula']} in [0, 1] pixel space, "
        "abstaining when the Clopper-Pearson lower bound p_A <= 1/2.",
        "",
        *table,
        "",
        *notes,
        f"- Average certified radius (ACR): {result['acr']:.3f}",
        f"- Abstain rate: {100 * result['abstain_rate']:.1f}%",
        f"- Throughput: {result['images_per_second']:.3g} images/s "
        f"({s['devices']} device(s), {result['seconds']:.1f} s in all, compilation included)",
        "",
        "![certified accuracy vs radius](certified.png)",
        "",
    ]
    return "\n".join(lines)


def certification_comparison_markdown(runs: Sequence[tuple[str, Mapping[str, Any]]],
                                      radii: Sequence[float] | None = None) -> str:
    """One table of certified accuracy for several runs side by side (e.g. RSC-II(sigma)
    against RSC-I(sigma/sqrt(T)), ``configs/sweeps/certify_pairs.py``).

    ``runs``: (name, certified.json result) pairs. ``radii``: the columns (default: the
    first run's grid); a run without a radius shows "-". Each row states its settings
    and the largest radius its n and alpha can certify (with its l_inf equivalent x 1/255
    where the result has ``input_dim``); cells beyond it are marked with a dagger.
    """
    radii = list(radii if radii is not None else (runs[0][1]["radii"] if runs else []))
    head = ("| run | coding | sigma | T | images | n | alpha | "
            + " | ".join(f"r = {r:g}" for r in radii)
            + " | ACR | largest certifiable r (l_inf x 1/255) |")
    lines = [head, "|---|---|---|---|---|---|---|" + "---|" * len(radii) + "---|---|"]
    for name, res in runs:
        s = res["settings"]
        acc = {round(float(r), 9): a for r, a in zip(res["radii"], res["certified_accuracy"])}
        max_r = res.get("max_certifiable_radius")
        d = res.get("input_dim")
        cells = []
        for r in radii:
            a = acc.get(round(float(r), 9))
            cells.append("-" if a is None else f"{a:.3f}" + (" †" if max_r is not None and r > max_r else ""))
        top = "-" if max_r is None else f"{max_r:.3f}" + (
            f" ({255 * float(certify.linf_equivalent(max_r, d)):.3g}/255)" if d else "")
        lines.append(f"| {name} | {s['coding']} | {s['sigma']:g} | {s['T']} | {res['num_examples']} | {s['n']:,} | "
                     f"{s['alpha']:g} | " + " | ".join(cells) + f" | {res['acr']:.3f} | {top} |")
    return "\n".join(lines + ["", "† beyond the largest radius the run's n and alpha can certify: "
                                   "0 by the sample size, not the model.", ""])

# --------------------------------------------------------------------------- report.md


def _train_md(r: dict[str, Any]) -> str:
    f = r.get("final") or {}
    return (f"- steps: {r['steps']} ({r['steps_per_epoch']} per epoch), resumed from step {r['resumed_from']}\n"
            f"- wall-clock: {r['seconds']} s\n"
            f"- last logged training loss {f.get('loss', float('nan')):.4f}, "
            f"training accuracy {f.get('accuracy', float('nan')):.4f}\n")


def _eval_md(r: dict[str, Any]) -> str:
    avg = next(k for k in r if k.startswith("accuracy_avg"))
    n = r["num_examples"]

    def acc(p: float) -> str:
        low, high = metrics.binomial_interval(int(round(p * n)), n)
        return f"{p:.4f} [{low:.3f}, {high:.3f}]"

    return ("| examples | accuracy (1 draw) [95 % interval] | accuracy (logits averaged over "
            f"{r['draws']} draws) [95 % interval] | seed |\n|---|---|---|---|\n"
            f"| {n} | {acc(r['accuracy'])} | {acc(r[avg])} | {r['seed']} |\n")


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "train": _train_md, "evaluation": _eval_md, "robustness": robustness_markdown,
    "convergence": convergence_markdown,
    "certification": certification_markdown}


def build(workdir: str, run_config: dict[str, Any],
          extra_markdown: dict[str, Callable[[dict[str, Any]], str]] | None = None) -> dict[str, Any]:
    """Writes ``WORKDIR/report.json`` and ``WORKDIR/report.md`` from the results present.

    ``extra_markdown`` maps a report key to a renderer that replaces ``RENDERERS``'s.
    """
    renderers = {**RENDERERS, **(extra_markdown or {})}
    report: dict[str, Any] = {"package_version": __version__, "config": run_config}
    results = {key: read_json(os.path.join(workdir, fname)) for fname, key, _ in SECTIONS}
    # The export the results came from (``--export=PATH``), else the run's own.
    path = next((r["export"] for r in results.values() if r and r.get("export")),
                os.path.join(workdir, "export"))
    export_cfg = read_json(os.path.join(path, "config.json"))
    if export_cfg:
        report["export"] = export_cfg
        report["export_path"] = os.path.abspath(path)
    md = [f"# rsc_jax report: {os.path.basename(os.path.abspath(workdir))}\n"]
    if export_cfg:
        c, m, d = export_cfg["coding"], export_cfg["model"], export_cfg["dataset"]
        kind = "spiking" if m["spiking"] else "ANN twin"
        md.append(f"Model `{m['name']}` ({kind}) on `{d['name']}` ({d['num_classes']} classes, images "
                  f"{tuple(d['image_shape'])}); coding `{c['method']}`, sigma {c['sigma']}, T {c['T']}; "
                  f"export `{path}`.\n")
    for fname, key, title in SECTIONS:
        r = results[key]
        if r is None:
            continue
        report[key] = r
        body = renderers[key](r) if key in renderers else f"See `{fname}`.\n"
        md.append(body if body.startswith("## ") else f"## {title}\n\n{body}")
    write_json(os.path.join(workdir, "report.json"), report)
    write_text(os.path.join(workdir, "report.md"), "\n".join(md))
    return report
