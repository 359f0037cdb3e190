"""Anchors a finished run's worst case against SA-PGD with the published ASSG and PDSG
surrogates (Wang et al., arXiv 2512.22522; Lun et al., CVPR 2025), the attacks the SNN
literature now treats as the bar.

The run's ``robustness.json`` holds our worst case at each strong eps, judged per example
on the fresh report stream. This script loads the run's export and test images, runs the
``sapgd`` family of ``evaluators/attack_suite.py`` (SA-PGD through the model's own
gradient and, for a spiking model, through ``assg-ema`` with its running statistics
carried across the attack's passes and through ``pdsg-channel``) on every image, with
the run's per-example attack keys and budget (``apgd_steps`` x ``apgd_eot``,
``apgd_restarts``, or ``--steps`` / ``--eot``), judges the points on the same report
stream, and compares ours with their per-example worst (clean in the union, as in ours)
by the cross-check's rule (``scripts/crosscheck_torchattacks.py``): *consistent* when
ours <= theirs + half the width of our 95 % interval, with the union and the exact
McNemar test. Writes ``--out`` (JSON) and prints one line::

    python scripts/anchor_sapgd.py --run=RUN --out=RUN/anchor_sapgd.json

See docs/CROSSCHECK.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Any, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402


def _crosscheck():
    spec = importlib.util.spec_from_file_location("crosscheck_torchattacks",
                                                  os.path.join(ROOT, "scripts", "crosscheck_torchattacks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def attack_config(report: dict[str, Any], steps: int | None, eot: int | None) -> Any:
    """The run's ``config.attack`` (defaults for fields it predates) with ``sapgd`` on and
    the budget overrides."""
    from rsc_jax import config
    c = config.attack()
    for k, v in report["config"].items():
        if k in c:
            c[k] = tuple(v) if isinstance(v, list) else v
    c.sapgd = True
    if steps is not None:
        c.apgd_steps = steps
    if eot is not None:
        c.apgd_eot = eot
    return c


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished run's directory (export/, robustness.json, config.json)")
    p.add_argument("--out", required=True, help="where to write the JSON")
    p.add_argument("--steps", type=int, default=None, help="SA-PGD steps (default: the run's apgd_steps)")
    p.add_argument("--eot", type=int, default=None, help="draws per step (default: the run's apgd_eot)")
    p.add_argument("--batch_size", type=int, default=None, help="default: the run's attack batch size")
    a = p.parse_args(argv)
    for k in ("steps", "eot", "batch_size"):
        if getattr(a, k) is not None and getattr(a, k) < 1:
            p.error(f"--{k}={getattr(a, k)} is not allowed; must be >= 1")
    for f in ("robustness.json", "export"):
        if not os.path.exists(os.path.join(a.run, f)):
            p.error(f"--run={a.run!r}: it has no {f}; give a finished run's directory")
    return a


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t0 = time.time()
    from rsc_jax import export, parallel
    from rsc_jax.evaluators import cascade, common, robustness
    xc = _crosscheck()

    with open(os.path.join(args.run, "robustness.json")) as f:
        report = json.load(f)
    cfg = attack_config(report, args.steps, args.eot)
    clf = export.load(os.path.join(args.run, "export"))
    n = int(report["n_examples"])
    x, y, data_info = common.run_test_set(clf, os.path.join(args.run, "config.json"), n)
    bs = args.batch_size or int(cfg.batch_size)
    mesh = parallel.make_mesh(1)
    jobs = robustness.build_jobs(clf, cfg, {}, None)
    clean_job = next(j for j in jobs if j.craft is None)

    def run_job(job, eps):
        fn = cascade.batch_fn(job, clf.logits, cfg)
        out = parallel.map_examples(lambda idx, xb, yb: fn(np.float32(eps), None, idx, xb, yb), [x, y],
                                    batch_size=bs, mesh=mesh)
        return {k: np.asarray(v) for k, v in out.items()}

    clean = run_job(clean_job, 0.0)
    comparisons, timings = [], {}
    for entry in report["worst_case"]:
        e = float(entry["eps"])
        stream, draws = xc.entry_judge(entry, int(report["judge_draws"]))
        if stream != cascade.STREAM_REPORT or draws != cfg.judge_draws:
            raise ValueError(f"{args.run}: the worst case at {e * 255:.3g}/255 was judged on stream {stream} with "
                             f"{draws} draws; this script judges on the report stream {cascade.STREAM_REPORT} with "
                             f"{cfg.judge_draws}: re-run the run's attack stage first")
        theirs = {"clean": clean["fresh_avg"] > 0.5} if "clean" in entry.get("attacks", ()) else {}
        for job in (j for j in jobs if j.family == "sapgd" and abs(j.eps - e) < 1e-12):
            t = time.time()
            out = run_job(job, e)
            theirs[job.name] = out["fresh_avg"] > 0.5
            timings[f"{job.name}@{e * 255:.3g}/255"] = time.time() - t
            print(f"  {job.name} eps={e * 255:.3g}/255: acc_avg {theirs[job.name].mean():.4f} "
                  f"({time.time() - t:.0f}s)", flush=True)
        c = xc.compare(entry, theirs, xc.unpack_correct(entry["correct_avg"]))
        c["judge"] = {"stream": stream, "draws": draws}
        if c.get("mcnemar"):
            c["mcnemar"]["b_means"] = "examples ours leaves correct and SA-PGD breaks"
        comparisons.append(c)
    result = {
        "verdict": "consistent" if all(c["verdict"] == "consistent" for c in comparisons) else "ours is weaker",
        "run": os.path.abspath(args.run), "data": data_info,
        "settings": {"attack": "sapgd", "steps": cfg.apgd_steps, "eot": cfg.apgd_eot, "restarts": cfg.apgd_restarts,
                     "surrogates": ["model"] + sorted(robustness.layer_surrogates(clf)),
                     "keys": "the run's per-example attack stream", "judge": "the worst case's report stream",
                     "rule": "consistent when ours <= theirs + (hi - lo) / 2 of our 95% interval"},
        "comparisons": comparisons, "timings_s": timings, "seconds": time.time() - t0,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(xc.summary_line(result).replace("torchattacks", "SA-PGD").replace("crosscheck", "anchor"))
    return result


if __name__ == "__main__":
    main()
