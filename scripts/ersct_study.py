r"""Plain RSC training vs E-RSCT at the same sigma and T, side by side in one run.

    python scripts/ersct_study.py --config=configs/digits.py --target=0.9 --out=runs/ersct_digits.json
    python scripts/ersct_study.py --config=configs/mnist_subset.py --target=0.95 --out=runs/ersct_mnist.json

For one data set, with the same seed, batch order, sigma, T and number of steps:
1. trains the ANN teacher (``distill.teacher_config``: clean images, ReLU, T = 1) with
   ``train.train`` (timed: the teacher is part of E-RSCT's cost);
2. trains the RSC-SNN twice with the project's jitted step (``train.make_train_step``):
   plain cross-entropy, and the E-RSCT loss (``distill.distillation_loss``, student
   initialised from the teacher), evaluating the clean test accuracy (one coding draw,
   ``eval_examples`` test images) every ``eval_every`` steps; evaluation time is not
   counted in the training wall-clock, and the first step (which includes the XLA
   compilation) is reported apart as ``first_step_seconds``;
3. reports steps and training seconds to reach ``target`` clean accuracy, the final
   clean accuracy on the whole test set, and PGD-7 robust accuracy (l_inf eps 8/255,
   step 2/255, random start, K = 1, judged on one fresh draw; ``attack_examples``
   images) for both, as JSON and a markdown table.

Timings are wall-clock on whatever machine runs it (here: 2 shared CPU cores), compile
included in the first step of each run; compare runs of one invocation only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rsc_jax import attacks, backend, classifier, config, data, distill, judging, parallel, train  # noqa: E402


def load_config(path: str):
    return config.call_file(path)


def make_eval(clf_config: dict[str, Any], seed: int):
    """Jitted ``(variables, idx, x, y) -> correct [B]``: one coding draw per example."""
    clf = classifier.Classifier(clf_config, None)
    key = jax.random.fold_in(jax.random.key(seed), 3)

    @backend.jit
    def fn(variables, idx, x, y):
        logits = clf.apply(variables, parallel.example_keys(key, idx), x)
        return jnp.argmax(logits, -1) == y
    return fn


def accuracy(fn, variables, x: np.ndarray, y: np.ndarray, batch: int, mesh) -> float:
    correct = parallel.map_examples(functools.partial(fn, variables), [x, y], batch_size=batch, mesh=mesh)
    return float(correct.mean())


def pgd7_accuracy(clf: classifier.Classifier, x: np.ndarray, y: np.ndarray, batch: int, seed: int, mesh) -> float:
    """PGD-7 (eps 8/255, step 2/255, random start, K = 1), judged on a fresh draw."""
    @backend.jit
    def fn(idx, xb, yb):
        keys = judging.example_keys(seed, idx, stream=0)
        xa = attacks.pgd(clf.logits, keys, xb, yb, eps=8 / 255, step_size=2 / 255, steps=7)
        j = judging.judge(clf.logits, judging.example_keys(seed, idx, stream=1), xa, yb, draws=1)
        return j["correct_first"]
    return float(parallel.map_examples(fn, [x, y], batch_size=batch, mesh=mesh).mean())


def run_one(name: str, cfg, ds, loss_factory, init, loss_inputs, *, eval_every: int, eval_x, eval_y,
            eval_batch: int, mesh) -> dict[str, Any]:
    """Trains ``cfg.train.epochs`` epochs with the jitted step; returns the curve and variables."""
    tc = cfg.train
    clf_config = train.classifier_config(cfg, ds)
    clf = classifier.Classifier(clf_config, None)
    spe = data.steps_per_epoch(len(ds.train), tc.batch_size)
    total = tc.epochs * spe
    tx = train.make_optimizer(tc, total)
    root = jax.random.key(cfg.seed)
    v = init if init is not None else classifier.init_variables(clf_config, jax.random.fold_in(root, train.INIT_STREAM))
    state = parallel.replicate(train.init_state(v, tx), mesh)
    step = train.make_train_step(loss_factory(clf), tx, jax.random.fold_in(root, train.NOISE_STREAM))
    extra = () if loss_inputs is None else (parallel.replicate(loss_inputs, mesh),)
    ev = make_eval(clf_config, cfg.seed)
    index = np.arange(tc.batch_size, dtype=np.int32)
    curve, seconds, first = [], 0.0, 0.0
    for s in range(total):
        b = data.train_batch(ds, step=s, batch_size=tc.batch_size, seed=cfg.seed, augment=cfg.dataset.augment)
        b["index"] = index
        t0 = time.time()
        state, m = step(state, parallel.shard_batch(b, mesh), *extra)
        jax.block_until_ready(state["params"])
        if s == 0:
            first = time.time() - t0     # compilation + the first step: reported apart
        else:
            seconds += time.time() - t0
        if (s + 1) % eval_every == 0 or s + 1 == total:
            variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
            acc = accuracy(ev, variables, eval_x, eval_y, eval_batch, mesh)
            curve.append({"step": s + 1, "train_seconds": round(seconds, 2), "clean_accuracy": acc,
                          "loss": float(m["loss"])})
            print(f"[{name}] step {s + 1}/{total}  {seconds:.1f}s  acc {acc:.4f}  loss {float(m['loss']):.4f}",
                  flush=True)
    variables = jax.device_get({"params": state["params"], "batch_stats": state["batch_stats"]})
    return {"curve": curve, "train_seconds": round(seconds, 2), "first_step_seconds": round(first, 2),
            "steps": total,
            "classifier": classifier.Classifier(clf_config, variables)}


def first_reaching(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    for r in curve:
        if r["clean_accuracy"] >= target:
            return {"step": r["step"], "train_seconds": r["train_seconds"]}
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/digits.py")
    ap.add_argument("--epochs", type=int, default=0, help="override train.epochs (0 = config's)")
    ap.add_argument("--target", type=float, default=0.9, help="clean accuracy to reach")
    ap.add_argument("--eval_every", type=int, default=10)
    ap.add_argument("--eval_examples", type=int, default=500)
    ap.add_argument("--attack_examples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=-1, help="override the config's seed (-1 = config's)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    plain = load_config(a.config)
    if a.seed >= 0:
        plain.seed = a.seed
    if a.epochs:
        plain.train.epochs = a.epochs
    plain.distill.enabled = False
    erst = plain.copy_and_resolve_references()
    erst.distill.enabled = True
    ds = data.load(plain)
    mesh = parallel.make_mesh(plain.train.num_devices or None)
    x, y = data.test_arrays(ds)
    ex, ey = x[:a.eval_examples], y[:a.eval_examples]
    eb = plain.eval.batch_size

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tdir:
        teacher, tsum = train.train(distill.teacher_config(erst), ds, tdir, mesh=mesh, progress=False)
    teacher_seconds = round(time.time() - t0, 2)
    teacher_acc = accuracy(make_eval(teacher.config, plain.seed), teacher.params, x, y, eb, mesh)
    print(f"[teacher] {tsum['steps']} steps {teacher_seconds}s clean acc {teacher_acc:.4f}", flush=True)

    s_cfg = train.classifier_config(erst, ds)
    distill.check_compatible(s_cfg, teacher.config, teacher.params)
    init, _ = distill.student_init(erst, s_cfg, teacher)
    runs = {
        "plain RSC": run_one("plain", plain, ds, train.cross_entropy_loss, None, None, eval_every=a.eval_every,
                             eval_x=ex, eval_y=ey, eval_batch=eb, mesh=mesh),
        "E-RSCT": run_one("E-RSCT", erst, ds, lambda s: distill.distillation_loss(s, teacher.config, erst.distill),
                          init, distill.teacher_variables(teacher), eval_every=a.eval_every, eval_x=ex, eval_y=ey,
                          eval_batch=eb, mesh=mesh),
    }
    ax, ay = x[:a.attack_examples], y[:a.attack_examples]
    result = {"config": a.config, "seed": plain.seed, "sigma": plain.coding.sigma, "T": plain.coding.T, "method": plain.coding.method,
              "epochs": plain.train.epochs, "target": a.target, "eval_examples": len(ey),
              "attack_examples": len(ay), "devices": jax.device_count(),
              "teacher": {"steps": tsum["steps"], "seconds": teacher_seconds, "clean_accuracy": teacher_acc},
              "runs": {}}
    for name, r in runs.items():
        clf = r.pop("classifier")
        final = accuracy(make_eval(clf.config, plain.seed), clf.params, x, y, eb, mesh)
        robust = pgd7_accuracy(clf, ax, ay, eb, plain.seed, mesh)
        result["runs"][name] = dict(r, reached=first_reaching(r["curve"], a.target), final_clean_accuracy=final,
                                    pgd7_accuracy=robust)
        print(f"[{name}] final clean {final:.4f}  PGD-7 {robust:.4f}", flush=True)
    print(markdown(result))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


def markdown(result: dict[str, Any]) -> str:
    t = result["target"]
    lines = [f"| run | steps to {t:.0%} clean | train s to {t:.0%} | final clean | PGD-7 (8/255) | "
             "train s (all steps) | first step (compile) s |", "|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        reach = r["reached"]
        extra = f" (+ teacher {result['teacher']['seconds']} s)" if name == "E-RSCT" else ""
        lines.append(f"| {name} | {reach['step'] if reach else 'not reached'} | "
                     f"{reach['train_seconds'] if reach else '-'} | {r['final_clean_accuracy']:.4f} | "
                     f"{r['pgd7_accuracy']:.4f} | {r['train_seconds']}{extra} | {r['first_step_seconds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
