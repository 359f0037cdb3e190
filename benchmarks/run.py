"""One entry point for every benchmark: ``python -m benchmarks.run --suite=all [--quick]``.

Suites: profile (per-layer conv and LIF formulations), overhead (spiking VGG-11 step vs
its ANN twin at batch 32*T, remat cost, SpikingJelly and PyTorch side by side),
memory (compiled temporary memory vs T with/without remat), attack (PGD-k with EOT-K
vs k*K forward+backward passes), certify (vs n batched forward passes; images/s at
n = 10,000), data (input pipeline vs training step). Every figure is the median and
[min-max] of interleaved repetitions in this one process; ratios are per-round.
Prints a table and writes JSON (``--out``, default benchmarks/results.json).

``--suite=gpu-aot --target=h100|a100-40gb|a100-80gb`` (not part of ``all``) compiles the
training, APGD and certification programs for a GPU on this machine, without one
(``benchmarks.gpu_aot``; needs jax's CUDA plugin, else one line says it is skipped);
it writes its JSON to ``--out`` (default benchmarks/results_gpu_aot_TARGET.json) and a
Markdown table beside it (.md).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common, jax_models as jm
from rsc_jax import backend

SUITES = ("profile", "overhead", "memory", "attack", "certify", "data")
AOT_SUITES = ("gpu-aot",)      # not in "all": needs jax's CUDA plugin
ROWS: list[tuple[str, str, str]] = []   # (figure, value, target)


def row(name: str, value: str, target: str = "") -> None:
    ROWS.append((name, value, target))
    print(f"  {name:62s} {value:34s} {target}", flush=True)


# --------------------------------------------------------------------------- profile

def suite_profile(a) -> dict:
    """Per-layer forward+backward of each VGG-11 conv, lax's direct conv compiled with
    XLA's defaults vs the models' conv (conv_formulations) compiled with the package's options
    (rsc_jax.backend), and the LIF scan (unroll 1) vs the unrolled one, at batch 32*T
    (T = 4)."""
    from jax import lax
    from benchmarks.conv_paths import lax_conv as direct
    from rsc_jax import neurons
    from rsc_jax.models import conv_formulations as cf
    N = 32 * 4
    shapes = [(32, 3, 64), (16, 64, 128), (8, 128, 256), (8, 256, 256), (4, 256, 512), (4, 512, 512),
              (2, 512, 512), (2, 512, 512)]
    out = {"conv": [], "lif": []}

    def chosen(x, k):
        dn = lax.conv_dimension_numbers(x.shape, k.shape, cf.NHWC_HWIO)
        return cf.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn)
    seen = set()
    for i, (s, ci, co) in enumerate(shapes):
        if (s, ci, co) in seen:
            continue
        seen.add((s, ci, co))
        x = jax.random.normal(jax.random.key(0), (N, s, s, ci))
        k = jax.random.normal(jax.random.key(1), (3, 3, ci, co)) * 0.05
        fns = {}
        for nm, f, jit in (("direct", direct, jax.jit), ("chosen", chosen, backend.jit)):
            g = jit(jax.value_and_grad(lambda x, k, f=f: (f(x, k) ** 2).sum(), argnums=(0, 1)))
            fns[nm] = functools.partial(lambda g, x, k: jax.block_until_ready(g(x, k)), g, x, k)
        t = common.interleave(fns, a.reps)
        rec = {"map": s, "cin": ci, "cout": co, **{n: common.stats(v) for n, v in t.items()}}
        out["conv"].append(rec)
        row(f"conv {s}x{s} {ci}->{co} fwd+bwd lax+XLA defaults / chosen+options (s)",
            f"{rec['direct']['median']:.3f} / {rec['chosen']['median']:.3f}")
    for T, shape in ((4, (32, 32, 32, 64)), (8, (32, 16, 16, 128))):
        x = jax.random.normal(jax.random.key(0), (T,) + shape)
        fns = {}
        for u in (1, True):
            g = backend.jit(jax.grad(lambda x, u=u: (neurons.lif(x, unroll=u) * x).sum()))
            fns[f"unroll={u}"] = functools.partial(lambda g, x: jax.block_until_ready(g(x)), g, x)
        t = common.interleave(fns, a.reps)
        out["lif"].append({"T": T, "shape": shape, **{n: common.stats(v) for n, v in t.items()}})
        row(f"LIF fwd+bwd T={T} {shape}: scan / unrolled (s)",
            f"{common.stats(t['unroll=1'])['median']:.3f} / {common.stats(t['unroll=True'])['median']:.3f}")
    return out


# --------------------------------------------------------------------------- overhead

def suite_overhead(a) -> dict:
    """Training step and inference at T = 4, 8: ours (SNN, SNN+remat, ANN at 32*T) and
    SpikingJelly / PyTorch (SNN, ANN at 32*T), all in one interleaved group per T."""
    out = {}
    try:
        import torch  # noqa: F401
        from benchmarks import torch_models as tm
    except ImportError:
        tm = None
        print("  (torch not installed: PyTorch / SpikingJelly columns skipped)")
    B = 32
    for T in a.Ts:
        fns = {}
        clf = jm.classifier(T=T)
        step, st = jm.train_step(clf)
        fns["jax_snn_step"] = jm.runner(step, st, jm.batch(clf, B))
        step, st = jm.train_step(clf, xla_defaults=True)
        fns["jax_snn_step_xla_defaults"] = jm.runner(step, st, jm.batch(clf, B))
        clf_r = jm.classifier(T=T, remat=True)
        step, st = jm.train_step(clf_r)
        fns["jax_snn_remat_step"] = jm.runner(step, st, jm.batch(clf_r, B))
        ann = jm.classifier(spiking=False)
        step, st = jm.train_step(ann)
        fns["jax_ann_step"] = jm.runner(step, st, jm.batch(ann, B * T))
        fns["jax_snn_infer"] = jm.inference(clf, B)
        fns["jax_snn_infer_xla_defaults"] = jm.inference(clf, B, xla_defaults=True)
        if tm is not None:
            net = tm.spiking_vgg11()
            x, y = tm.inputs(T, B)
            fns["sj_snn_step"] = tm.train_runner(net, x, y)
            fns["sj_snn_infer"] = tm.infer_runner(tm.spiking_vgg11(), x)
            xa, ya = tm.inputs(None, B * T)
            fns["torch_ann_step"] = tm.train_runner(tm.ann_vgg11(), xa, ya)
            sj = "spikingjelly" if net.uses_spikingjelly else "torch-lif (SpikingJelly not installed)"
        t = common.interleave(fns, a.reps)
        rec = {"T": T, "B": B, "times": {k: common.stats(v) for k, v in t.items()}, "raw": t}
        rec["overhead"] = common.ratio(t, "jax_snn_step", "jax_ann_step")
        rec["remat_time_ratio"] = common.ratio(t, "jax_snn_remat_step", "jax_snn_step")
        rec["options_train"] = common.ratio(t, "jax_snn_step", "jax_snn_step_xla_defaults")
        rec["options_infer"] = common.ratio(t, "jax_snn_infer", "jax_snn_infer_xla_defaults")
        for k, v in rec["times"].items():
            row(f"T={T} {k} (s)", common.fmt(v))
        row(f"T={T} spiking overhead: ours SNN step / ours ANN step @{B * T}", common.fmt(rec["overhead"]), "<= 1.10")
        row(f"T={T} remat step / plain step", common.fmt(rec["remat_time_ratio"]), "<= 1.4")
        row(f"T={T} SNN step / same step with XLA's default CPU options", common.fmt(rec["options_train"]))
        row(f"T={T} SNN inference / same with XLA's default CPU options", common.fmt(rec["options_infer"]))
        if tm is not None:
            rec["reference"] = sj
            rec["sj_overhead"] = common.ratio(t, "sj_snn_step", "torch_ann_step")
            rec["vs_sj_train"] = common.ratio(t, "jax_snn_step", "sj_snn_step")
            rec["vs_sj_infer"] = common.ratio(t, "jax_snn_infer", "sj_snn_infer")
            rec["ann_vs_torch"] = common.ratio(t, "jax_ann_step", "torch_ann_step")
            row(f"T={T} {sj} overhead: SNN step / torch ANN step", common.fmt(rec["sj_overhead"]))
            row(f"T={T} ours / SpikingJelly, training step", common.fmt(rec["vs_sj_train"]), "<= 1.0")
            row(f"T={T} ours / SpikingJelly, inference", common.fmt(rec["vs_sj_infer"]), "<= 1.0")
            row(f"T={T} ours ANN / torch ANN, training step", common.fmt(rec["ann_vs_torch"]))
        out[f"T{T}"] = rec
    return out


# --------------------------------------------------------------------------- memory

def suite_memory(a) -> dict:
    out = {}
    for T in a.mem_Ts:
        plain = jm.temp_bytes(jm.classifier(T=T), 32)
        remat = jm.temp_bytes(jm.classifier(T=T, remat=True), 32)
        out[f"T{T}"] = {"T": T, "plain_bytes": plain, "remat_bytes": remat, "ratio": remat / plain}
        row(f"T={T} temp memory MiB: plain / remat (ratio)",
            f"{plain / 2**20:.0f} / {remat / 2**20:.0f} ({remat / plain:.2f})", "<= 0.5 at T=4,8")
    return out


# --------------------------------------------------------------------------- attack

def _attack_case(a, name, clf, B, k, K, *, unrolled: bool = True) -> dict:
    from rsc_jax import attacks, judging
    b = jm.batch(clf, B)
    x, y = b["image"], b["label"]
    fn = clf.logits
    # Unrolled, loop and default forms side by side; the default (unroll=None) unrolls
    # everything on the CPU up to backend.AUTO_UNROLL_MAX gradients, else loops over the
    # steps with the draws unrolled (K <= AUTO_UNROLL_MAX). Long attacks skip the fully
    # unrolled form (what the default avoids: k*K-fold compile time). The target is shown
    # on the row of the form the default runs.
    forms = {"pgd": True, "pgd_loop": False} if unrolled else {"pgd_loop": False}
    if backend.should_unroll(None, k * K):
        default = "unrolled"
    elif backend.should_unroll(None, K):
        default = "steps loop, draws unrolled"
        forms["pgd_default"] = None
    else:
        default = "loops"
    keys = judging.per_example_keys(jax.random.key(0), B)
    fb = backend.jit(lambda keys, x, y: attacks.loss_grad(fn, keys, x, y))
    fns = {}
    for form, unroll in forms.items():
        f = backend.jit(functools.partial(attacks.pgd, fn, steps=k, eot=K, unroll=unroll))
        fns[form] = functools.partial(lambda f: jax.block_until_ready(f(jax.random.key(0), x, y)), f)
    from rsc_jax import apgd
    fa = backend.jit(functools.partial(apgd.apgd, fn, steps=k, eot=K, loss="ce"))
    fns["apgd"] = lambda: jax.block_until_ready(fa(jax.random.key(0), x, y))
    fns["fwd_bwd"] = lambda: jax.block_until_ready(fb(keys, x, y))
    t = common.interleave(fns, a.reps)
    out = {"B": B, "k": k, "K": K, "default": default, "times": {n: common.stats(v) for n, v in t.items()}}
    if unrolled:
        out["ratio"] = common.ratio(t, "pgd", "fwd_bwd", scale=k * K)
        row(f"attack {name} B={B}: PGD-{k} EOT-{K} unrolled / ({k * K} x fwd+bwd)", common.fmt(out["ratio"]),
            "<= 1.2" if default == "unrolled" else "")
    out["ratio_loops"] = common.ratio(t, "pgd_loop", "fwd_bwd", scale=k * K)
    row(f"attack {name} B={B}: PGD-{k} EOT-{K} in lax loops / ({k * K} x fwd+bwd)", common.fmt(out["ratio_loops"]),
        "<= 1.2" if default == "loops" else "")
    # APGD evaluates its objective (loss and gradient) once at the start and once per step.
    out["ratio_apgd"] = common.ratio(t, "apgd", "fwd_bwd", scale=(k + 1) * K)
    row(f"attack {name} B={B}: APGD-CE {k} steps EOT-{K} (default form) / ({(k + 1) * K} x fwd+bwd)",
        common.fmt(out["ratio_apgd"]), "<= 1.2")
    if "pgd_default" in forms:
        out["ratio_default"] = common.ratio(t, "pgd_default", "fwd_bwd", scale=k * K)
        row(f"attack {name} B={B}: PGD-{k} EOT-{K} default ({default}) / ({k * K} x fwd+bwd)",
            common.fmt(out["ratio_default"]), "<= 1.2")
    return out


def suite_attack(a) -> dict:
    out = {"digits_convnet": _attack_case(a, "digits convnet T=4", jm.classifier("convnet", dataset=jm.DIGITS), 64, 5, 4)}
    if not a.quick:
        out["vgg11"] = _attack_case(a, "VGG-11 T=4", jm.classifier(T=4), 8, 3, 2)
        out["vgg11_long"] = _attack_case(a, "VGG-11 T=4", jm.classifier(T=4), 8, 10, 2, unrolled=False)
    return out


# --------------------------------------------------------------------------- certify

def _certify_case(a, name, clf, B, n, batch) -> dict:
    from rsc_jax import certify, parallel
    x = jm.batch(clf, B)["image"]
    T = clf.config["coding"]["T"]
    pred = lambda: certify.predict(clf.logits, jax.random.key(0), x, n=n, alpha=0.001, batch=batch)
    one = parallel.per_example(clf.logits)
    keys = jax.vmap(lambda i: jax.random.split(jax.random.key(i), batch))(jnp.arange(B))   # [B, batch]
    fwd = backend.jit(lambda keys, x: jax.vmap(one, in_axes=(1, None))(keys, x))
    fns = {"predict": pred, "fwd": lambda: jax.block_until_ready(fwd(keys, x))}
    t = common.interleave(fns, a.reps)
    chunks = -(-n // batch)
    r = common.ratio(t, "predict", "fwd", scale=chunks)
    ips = common.stats([B / v * (n / 10_000) for v in t["predict"]])
    row(f"certify {name} B={B} n={n}: predict / (n/{batch} batched fwd)", common.fmt(r), "<= 1.2")
    row(f"certify {name}: images/s at n=10,000" + ("" if n == 10_000 else f" (from n={n}, linear in n)"),
        common.fmt(ips, digits=3))
    return {"B": B, "n": n, "batch": batch, "T": T, "ratio": r, "images_per_s_at_n10000": ips,
            "times": {k: common.stats(v) for k, v in t.items()}}


def suite_certify(a) -> dict:
    out = {"digits_convnet": _certify_case(a, "digits convnet T=4", jm.classifier("convnet", dataset=jm.DIGITS),
                                           8, 2000 if a.quick else 10_000, 100)}
    out["vgg11"] = _certify_case(a, "VGG-11 T=4", jm.classifier(T=4), 1, 100 if a.quick else 400, 50)
    return out


# --------------------------------------------------------------------------- data

def suite_data(a) -> dict:
    """data.train_batch (+ prefetch thread, + host->device put) vs the training step it feeds."""
    from rsc_jax import data
    rng = np.random.default_rng(0)
    n = 10_000
    src = data.ArraySource(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                           rng.integers(0, 10, n).astype(np.int32))
    ds = data.Dataset("bench32", src, src, 10, (32, 32, 3), tuple(jm.CIFAR["mean"]), tuple(jm.CIFAR["std"]))
    B, T = 32, 4
    counter = iter(range(10**9))

    def make():
        b = data.train_batch(ds, step=next(counter), batch_size=B, seed=0, augment=True)
        b["index"] = np.arange(B, dtype=np.int32)
        jax.block_until_ready(jax.device_put(b))
    clf = jm.classifier(T=T)
    step, st = jm.train_step(clf)
    fns = {"batch": make, "step": jm.runner(step, st, jm.batch(clf, B))}
    t = common.interleave(fns, a.reps)
    r = common.ratio(t, "batch", "step")
    row(f"data: CIFAR-like batch {B} (crop+flip+put) / VGG-11 T={T} step", common.fmt(r), "< 1")
    row("data: batch (s)", common.fmt(common.stats(t["batch"])))
    return {"B": B, "T": T, "times": {k: common.stats(v) for k, v in t.items()}, "ratio": r}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="all", help=f"all or a comma list of {SUITES}")
    p.add_argument("--quick", action="store_true", help="fewer repetitions, fewer T values, smaller n")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results.json; gpu-aot: "
                                               "benchmarks/results_gpu_aot_TARGET.json)")
    p.add_argument("--target", default="h100", help="gpu-aot: h100, a100-40gb, a100-80gb or a GpuTargetConfig .txtpb")
    p.add_argument("--models", default="vgg11,resnet19", help="gpu-aot: comma list of models")
    p.add_argument("--dtype", default="float32", help="gpu-aot: model dtype (float32 or bfloat16)")
    a = p.parse_args(argv)
    if a.suite in AOT_SUITES:
        return _aot_main(p, a, argv)
    a.out = a.out or "benchmarks/results.json"
    a.reps = a.reps or (3 if a.quick else 7)
    a.Ts = (4,) if a.quick else (4, 8)
    a.mem_Ts = (1, 4) if a.quick else (1, 2, 4, 8, 16)
    suites = SUITES if a.suite == "all" else tuple(s.strip() for s in a.suite.split(","))
    for s in suites:
        if s not in SUITES:
            p.error(f"--suite={s!r} is not known; allowed: all or {SUITES}, or alone {AOT_SUITES}")
    res = {"machine": common.machine(), "command": "python -m benchmarks.run " + " ".join(argv or __import__("sys").argv[1:]),
           "reps": a.reps, "quick": a.quick, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(res["machine"])
    for s in suites:
        print(f"== {s}", flush=True)
        t0 = time.time()
        res[s] = globals()[f"suite_{s}"](a)
        res[s]["_wall_s"] = time.time() - t0
    res["table"] = [{"figure": f, "value": v, "target": t} for f, v, t in ROWS]
    common.write_json(a.out, res)
    print("\n| figure | median [min-max] | target |\n|---|---|---|")
    for f, v, t in ROWS:
        print(f"| {f} | {v} | {t} |")
    print(f"\nwrote {a.out}")
    return res


def _aot_main(p: argparse.ArgumentParser, a: argparse.Namespace, argv) -> dict:
    """``--suite=gpu-aot``: one line and nothing else without the CUDA plugin."""
    import os
    import sys
    from benchmarks import gpu_aot
    from rsc_jax import models
    try:
        gpu_aot.read_target(a.target)
    except (ValueError, OSError) as e:
        p.error(str(e))
    for m in a.models.split(","):
        if m not in models.names():
            p.error(f"--models: {m!r} is not allowed; allowed: {', '.join(models.names())}")
    if a.dtype not in ("float32", "bfloat16"):
        p.error(f"--dtype={a.dtype!r} is not allowed; allowed: float32, bfloat16")
    missing = gpu_aot.cuda_plugin_missing()
    if missing:
        print(missing)
        return {"skipped": missing}
    res = {"command": "python -m benchmarks.run " + " ".join(argv or sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "jax": jax.__version__,
           **gpu_aot.run_suite(a.target, models=tuple(a.models.split(",")), Ts=(1, 4) if a.quick else (1, 4, 8),
                               Bs=(32,) if a.quick else (32, 128), dtype=a.dtype)}
    tag = os.path.splitext(os.path.basename(a.target))[0] + ("" if a.dtype == "float32" else f"_{a.dtype}")
    out = a.out or f"benchmarks/results_gpu_aot_{tag}.json"
    common.write_json(out, res)
    md = gpu_aot.markdown(res)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(f"`{res['command']}` ({res['date']}, jax {res['jax']})\n\n{md}\n")
    print("\n" + md + f"\n\nwrote {out} and {os.path.splitext(out)[0]}.md")
    return res


if __name__ == "__main__":
    main()
