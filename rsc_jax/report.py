"""Collects a run's JSON results into ``report.json`` and a readable ``report.md``."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from rsc_jax import parallel

# (file in the workdir, key in report.json, title)
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("train_summary.json", "train", "Training"),
    ("evaluation.json", "evaluation", "Clean evaluation"),
    ("robustness.json", "robustness", "Robustness"),
    ("certified.json", "certification", "Certification"),
)


def read_json(path: str) -> Any | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` atomically (a reader never sees half a file); process 0 only."""
    if not parallel.is_primary():
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _train_md(r: dict[str, Any]) -> str:
    f = r.get("final") or {}
    return (f"- steps: {r['steps']} ({r['steps_per_epoch']} per epoch), resumed from step {r['resumed_from']}\n"
            f"- wall-clock: {r['seconds']} s\n"
            f"- last logged training loss {f.get('loss', float('nan')):.4f}, "
            f"training accuracy {f.get('accuracy', float('nan')):.4f}\n")


def _eval_md(r: dict[str, Any]) -> str:
    avg = next(k for k in r if k.startswith("accuracy_avg"))
    return ("| examples | accuracy (1 draw) | accuracy (logits averaged over "
            f"{r['draws']} draws) | seed |\n|---|---|---|---|\n"
            f"| {r['num_examples']} | {r['accuracy']:.4f} | {r[avg]:.4f} | {r['seed']} |\n")


def build(workdir: str, run_config: dict[str, Any],
          extra_markdown: dict[str, Callable[[dict[str, Any]], str]] | None = None) -> dict[str, Any]:
    """Writes ``WORKDIR/report.json`` and ``WORKDIR/report.md`` from the results present.

    ``extra_markdown`` maps a report key (``robustness``, ``certification``) to the
    function that renders its section.
    """
    renderers: dict[str, Callable[[dict[str, Any]], str]] = {"train": _train_md, "evaluation": _eval_md}
    renderers.update(extra_markdown or {})
    report: dict[str, Any] = {"config": run_config}
    export_cfg = read_json(os.path.join(workdir, "export", "config.json"))
    if export_cfg:
        report["export"] = export_cfg
    md = [f"# rsc_jax report: {os.path.basename(os.path.abspath(workdir))}\n"]
    if export_cfg:
        c, m, d = export_cfg["coding"], export_cfg["model"], export_cfg["dataset"]
        kind = "spiking" if m["spiking"] else "ANN twin"
        md.append(f"Model `{m['name']}` ({kind}) on `{d['name']}` ({d['num_classes']} classes, images "
                  f"{tuple(d['image_shape'])}); coding `{c['method']}`, sigma {c['sigma']}, T {c['T']}.\n")
    for fname, key, title in SECTIONS:
        r = read_json(os.path.join(workdir, fname))
        if r is None:
            continue
        report[key] = r
        body = renderers[key](r) if key in renderers else f"See `{fname}`.\n"
        md.append(body if body.startswith("## ") else f"## {title}\n\n{body}")
    write_json(os.path.join(workdir, "report.json"), report)
    if parallel.is_primary():
        with open(os.path.join(workdir, "report.md"), "w") as f:
            f.write("\n".join(md))
    return report
