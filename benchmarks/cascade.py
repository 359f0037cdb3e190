"""The worst case's cascade against running every attack on every image, side by side.

    python -m benchmarks.cascade --run=runs/digits --num_examples=128 --standalone=32

For a finished run (a workdir with ``export/`` and ``config.json``): the ``rand`` attack
preset (``config.RAND_ATTACK``) on the first ``--num_examples`` test images, once with
``attack.cascade`` (every attack only on the images no earlier one broke, and on the
first ``--standalone`` images for the per-attack rows) and once without, alternating
``--repeats`` times in this one process (each ``robustness.run`` compiles its own
functions: the times include compilation). Prints the wall times, their ratio, the
passes per example each mode spent, and whether the two worst cases are identical (they
must be: ``evaluators.robustness``); writes JSON to ``--out``. The convergence grid, the
doubled-budget check and the huge-budget sanity PGD are off (they do not depend on the
cascade); the transfer attack runs where the run has ``ann_twin/export``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from rsc_jax import config, export, parallel
from rsc_jax.evaluators import common, robustness


def attack_config(num_examples: int, standalone: int, cascade: bool, batch_size: int):
    c = config.attack()
    c.update(config.RAND_ATTACK)
    c.strong_eps = (32 / 255,) if num_examples else c.strong_eps
    c.num_examples, c.standalone_examples, c.cascade, c.batch_size = num_examples, standalone, cascade, batch_size
    c.convergence, c.doubled_budget, c.sanity = False, False, False
    return c


def _strip(worst: list[dict]) -> list[dict]:
    return [{k: v for k, v in w.items() if k not in ("examples_attacked", "passes_per_example", "cascade")}
            for w in worst]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished run's workdir (export/, config.json)")
    p.add_argument("--num_examples", type=int, default=128)
    p.add_argument("--standalone", type=int, default=32, help="images every attack runs on (the rows)")
    p.add_argument("--eps", type=float, default=32.0, help="the strong eps x 255")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    clf = export.load(os.path.join(a.run, "export"))
    x, y, _ = common.run_test_set(clf, os.path.join(a.run, "config.json"), a.num_examples)
    twin = os.path.join(a.run, "ann_twin", "export")
    transfer = export.load(twin) if os.path.isdir(twin) else None
    mesh = parallel.make_mesh(1)
    times: dict[bool, list[float]] = {True: [], False: []}
    res: dict[bool, dict] = {}
    for _ in range(a.repeats):
        for cascade in (True, False):
            c = attack_config(a.num_examples, a.standalone, cascade, a.batch_size)
            c.strong_eps = (a.eps / 255,)
            with tempfile.TemporaryDirectory() as wd:
                t0 = time.perf_counter()
                res[cascade] = robustness.run(clf, x, y, c, workdir=wd, mesh=mesh, transfer=transfer, progress=False)
                times[cascade].append(time.perf_counter() - t0)
    same = all(_strip(res[True][k]) == _strip(res[False][k]) for k in ("worst_case", "worst_case_common"))
    out = {"run": a.run, "coding": res[True]["coding"], "num_examples": a.num_examples, "standalone": a.standalone,
           "eps_255": a.eps, "seconds_cascade": times[True], "seconds_all": times[False],
           "ratio": float(np.median(times[False]) / np.median(times[True])),
           "passes_per_example_cascade": res[True]["cost"]["passes_per_example"],
           "passes_per_example_all": res[False]["cost"]["passes_per_example"],
           "worst_case": {k: res[True]["worst_case"][0][k] for k in ("acc_avg", "ci95_avg", "attacks")},
           "examples_attacked": res[True]["worst_case"][0]["examples_attacked"], "identical_worst_case": same}
    print(f"{a.run}: rand preset at {a.eps:g}/255 on {a.num_examples} images ({a.standalone} standalone): "
          f"cascade {np.median(times[True]):.1f} s, every attack on every image {np.median(times[False]):.1f} s, "
          f"ratio {out['ratio']:.2f}; backward passes per example {out['passes_per_example_cascade']['backward']:.0f} "
          f"vs {out['passes_per_example_all']['backward']:.0f}; worst case identical: {same}; "
          f"worst case {out['worst_case']['acc_avg']:.3f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
