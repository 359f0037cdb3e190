r"""E-RSCT against plain RSC training from the same initialisation, with its ablation.

    python scripts/ersct_study.py --config=configs/digits.py --target=0.9 --out=runs/ersct_digits.json
    python scripts/ersct_study.py --config=configs/mnist_subset.py --target=0.95 --out=runs/ersct_mnist.json
    python scripts/ersct_study.py --config=configs/digits.py --arms=plain_teacher_init,ersct --steps=100
    python scripts/ersct_study.py --pool runs/ersct/digits_seed0.json runs/ersct/digits_seed1.json ...

For one data set, with the same seed, batch order, coding noise, sigma, T, optimiser and
number of steps in every arm:

1. trains the ANN teacher (``distill.teacher_config``: clean images, ReLU, T = 1) with
   ``train.train`` (timed: the teacher is part of E-RSCT's cost), unless only
   ``plain_scratch`` runs;
2. trains the RSC-SNN once per arm (``ARMS``) with the project's jitted step
   (``train.make_train_step``):

   - ``plain_scratch``: cross-entropy from a fresh initialisation (plain RSC training);
   - ``plain_teacher_init``: cross-entropy from the teacher's weights
     (``distill.student_init``: the same initial variables as E-RSCT);
   - ``ersct``: the E-RSCT loss (``distill.distillation_loss``: CE + alpha KD + beta
     L_pre, the config's alpha, tau_kd, beta) from the teacher's weights;
   - ``kd_only``: E-RSCT with beta = 0 (no alignment term), from the teacher's weights;
   - ``align_only``: E-RSCT with alpha = 0 (no KD term), from the teacher's weights;

   evaluating the clean accuracy (one coding draw, the first ``eval_examples`` test
   images, the same draw per image in every arm) before the first step and every
   ``eval_every`` steps; evaluation time is not counted in the training wall-clock,
   and the first step (which includes the XLA compilation) is reported apart as
   ``first_step_seconds``;
3. reports per arm the steps and training seconds to reach ``target`` clean accuracy
   (``reached``: first evaluated step at or above it; ``stays_from``: first step after
   which it never drops below again), the final clean accuracy on the whole test set and the PGD-7 robust accuracy (l_inf
   eps 8/255, step 2/255, random start, K = 1, judged on one fresh draw; the first
   ``attack_examples`` test images), each with its exact 95 % Clopper-Pearson interval
   (``metrics.binomial_interval``) and its per-example correctness
   (``metrics.pack_correct`` strings, "1" = correct, in test-set order);
4. compares arms pairwise on the same images with the exact McNemar test
   (``metrics.mcnemar_exact``; ``COMPARISONS``), clean and PGD-7, and the steps to the
   target of ``ersct`` vs ``plain_teacher_init``; each claim gets a verdict (``verdict``).

Verdict rule: a claim "A is more accurate than B" **holds** only if the paired test
rejects equal accuracy (p < 0.05) with A right more often where they differ (b > c),
**does not hold** if it rejects with B right more often, and is **inconclusive**
otherwise. "E-RSCT reaches the target in fewer steps than plain training from the same
initialisation" is one run per arm, so its test is the McNemar test of the two arms'
eval-set correctness at the first evaluated step where either arm reached the target
(a step at which the arm that reached it is ahead), with the same rule.

JSON: ``runs[arm]`` keeps the keys ``scripts/results.py`` reads (``curve`` with ``step``,
``train_seconds``, ``clean_accuracy``; ``reached``; ``final_clean_accuracy``;
``pgd7_accuracy``; ``train_seconds``) and adds the intervals, the correctness strings
and the arm's loss settings; ``comparisons`` and ``steps_to_target`` hold the tests.

``--pool`` runs nothing: it reads study JSONs of one data set and different seeds and
prints each comparison pooled over the seeds (``pooled``: ``verdicts.paired_test`` on the
concatenated correctness, each seed's own test beside it, ``verdicts.decide``'s rules, so
a seed that rejects the other way makes a pooled "holds" inconclusive).

Timings are wall-clock on whatever machine runs it (here: 2 shared CPU cores), compile
excluded (``first_step_seconds``); compare runs of one invocation only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                    # scripts/verdicts.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import verdicts as vd  # noqa: E402
from rsc_jax import attacks, backend, classifier, config, data, distill, judging, metrics, parallel, train  # noqa: E402

# arm -> (loss, initialisation, overrides of config.distill for the E-RSCT loss)
ARMS: dict[str, dict[str, Any]] = {
    "plain_scratch": {"loss": "ce", "init": "scratch", "distill": {}},
    "plain_teacher_init": {"loss": "ce", "init": "teacher", "distill": {}},
    "ersct": {"loss": "ersct", "init": "teacher", "distill": {}},
    "kd_only": {"loss": "ersct", "init": "teacher", "distill": {"beta": 0.0}},
    "align_only": {"loss": "ersct", "init": "teacher", "distill": {"alpha": 0.0}},
}
# name -> (A, B, claim "A more accurate than B", note)
COMPARISONS: dict[str, tuple[str, str, str, str]] = {
    "ersct_vs_plain_teacher_init": (
        "ersct", "plain_teacher_init", "E-RSCT is more accurate than plain training from the same (teacher) "
        "initialisation", "controlled: same initialisation, only the loss differs"),
    "ersct_vs_plain_scratch": (
        "ersct", "plain_scratch", "E-RSCT is more accurate than plain training from scratch",
        "confounded by initialisation: E-RSCT starts from the teacher's weights, plain from a fresh init"),
    "ersct_vs_kd_only": (
        "ersct", "kd_only", "adding the alignment term to KD makes the student more accurate",
        "ablation: both terms vs KD only (beta = 0), same initialisation"),
    "ersct_vs_align_only": (
        "ersct", "align_only", "adding the KD term to the alignment makes the student more accurate",
        "ablation: both terms vs alignment only (alpha = 0), same initialisation"),
}


def load_config(path: str):
    return config.call_file(path)


def make_eval(clf_config: dict[str, Any], seed: int):
    """Jitted ``(variables, idx, x, y) -> correct [B]``: one coding draw per example,
    keyed by the example's index (the same draw for every arm)."""
    clf = classifier.Classifier(clf_config, None)
    key = jax.random.fold_in(jax.random.key(seed), 3)

    @backend.jit
    def fn(variables, idx, x, y):
        logits = clf.apply(variables, parallel.example_keys(key, idx), x)
        return jnp.argmax(logits, -1) == y
    return fn


def correct(fn, variables, x: np.ndarray, y: np.ndarray, batch: int, mesh) -> np.ndarray:
    """Per-example correctness ``[N]`` (bool) of ``fn`` (``make_eval``) on ``x, y``."""
    return np.asarray(parallel.map_examples(lambda i, xb, yb: fn(variables, i, xb, yb), [x, y],
                                            batch_size=batch, mesh=mesh), bool)


def make_pgd7(clf_config: dict[str, Any], seed: int):
    """Jitted ``(variables, idx, x, y) -> correct [B]`` under PGD-7 (eps 8/255, step
    2/255, random start, K = 1), judged on a fresh draw."""
    clf = classifier.Classifier(clf_config, None)

    @backend.jit
    def fn(variables, idx, xb, yb):
        def logits(k, x):
            return clf.apply(variables, k, x)
        keys = judging.example_keys(seed, idx, stream=0)
        xa = attacks.pgd(logits, keys, xb, yb, eps=8 / 255, step_size=2 / 255, steps=7)
        return judging.judge(logits, judging.example_keys(seed, idx, stream=1), xa, yb, draws=1)["correct_first"] > 0.5
    return fn


def counted(c: np.ndarray) -> dict[str, Any]:
    """Accuracy of a correctness vector with its exact 95 % interval and the vector."""
    k, n = int(c.sum()), int(c.size)
    lo, hi = metrics.binomial_interval(k, n)
    return {"accuracy": k / n, "k": k, "n": n, "ci95": [lo, hi], "correct": metrics.pack_correct(c)}


def run_one(name: str, cfg, ds, clf_config: dict[str, Any], loss_fn, init, loss_inputs, *, total: int,
            eval_every: int, ev, eval_x, eval_y, eval_batch: int, mesh) -> dict[str, Any]:
    """Trains ``total`` steps with the jitted step; returns the curve and the variables
    before the first step (``initial``) and after the last (``variables``).

    ``init``: host (NumPy) variables, copied onto the devices here (the step donates its
    state, so every arm gets its own buffers). The curve has a point at step 0 (the
    initialisation) and every ``eval_every`` steps, each with the eval-set correctness."""
    tc = cfg.train
    tx = train.make_optimizer(tc, total)
    root = jax.random.key(cfg.seed)
    v = jax.tree.map(jnp.array, init)
    state = parallel.replicate(train.init_state(v, tx), mesh)
    initial = jax.tree.map(lambda a: np.array(a, copy=True),        # a copy: the step donates the state
                           {"params": state["params"], "batch_stats": state["batch_stats"]})
    step = train.make_train_step(loss_fn, tx, jax.random.fold_in(root, train.NOISE_STREAM))
    extra = () if loss_inputs is None else (parallel.replicate(loss_inputs, mesh),)
    index = np.arange(tc.batch_size, dtype=np.int32)
    curve, seconds, first = [], 0.0, 0.0

    def evaluate(s: int, loss: float | None) -> None:
        c = correct(ev, {"params": state["params"], "batch_stats": state["batch_stats"]}, eval_x, eval_y,
                    eval_batch, mesh)
        curve.append({"step": s, "train_seconds": round(seconds, 2), "clean_accuracy": float(c.mean()),
                      "loss": loss, "correct": metrics.pack_correct(c)})
        print(f"[{name}] step {s}/{total}  {seconds:.1f}s  acc {c.mean():.4f}"
              + ("" if loss is None else f"  loss {loss:.4f}"), flush=True)

    evaluate(0, None)
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
            evaluate(s + 1, float(m["loss"]))
    variables = jax.device_get({"params": state["params"], "batch_stats": state["batch_stats"]})
    return {"curve": curve, "train_seconds": round(seconds, 2), "first_step_seconds": round(first, 2),
            "steps": total, "initial": initial, "variables": variables}


def first_reaching(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    for r in curve:
        if r["clean_accuracy"] >= target:
            return {"step": r["step"], "train_seconds": r["train_seconds"]}
    return None


def stays_from(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluated step from which the accuracy stays >= ``target`` at every
    later evaluation (a curve that reaches the target and dips again is not there yet)."""
    out = None
    for r in curve:
        if r["clean_accuracy"] < target:
            out = None
        elif out is None:
            out = {"step": r["step"], "train_seconds": r["train_seconds"]}
    return out


def verdict(test: dict[str, Any]) -> str:
    """The verdict of "A > B" from one paired test, by ``verdicts.decide``'s rules (the
    same as docs/RESULTS.md's): "holds" if it rejects (p < 0.05) with A ahead (b > c),
    "does not hold" if it rejects with B ahead, else "inconclusive"."""
    return vd.decide([dict(test, missing=False)], ">")[0]


def paired(a: str, b: str) -> dict[str, Any]:
    """McNemar (exact) of two packed correctness strings, with its verdict for "A > B"."""
    t = metrics.mcnemar_exact(metrics.unpack_correct(a), metrics.unpack_correct(b))
    return dict(t, verdict=verdict(t))


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``COMPARISONS`` whose two arms both ran: clean and PGD-7 McNemar tests."""
    out = {}
    for name, (a, b, claim, note) in COMPARISONS.items():
        if a in runs and b in runs:
            out[name] = {"a": a, "b": b, "claim": claim, "note": note,
                         "clean": paired(runs[a]["final_clean_correct"], runs[b]["final_clean_correct"]),
                         "pgd7": paired(runs[a]["pgd7_correct"], runs[b]["pgd7_correct"])}
    return out


def steps_to_target(runs: dict[str, dict[str, Any]], target: float, a: str = "ersct",
                    b: str = "plain_teacher_init") -> dict[str, Any] | None:
    """"A reaches ``target`` in fewer steps than B": the steps of each, and the McNemar
    test of their eval-set correctness at the first evaluated step where either reached
    it (both arms are evaluated at the same steps); None unless both ran."""
    if a not in runs or b not in runs:
        return None
    ra, rb = runs[a]["reached"], runs[b]["reached"]
    out: dict[str, Any] = {"a": a, "b": b, "target": target,
                           "claim": f"{a} reaches {target:.0%} clean accuracy in fewer steps than {b}",
                           "a_step": ra["step"] if ra else None, "b_step": rb["step"] if rb else None}
    if ra is None and rb is None:
        return dict(out, at_step=None, test=None, verdict="inconclusive (neither reached the target)")
    at = min(r["step"] for r in (ra, rb) if r is not None)
    ca = next(p["correct"] for p in runs[a]["curve"] if p["step"] == at)
    cb = next(p["correct"] for p in runs[b]["curve"] if p["step"] == at)
    t = paired(ca, cb)
    return dict(out, at_step=at, test=t, verdict=t["verdict"])


def pooled(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ``COMPARISONS`` entry whose arms ran in each study, on final clean and PGD-7
    accuracy, pooled over the studies (one per seed; ValueError if two share a seed or
    differ in data set): ``verdicts.paired_test`` (its b, c, p_value, per_seed) with
    ``arm_a``, ``arm_b`` and the verdict of ``verdicts.decide`` for "A > B"."""
    seeds = [s["seed"] for s in studies]
    if len(set(seeds)) != len(seeds) or len({s["config"] for s in studies}) != 1:
        raise ValueError(f"need one study per seed of one config; got seeds {seeds} of "
                         f"{sorted({s['config'] for s in studies})}")

    def arm(name: str) -> dict[int, dict[str, vd.Entry]]:
        return {s["seed"]: {m: vd.entry(s["runs"][name][f"{f}_accuracy"], len(s["runs"][name][f"{f}_correct"]),
                                        s["runs"][name][f"{f}_correct"])
                            for m, f in (("clean", "final_clean"), ("pgd7", "pgd7"))} for s in studies}
    ran = {x for a, b, _, _ in COMPARISONS.values() for x in (a, b) if all(x in s["runs"] for s in studies)}
    arms = {name: arm(name) for name in ran}
    out = []
    for name, (a, b, claim, note) in COMPARISONS.items():
        if a not in arms or b not in arms:
            continue
        for m in ("clean", "pgd7"):
            t = vd.paired_test(arms[a], arms[b], m)
            out.append(dict(t, comparison=name, arm_a=a, arm_b=b, claim=claim, note=note,
                            verdict=vd.decide([t], ">")[0]))
    return out


def pooled_markdown(studies: list[dict[str, Any]]) -> str:
    lines = ["| comparison (A vs B) | metric | seeds | acc A | acc B | b (A only) | c (B only) | McNemar p | "
             "per seed b:c (p) | verdict (A more accurate) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in pooled(studies):
        lines.append(f"| {t['arm_a']} vs {t['arm_b']} | {t['metric']} | {','.join(map(str, t['seeds']))} | "
                     f"{t['acc_a']:.4f} | {t['acc_b']:.4f} | {t['b']} | {t['c']} | {t['p_value']:.2g} | "
                     f"{vd.fmt_per_seed(t)} | {t['verdict']} |")
    steps = [(s["seed"], s.get("steps_to_target")) for s in studies]
    lines += ["", "Steps to the target (" + "; ".join(
        f"seed {seed}: {st['a']} {st['a_step']}, {st['b']} {st['b_step']}, {st['verdict']}"
        for seed, st in steps if st) + ")"]
    return "\n".join(lines)


def arm_configs(cfg, arms: list[str]):
    """``{arm: config}``: the study config with distillation on/off and the arm's
    overrides of ``config.distill`` (alpha, beta); teacher-initialised arms set
    ``init_from_teacher``."""
    out = {}
    for arm in arms:
        c = cfg.copy_and_resolve_references()
        spec = ARMS[arm]
        c.distill.enabled = spec["loss"] == "ersct"
        c.distill.init_from_teacher = spec["init"] == "teacher"
        for k, v in spec["distill"].items():
            c.distill[k] = v
        out[arm] = c
    return out


def run_study(cfg, *, arms: list[str] | None = None, target: float = 0.9, eval_every: int = 10,
              eval_examples: int = 500, attack_examples: int = 500, steps: int = 0,
              config_path: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The study on ``cfg`` (a resolved config). Returns ``(result, objects)``: the JSON
    result and, not serialisable, ``teacher`` (a classifier or None), ``initial`` and
    ``final`` (per arm, the variables on the devices before the first step and after
    the last, fetched to the host)."""
    arms = list(ARMS) if not arms else arms
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"--arms {unknown} are not arms of this study; choose from {list(ARMS)}")
    cfg = cfg.copy_and_resolve_references()
    cfg.distill.enabled = False
    cfgs = arm_configs(cfg, arms)
    ds = data.load(cfg)
    mesh = parallel.make_mesh(cfg.train.num_devices or None)
    x, y = data.test_arrays(ds)
    ex, ey = x[:eval_examples], y[:eval_examples]
    ax, ay = x[:attack_examples], y[:attack_examples]
    eb = cfg.eval.batch_size
    clf_config = train.classifier_config(cfg, ds)
    spe = data.steps_per_epoch(len(ds.train), cfg.train.batch_size)
    total = steps or cfg.train.epochs * spe

    teacher, tinfo, tvars, teacher_init = None, None, None, None
    if any(ARMS[a]["init"] == "teacher" or ARMS[a]["loss"] == "ersct" for a in arms):
        d_cfg = cfg.copy_and_resolve_references()
        d_cfg.distill.enabled = True
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tdir:
            teacher, tsum = train.train(distill.teacher_config(d_cfg), ds, tdir, mesh=mesh, progress=False)
        tsec = round(time.time() - t0, 2)
        tc = counted(correct(make_eval(teacher.config, cfg.seed), teacher.params, x, y, eb, mesh))
        tinfo = {"steps": tsum["steps"], "seconds": tsec, "clean_accuracy": tc["accuracy"],
                 "clean_ci95": tc["ci95"], "clean_correct": tc["correct"]}
        print(f"[teacher] {tsum['steps']} steps {tsec}s clean acc {tc['accuracy']:.4f}", flush=True)
        distill.check_compatible(clf_config, teacher.config, teacher.params,
                                 check_pre=any(ARMS[a]["loss"] == "ersct" and float(c.distill.beta) > 0
                                               for a, c in cfgs.items()))
        tvars = distill.teacher_variables(teacher)
        d_cfg.distill.init_from_teacher = True
        teacher_init, copied = distill.student_init(d_cfg, clf_config, teacher)
        teacher_init = jax.device_get(teacher_init)
        tinfo["leaves_copied"] = copied
    scratch_init = jax.device_get(classifier.init_variables(
        clf_config, jax.random.fold_in(jax.random.key(cfg.seed), train.INIT_STREAM)))

    ev, pgd = make_eval(clf_config, cfg.seed), make_pgd7(clf_config, cfg.seed)
    clf = classifier.Classifier(clf_config, None)
    result: dict[str, Any] = {
        "config": config_path, "seed": cfg.seed, "sigma": cfg.coding.sigma, "T": cfg.coding.T,
        "method": cfg.coding.method, "epochs": cfg.train.epochs, "steps": total, "target": target,
        "eval_every": eval_every, "eval_examples": len(ey), "test_examples": len(y),
        "attack_examples": len(ay), "devices": jax.device_count(), "alpha_test": vd.ALPHA,
        "arms": arms, "teacher": tinfo, "runs": {}}
    objects: dict[str, Any] = {"teacher": teacher, "initial": {}, "final": {}}
    for arm in arms:
        spec, c = ARMS[arm], cfgs[arm]
        init = teacher_init if spec["init"] == "teacher" else scratch_init
        if spec["loss"] == "ersct":
            loss_fn, inputs = distill.distillation_loss(clf, teacher.config, c.distill), tvars
        else:
            loss_fn, inputs = train.cross_entropy_loss(clf), None
        r = run_one(arm, c, ds, clf_config, loss_fn, init, inputs, total=total, eval_every=eval_every, ev=ev,
                    eval_x=ex, eval_y=ey, eval_batch=eb, mesh=mesh)
        objects["initial"][arm], objects["final"][arm] = r.pop("initial"), r.pop("variables")
        fin = counted(correct(ev, objects["final"][arm], x, y, eb, mesh))
        rob = counted(correct(pgd, objects["final"][arm], ax, ay, eb, mesh))
        dc = c.distill
        result["runs"][arm] = dict(
            r, loss=spec["loss"], init=spec["init"],
            ce=True if spec["loss"] == "ce" else bool(dc.ce),
            alpha=float(dc.alpha) if spec["loss"] == "ersct" else 0.0,
            beta=float(dc.beta) if spec["loss"] == "ersct" else 0.0,
            tau_kd=float(dc.tau_kd) if spec["loss"] == "ersct" else None,
            reached=first_reaching(r["curve"], target), stays_from=stays_from(r["curve"], target),
            final_clean_accuracy=fin["accuracy"], final_clean_k=fin["k"], final_clean_ci95=fin["ci95"],
            final_clean_correct=fin["correct"],
            pgd7_accuracy=rob["accuracy"], pgd7_k=rob["k"], pgd7_ci95=rob["ci95"], pgd7_correct=rob["correct"])
        print(f"[{arm}] final clean {fin['accuracy']:.4f} {fin['ci95']}  PGD-7 {rob['accuracy']:.4f} "
              f"{rob['ci95']}", flush=True)
    result["comparisons"] = compare(result["runs"])
    result["steps_to_target"] = steps_to_target(result["runs"], target)
    return result, objects


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/digits.py")
    ap.add_argument("--epochs", type=int, default=0, help="override train.epochs (0 = config's)")
    ap.add_argument("--steps", type=int, default=0,
                    help="student steps per arm (0 = epochs x steps per epoch); the schedule spans them")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {list(ARMS)}")
    ap.add_argument("--target", type=float, default=0.9, help="clean accuracy to reach")
    ap.add_argument("--eval_every", type=int, default=10)
    ap.add_argument("--eval_examples", type=int, default=500)
    ap.add_argument("--attack_examples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=-1, help="override the config's seed (-1 = config's)")
    ap.add_argument("--out", default="")
    ap.add_argument("--pool", nargs="+", default=None, metavar="JSON",
                    help="run nothing: pool these study JSONs (one per seed) and print the comparisons")
    a = ap.parse_args()
    if a.pool:
        studies = []
        for path in a.pool:
            try:
                with open(path) as f:
                    studies.append(json.load(f))
            except (OSError, ValueError) as e:
                raise SystemExit(f"--pool: cannot read {path}: {e}")
        try:
            print(pooled_markdown(studies))
        except KeyError as e:
            raise SystemExit(f"--pool: a study JSON lacks the field {e}; pass the --out files of this script")
        except ValueError as e:
            raise SystemExit(f"--pool: {e}")
        return

    cfg = load_config(a.config)
    if a.seed >= 0:
        cfg.seed = a.seed
    if a.epochs:
        cfg.train.epochs = a.epochs
    arms = [s.strip() for s in a.arms.split(",") if s.strip()]
    t0 = time.time()
    result, _ = run_study(cfg, arms=arms, target=a.target, eval_every=a.eval_every,
                          eval_examples=a.eval_examples, attack_examples=a.attack_examples, steps=a.steps,
                          config_path=a.config)
    result["wall_seconds"] = round(time.time() - t0, 1)
    print(markdown(result))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown(result: dict[str, Any]) -> str:
    """The arms table, the McNemar comparisons and the steps-to-target test."""
    t = result["target"]
    lines = [f"| arm | init | alpha | beta | clean at step 0 | steps to {t:.0%} clean | train s to {t:.0%} | "
             f"stays >= {t:.0%} from step | "
             f"final clean (n = {result['test_examples']}) [95 % CI] | "
             f"PGD-7 8/255 (n = {result['attack_examples']}) [95 % CI] | train s (all steps) | first step s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        reach, stay = r["reached"], stays_from(r["curve"], t)
        extra = f" (+ teacher {result['teacher']['seconds']} s)" if result.get("teacher") and r["loss"] == "ersct" \
            else ""
        lines.append(f"| {name} | {r['init']} | {r['alpha']:g} | {r['beta']:g} | "
                     f"{r['curve'][0]['clean_accuracy']:.4f} | {reach['step'] if reach else 'not reached'} | "
                     f"{reach['train_seconds'] if reach else '-'} | {stay['step'] if stay else 'never'} | "
                     f"{r['final_clean_accuracy']:.4f} "
                     f"{_ci(r['final_clean_ci95'])} | {r['pgd7_accuracy']:.4f} {_ci(r['pgd7_ci95'])} | "
                     f"{r['train_seconds']}{extra} | {r['first_step_seconds']} |")
    if result["comparisons"]:
        lines += ["", "| comparison (A vs B) | claim: A more accurate | metric | b (A only) | c (B only) | "
                  "diff | McNemar p | verdict |", "|---|---|---|---|---|---|---|---|"]
        for name, cmp in result["comparisons"].items():
            for m in ("clean", "pgd7"):
                s = cmp[m]
                lines.append(f"| {cmp['a']} vs {cmp['b']} ({cmp['note']}) | {cmp['claim']} | {m} | {s['b']} | "
                             f"{s['c']} | {s['diff']:+.4f} | {s['p_value']:.3g} | {s['verdict']} |")
    st = result.get("steps_to_target")
    if st:
        test = st["test"]
        lines += ["", f"Steps to {t:.0%}: {st['a']} {st['a_step']}, {st['b']} {st['b_step']}; "
                  + (f"paired test at step {st['at_step']} (eval set): b = {test['b']}, c = {test['c']}, "
                     f"p = {test['p_value']:.3g}; " if test else "") + f"verdict: {st['verdict']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
