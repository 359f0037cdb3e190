"""Cross-checks a run's reported worst case against torchattacks, an independent attack library.

The issue's acceptance check: "the exported models will also be attacked with an
independent, widely used attack implementation; the reported worst case must not be
higher than what that finds by more than its interval". torchattacks' APGD and Square
are ports of Croce and Hein's AutoAttack code and take ``eot_iter``. This script:

1. loads the export (``rsc_jax.export.load``) and the test images that ``robustness.json``
   attacked: the first ``n_examples`` of the run's test split (``evaluators.common.test_set``),
   the data set read with the run's own ``config.json`` beside ``robustness.json`` (or,
   without one, the export's data-set name with the whole test split);
2. wraps ``Classifier.logits`` as a ``torch.nn.Module`` (NCHW in, logits out). Every call
   of the module is one fresh coding draw: the key is ``fold_in(base, call)``, so
   APGD's ``eot_iter`` averages gradients of independent draws (EOT). Its backward is
   ``jax.vjp`` of the same draw (a ``torch.autograd.Function``; the VJP closure of the
   forward pass is kept, so forward and backward see the same key);
3. runs APGD-CE, APGD-DLR (Linf, ``--steps``, ``--eot_iter``, 1 restart, torch seed
   ``--seed``) and Square (``--n_queries``) at every ``config.strong_eps`` of the run;
4. judges the adversarial images with the package's own judge on the run's judge draws
   (``judging.example_keys(seed, i, stream=1)``, ``draws = judge_draws``): both sides
   are judged on the same coding draws, by the M-draw-averaged logits;
5. compares, per eps, our worst case (``worst_case[...]["acc_avg"]`` with ``ci95_avg``)
   with torchattacks' per-example worst over its attacks: "consistent" when ours <=
   theirs + half the width of our 95 % interval, else "ours is weaker". Where
   ``robustness.json`` carries per-example ``correct_avg`` strings it also gives the
   union (robust only if both sides leave the example correct) and the exact McNemar
   test between ours and theirs; and
6. writes ``--out`` (JSON) and prints one summary line.

Protocol (``--protocol``). torchattacks' ``perturb`` (``as-shipped``) attacks only the
examples that one noisy forward pass classifies correctly and returns the clean image for
every example on which no single draw was wrong: against a randomised classifier judged
on averaged logits that hands back clean images for examples a single unlucky draw
misclassified. ``every-example`` (the default) calls the same classes'
``attack_single_run`` on every example and keeps, per example, APGD's last iterate that
a draw misclassified, else its highest-loss iterate (Square: its best point). The
attack code is torchattacks' in both; only the final filter differs.

Run with a Python that has torch and torchattacks (they are not package dependencies)::

    python scripts/crosscheck_torchattacks.py --export=RUN/export \\
        --robustness=RUN/robustness.json --out=RUN/crosscheck.json

See docs/CROSSCHECK.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

STREAM_CRAFT = 7        # torchattacks' crafting keys: fold_in(fold_in(key(seed), 7), attack); ours use 0, 1, 2
STREAM_JUDGE = 1        # evaluators.robustness.STREAM_JUDGE: the clean row's draws (and old reports' worst case)
ATTACKS = ("apgd-ce", "apgd-dlr", "square")


# --------------------------------------------------------------------------- verdict (pure)

def verdict(ours_acc: float, ours_ci95: Sequence[float], theirs_acc: float) -> dict[str, Any]:
    """Whether our reported worst case is consistent with the independent attack's.

    Consistent when ``ours_acc <= theirs_acc + h``, h = half the width of our 95 %
    interval ``(hi - lo) / 2``: the independent attack may find more than ours by up to
    our own sampling uncertainty, not more.

    Returns:
      dict with ``verdict`` ("consistent" or "ours is weaker"), ``ours``, ``theirs``,
      ``half_width``, ``gap`` (ours - theirs) and ``allowed`` (theirs + h).
    """
    lo, hi = (float(v) for v in ours_ci95)
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"ours_ci95={tuple(ours_ci95)!r} is not allowed; need 0 <= lo <= hi <= 1")
    for name, v in (("ours_acc", ours_acc), ("theirs_acc", theirs_acc)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name}={v!r} is not allowed; an accuracy is in [0, 1]")
    h = (hi - lo) / 2.0
    ok = float(ours_acc) <= float(theirs_acc) + h + 1e-12
    return {"verdict": "consistent" if ok else "ours is weaker", "ours": float(ours_acc),
            "theirs": float(theirs_acc), "half_width": h, "gap": float(ours_acc) - float(theirs_acc),
            "allowed": float(theirs_acc) + h}


def unpack_correct(s: str) -> np.ndarray:
    """A ``correct_avg`` string of '0'/'1' as bools (``metrics.unpack_correct`` when present)."""
    from rsc_jax import metrics
    if hasattr(metrics, "unpack_correct"):
        return metrics.unpack_correct(s)
    if not isinstance(s, str) or not s or s.strip("01"):
        raise ValueError(f"correct string {str(s)[:40]!r} is not a non-empty string of 0s and 1s")
    return np.frombuffer(s.encode("ascii"), np.uint8) == ord("1")


def entry_judge(entry: dict[str, Any], draws: int) -> tuple[int, int]:
    """``(stream, draws)`` a worst-case entry of ``robustness.json`` was judged on: its
    ``judge`` field (the cascade's fresh report stream, ``evaluators.cascade.STREAM_REPORT``),
    else the judge stream and the report's ``judge_draws`` (reports written before it)."""
    j = entry.get("judge") or {}
    return int(j.get("stream", STREAM_JUDGE)), int(j.get("draws", draws))


def ours_per_example(report: dict[str, Any], entry: dict[str, Any]) -> np.ndarray | None:
    """Our per-example worst case at one eps (bools) from ``robustness.json``, or None.

    ``entry["correct_avg"]`` when the worst-case entry has it, else the per-example
    minimum over the ``correct_avg`` of the result rows it names; None when absent."""
    if isinstance(entry.get("correct_avg"), str):
        return unpack_correct(entry["correct_avg"])
    rows = [r for r in report.get("results", []) if r.get("name") in entry.get("attacks", ())
            and r.get("norm") == "linf" and abs(float(r.get("eps", -1)) - float(entry["eps"])) < 1e-12]
    if not rows or not all(isinstance(r.get("correct_avg"), str) for r in rows):
        return None
    return np.min(np.stack([unpack_correct(r["correct_avg"]) for r in rows]), 0)


def compare(ours_entry: dict[str, Any], theirs: dict[str, np.ndarray],
            ours_ex: np.ndarray | None) -> dict[str, Any]:
    """The comparison at one eps: ours (worst-case entry of ``robustness.json``) against
    the per-example worst over ``theirs`` (attack name -> bools [N])."""
    from rsc_jax import metrics
    names = list(theirs)
    worst = np.min(np.stack([np.asarray(theirs[k], bool) for k in names]), 0)
    n = int(worst.size)

    def acc(c: np.ndarray) -> dict[str, Any]:
        k = int(np.sum(c))
        return {"acc_avg": k / n, "correct": k, "ci95_avg": list(metrics.binomial_interval(k, n))}

    out: dict[str, Any] = {
        "eps": float(ours_entry["eps"]), "eps_255": float(ours_entry["eps"]) * 255, "n_examples": n,
        "ours": {"acc_avg": float(ours_entry["acc_avg"]), "ci95_avg": list(ours_entry["ci95_avg"]),
                 "attacks": list(ours_entry.get("attacks", []))},
        "theirs": {"per_attack": {k: acc(np.asarray(theirs[k], bool)) for k in names},
                   "worst": acc(worst), "attacks": names},
    }
    out["check"] = verdict(float(ours_entry["acc_avg"]), ours_entry["ci95_avg"], out["theirs"]["worst"]["acc_avg"])
    out["verdict"] = out["check"]["verdict"]
    if ours_ex is None:
        out["union"] = None
        out["mcnemar"] = None
        out["per_example_note"] = ("robustness.json has no per-example correct_avg (written before that field "
                                   "existed): no union and no McNemar test")
    else:
        if ours_ex.size != n:
            raise ValueError(f"robustness.json's correct_avg has {ours_ex.size} examples, the cross-check {n}")
        if abs(ours_ex.mean() - float(ours_entry["acc_avg"])) > 0.5 / n:     # acc_avg may be a float32
            raise ValueError("robustness.json's correct_avg does not match its acc_avg")
        out["union"] = acc(ours_ex & worst)
        # A = ours, B = theirs: b = robust under ours but broken by theirs (what ours missed).
        out["mcnemar"] = {**metrics.mcnemar_exact(ours_ex, worst),
                          "a": "ours", "b_means": "examples ours leaves correct and torchattacks breaks"}
    return out


def summary_line(result: dict[str, Any]) -> str:
    parts = []
    for c in result["comparisons"]:
        t = c["theirs"]["worst"]
        parts.append(f"eps={c['eps_255']:.3g}/255: ours {c['ours']['acc_avg']:.4f} "
                     f"[{c['ours']['ci95_avg'][0]:.3f}, {c['ours']['ci95_avg'][1]:.3f}] vs torchattacks "
                     f"{t['acc_avg']:.4f} [{t['ci95_avg'][0]:.3f}, {t['ci95_avg'][1]:.3f}]"
                     + (f", union {c['union']['acc_avg']:.4f}" if c.get("union") else "")
                     + (f", McNemar p={c['mcnemar']['p_value']:.3g}" if c.get("mcnemar") else "")
                     + f" -> {c['verdict']}")
    return f"crosscheck ({result['verdict']}): " + "; ".join(parts) + f" ({result['seconds']:.0f}s)"


# --------------------------------------------------------------------------- torch wrapper

def make_torch_model(logits_fn: Callable, key: Any) -> Any:
    """``logits_fn(key, x[B, H, W, C]) -> [B, classes]`` as a ``torch.nn.Module`` on NCHW.

    Call c of the module uses ``jax.random.fold_in(key, c)`` (``module.key_for(c)``;
    ``module.calls`` counts the calls): every call is a fresh coding draw. When the input
    needs a gradient, the forward pass is ``jax.vjp`` (jitted) and its closure is kept for
    the backward pass, so the gradient is that of the same draw. Batches are padded to a
    power of two (>= 8) before they reach JAX, so the key covers the padded batch: the
    module with a batch of 8 (or any power of two >= 8) is exactly
    ``logits_fn(module.key_for(c), x)``."""
    import jax
    import jax.numpy as jnp
    import torch

    fwd = jax.jit(lambda k, x: logits_fn(k, x).astype(jnp.float32))
    fwd_vjp = jax.jit(lambda k, x: jax.vjp(lambda xx: logits_fn(k, xx).astype(jnp.float32), x))
    apply_vjp = jax.jit(lambda f, g: f(g)[0])

    def to_nhwc(x: "torch.Tensor") -> np.ndarray:
        return np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32).transpose(0, 2, 3, 1))

    def pad(x: np.ndarray) -> tuple[np.ndarray, int]:
        """Zero rows up to a power of two (>= 8): torchattacks calls the model on shrinking
        subsets of the batch, and each new shape would compile again. The model treats
        examples independently (BatchNorm in inference mode), so the padding changes no
        real example's logits or gradient beyond which noise it draws."""
        b = len(x)
        m = max(8, 1 << (b - 1).bit_length())
        return (x if m == b else np.concatenate([x, np.zeros((m - b, *x.shape[1:]), x.dtype)])), b

    class _Logits(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, module):   # noqa: D401 (torch API)
            k = module.key_for(module.calls)
            module.calls += 1
            xn, b = pad(to_nhwc(x))
            if ctx.needs_input_grad[0]:
                out, vjp = fwd_vjp(k, xn)
                ctx.vjp = vjp
            else:
                out = fwd(k, xn)
            ctx.device, ctx.b, ctx.padded = x.device, b, len(xn)
            return torch.from_numpy(np.array(out, dtype=np.float32)[:b]).to(x.device)

        @staticmethod
        def backward(ctx, g):
            gn = np.zeros((ctx.padded, *g.shape[1:]), np.float32)
            gn[:ctx.b] = g.detach().cpu().numpy()
            gx = np.array(apply_vjp(ctx.vjp, gn), dtype=np.float32)[:ctx.b]
            ctx.vjp = None
            return torch.from_numpy(np.ascontiguousarray(gx.transpose(0, 3, 1, 2))).to(ctx.device), None

    class JaxLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # torchattacks reads the device from the first parameter
            self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
            self.key = key
            self.calls = 0

        def key_for(self, call: int):
            return jax.random.fold_in(self.key, call)

        def forward(self, x):
            if x.ndim != 4:
                raise ValueError(f"JaxLogits takes NCHW images; got shape {tuple(x.shape)}")
            return _Logits.apply(x, self)

    return JaxLogits()


# --------------------------------------------------------------------------- attacks

def run_attack(name: str, model: Any, x: np.ndarray, y: np.ndarray, eps: float, args: Any) -> np.ndarray:
    """torchattacks ``name`` on NHWC images ``x`` in [0, 1]; returns NHWC adversarial images."""
    import torch
    import torchattacks
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()
    yt = torch.from_numpy(np.asarray(y)).long()
    if name.startswith("apgd"):
        atk = torchattacks.APGD(model, norm="Linf", eps=float(eps), steps=args.steps, n_restarts=1,
                                seed=args.seed, loss=name.split("-")[1], eot_iter=args.eot_iter, rho=0.75)
    elif name == "square":
        atk = torchattacks.Square(model, norm="Linf", eps=float(eps), n_queries=args.n_queries, n_restarts=1,
                                  p_init=0.8, loss="margin", resc_schedule=True, seed=args.seed)
    else:
        raise ValueError(f"unknown attack {name!r}; one of {ATTACKS}")
    outs = []
    for s in range(0, len(xt), args.batch_size):
        xb, yb = xt[s:s + args.batch_size], yt[s:s + args.batch_size]
        if args.protocol == "as-shipped":
            adv = atk(xb, yb)
        else:
            torch.random.manual_seed(args.seed)   # as perturb() does before its restarts
            if name == "square":
                atk.init_hyperparam(xb)
                _, adv = atk.attack_single_run(xb, yb)
            else:
                x_best, acc, _, x_best_adv = atk.attack_single_run(xb, yb)
                fooled = (acc == 0).reshape(-1, 1, 1, 1)
                adv = torch.where(fooled, x_best_adv, x_best)
        outs.append(adv.detach().cpu().numpy())
    adv = np.concatenate(outs).transpose(0, 2, 3, 1).astype(np.float32)
    linf = float(np.max(np.abs(adv - x))) if len(x) else 0.0
    if linf > eps + 1e-5 or adv.min() < 0 or adv.max() > 1:
        raise RuntimeError(f"{name}: adversarial images leave the eps={eps} ball or [0, 1] (linf {linf})")
    return np.ascontiguousarray(adv)


def judge_fn(clf: Any, seed: int, draws: int, stream: int = STREAM_JUDGE) -> Callable:
    """The evaluator's judge: ``(idx, x, y) -> correct_avg`` on keys (seed, i, ``stream``)."""
    from rsc_jax import backend, judging

    @backend.jit
    def fn(idx, x, y):
        jk = judging.example_keys(seed, idx, stream=stream)
        return judging.judge(clf.logits, jk, x, y, draws=draws)["correct_avg"]
    return fn


def judge_all(fn: Callable, x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
    from rsc_jax import parallel
    out = parallel.map_examples(fn, [x, y], batch_size=batch_size, mesh=parallel.make_mesh(1))
    return np.asarray(out) > 0.5


# --------------------------------------------------------------------------- data

def load_test_set(clf: Any, report_path: str, run_config: str | None,
                  n_examples: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The first ``n_examples`` test images of the run (``common.run_test_set``), from
    ``run_config`` or the ``config.json`` beside ``report_path``."""
    from rsc_jax.evaluators import common
    src = run_config or os.path.join(os.path.dirname(os.path.abspath(report_path)), "config.json")
    return common.run_test_set(clf, src, n_examples)


# --------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", required=True, help="export directory (RUN/export)")
    p.add_argument("--robustness", required=True, help="the run's robustness.json")
    p.add_argument("--out", required=True, help="where to write crosscheck.json")
    p.add_argument("--run_config", default=None,
                   help="the run's config.json (data set); default: beside --robustness")
    p.add_argument("--steps", type=int, default=100, help="APGD steps")
    p.add_argument("--eot_iter", type=int, default=20, help="APGD EOT iterations per step")
    p.add_argument("--n_queries", type=int, default=1000, help="Square queries")
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated subset of {ATTACKS}")
    p.add_argument("--protocol", choices=("every-example", "as-shipped"), default="every-example",
                   help="every-example: attack_single_run on all examples (module docstring); "
                        "as-shipped: torchattacks' perturb filter")
    p.add_argument("--n_examples", type=int, default=-1,
                   help="first N of the examples robustness.json attacked (-1: all of them)")
    p.add_argument("--batch_size", type=int, default=256, help="examples per torchattacks call")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the attacks and crafting key")
    a = p.parse_args(argv)
    a.attacks = [s.strip() for s in a.attacks.split(",") if s.strip()]
    bad = [s for s in a.attacks if s not in ATTACKS]
    if bad or not a.attacks:
        p.error(f"--attacks={','.join(a.attacks)!r}: unknown {bad}; choose from {ATTACKS}")
    for k in ("steps", "eot_iter", "n_queries", "batch_size"):
        if getattr(a, k) < 1:
            p.error(f"--{k}={getattr(a, k)} is not allowed; must be >= 1")
    return a


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t0 = time.time()
    import jax
    import torch
    import torchattacks

    from rsc_jax import export, metrics

    with open(args.robustness) as f:
        report = json.load(f)
    rcfg = report["config"]
    seed, draws, n_rep = int(report["seed"]), int(report["judge_draws"]), int(report["n_examples"])
    n = n_rep if args.n_examples == -1 else min(args.n_examples, n_rep)
    clf = export.load(args.export)
    x, y, data_info = load_test_set(clf, args.robustness, args.run_config, n_rep)
    x, y = x[:n], y[:n]
    jb = int(rcfg.get("batch_size", 128))
    jfn = judge_fn(clf, seed, draws)

    # the clean images judged here must give robustness.json's clean row: same images, same draws
    clean = judge_all(jfn, x, y, jb)
    clean_row = next((r for r in report.get("results", []) if r.get("name") == "clean"), None)
    clean_check: dict[str, Any] = {"acc_avg_here": float(clean.mean())}
    if clean_row is not None:
        # the clean row covers its own n_examples (the standalone rows' subset: a prefix)
        n_row = int(clean_row.get("n_examples", n_rep))
        m = min(n, n_row)
        ref = unpack_correct(clean_row["correct_avg"])[:m] if isinstance(clean_row.get("correct_avg"), str) else None
        clean_check["examples_compared"] = m
        clean_check["acc_avg_report"] = float(clean_row["acc_avg"]) if m == n_row else (
            float(ref.mean()) if ref is not None else None)
        clean_check["per_example_equal"] = None if ref is None else bool(np.array_equal(ref, clean[:m]))
        # per example where the report has the strings; else the count (acc_avg is a float32)
        differs = (not clean_check["per_example_equal"]) if ref is not None else (
            clean_check["acc_avg_report"] is not None and abs(clean_check["acc_avg_report"] - clean[:m].mean()) > 0.5 / m)
        if differs:
            raise RuntimeError(f"clean accuracy here {clean[:m].mean():.6f} differs from robustness.json's "
                               f"{clean_check['acc_avg_report']:.6f}: not the same images or judge draws")

    comparisons, timings, judges = [], {}, {}
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    for e_i, entry in enumerate(report["worst_case"]):
        eps = float(entry["eps"])
        if not any(abs(eps - float(s)) < 1e-12 for s in rcfg["strong_eps"]):
            continue
        # both sides judged on the draws our worst case was judged on; robust means clean-correct
        # too where our union has the clean row, so theirs has it as well
        stream, e_draws = entry_judge(entry, draws)
        if (stream, e_draws) not in judges:
            judges[stream, e_draws] = judge_fn(clf, seed, e_draws, stream)
        efn = judges[stream, e_draws]
        theirs = {"clean": judge_all(efn, x, y, jb)} if "clean" in entry.get("attacks", ()) else {}
        for a_i, name in enumerate(args.attacks):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STREAM_CRAFT),
                                                        e_i), a_i)
            model = make_torch_model(clf.logits, key)
            t = time.time()
            adv = run_attack(name, model, x, y, eps, args)
            theirs[name] = judge_all(efn, adv, y, jb)
            timings[f"{name}@{eps * 255:.3g}/255"] = {"seconds": time.time() - t, "model_calls": model.calls}
            print(f"  {name} eps={eps * 255:.3g}/255: acc_avg {theirs[name].mean():.4f} "
                  f"({time.time() - t:.0f}s, {model.calls} model calls)", flush=True)
        ours_ex = ours_per_example(report, entry)
        if ours_ex is not None:
            ours_ex = ours_ex[:n]
        e = dict(entry)
        if n != n_rep:   # a prefix: our numbers from the per-example strings
            if ours_ex is None:
                raise ValueError("--n_examples below robustness.json's needs its per-example correct_avg")
            k = int(ours_ex.sum())
            e.update(acc_avg=k / n, ci95_avg=list(metrics.binomial_interval(k, n)))
        c = compare(e, theirs, ours_ex)
        c["judge"] = {"stream": stream, "draws": e_draws}
        comparisons.append(c)
    if not comparisons:
        raise ValueError(f"{args.robustness} has no worst_case entry at config.strong_eps={rcfg['strong_eps']}")

    result = {
        "verdict": "consistent" if all(c["verdict"] == "consistent" for c in comparisons) else "ours is weaker",
        "export": os.path.abspath(args.export), "robustness": os.path.abspath(args.robustness),
        "versions": {"torch": torch.__version__, "torchattacks": torchattacks.__version__, "jax": jax.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "settings": {"attacks": args.attacks, "protocol": args.protocol, "norm": "Linf",
                     "apgd": {"steps": args.steps, "eot_iter": args.eot_iter, "n_restarts": 1, "rho": 0.75},
                     "square": {"n_queries": args.n_queries, "p_init": 0.8, "loss": "margin", "n_restarts": 1},
                     "seed": args.seed, "batch_size": args.batch_size, "n_examples": n,
                     "crafting_keys": f"fold_in(fold_in(fold_in(key({seed}), {STREAM_CRAFT}), eps index), "
                                      "attack index), folded with the call counter: one coding draw per call",
                     "judge": {"seed": seed, "stream": "each worst-case entry's (comparisons[i].judge); the "
                               f"clean check on stream {STREAM_JUDGE}", "draws": draws, "by": "correct_avg",
                               "batch_size": jb},
                     "rule": "consistent when ours <= theirs + (hi - lo) / 2 of our 95% interval"},
        "ours_preset": report.get("preset"), "data": data_info, "clean_check": clean_check,
        "comparisons": comparisons, "timings": timings, "device": str(jax.devices()[0]),
        "seconds": time.time() - t0,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(summary_line(result))
    return result


if __name__ == "__main__":
    main()
