r"""FLOP-based run-time estimates of the paper configs' one-command runs (no GPU needed).

    python scripts/estimate_runtime.py --out=runs/gpu_runtime.json          # ~35 s on 2 CPU cores
    python scripts/estimate_runtime.py --configs=cifar10_vgg11 --memory      # + XLA:CPU memory proxy

For each paper config the script builds the project's own jitted functions on abstract
inputs (``jax.ShapeDtypeStruct``: no data is read, nothing is compiled or run) and asks
XLA for their FLOPs with ``jax.jit(f).lower(...).cost_analysis()``:

- one training step at the config's global batch (``train.make_train_step`` with the
  cross-entropy loss, or for ``*_erst`` configs the E-RSCT loss with the frozen teacher's
  forward pass inside the step: the real step);
- one ANN-twin training step (the transfer-attack source that ``--mode=all`` trains, or
  the E-RSCT teacher);
- one forward pass, and one forward + backward input gradient (``attacks.loss_grad``, as
  each PGD/FGSM step calls it), of the spiking model at the attack batch size, per
  example; the same for the BPTR gradient variant and for the ANN twin (transfer attack).

Then it counts what ``python -m rsc_jax.main --config=configs/X.py --workdir=runs/X``
(``--mode=all``, ``pipeline.plan``) runs: training epochs x steps (+ the ANN twin or
the E-RSCT teacher, same epochs), evaluation (``eval.draws`` forward passes per test
image), the attack grid exactly as ``evaluators.attack_suite.jobs`` builds it from
``config.attack`` (forward and forward+backward passes per example for every job: FGSM,
PGD-7 over the eps grid, PGD-50, EOT-10, the surrogate ensemble with its selection and
judging, transfer, Square with 2 forward passes per query, the sanity PGD, the l2 grid,
the M judge draws of each job and the gradient check; batches padded as
``parallel.map_examples`` pads them) and certification (n0 + n forward passes per
certified image). FLOPs are converted to hours at ASSUMED sustained throughputs
(``HARDWARE``: a fixed fraction of the vendor's dense peak; several GPUs scale
linearly). These are estimates from FLOP counts, not measurements: no GPU was
available when they were made. Spiking networks spend much of their time in
memory-bound elementwise work (LIF, BatchNorm over T x B), so real utilisation may be
below the assumed 40 %; hours scale as 1 / utilisation.

XLA's cost analysis counts a ``while`` loop's body once, whatever its trip count; the
script therefore lowers only loop-free functions (the LIF scan is fully unrolled for
T <= 8) and fails if a ``while`` other than the PRNG's threefry rounds appears.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rsc_jax import attacks, classifier, config, config_checks, data, distill, judging, parallel, pipeline, train  # noqa: E402
from rsc_jax.evaluators import attack_suite, robustness  # noqa: E402

PAPER_CONFIGS: tuple[str, ...] = ("cifar10_vgg11", "cifar10_vgg11_erst", "cifar100_resnet19",
                                  "imagenet_sewresnet34", "imagenet_sewresnet34_erst")
# (train size, test size, image side) of the tfds splits the configs read.
SPLITS: dict[str, tuple[int, int, int]] = {"cifar10": (50_000, 10_000, 32), "cifar100": (50_000, 10_000, 32),
                                           "imagenet2012": (1_281_167, 50_000, 224)}
MFU = 0.40          # ASSUMED sustained fraction of the dense peak
# name -> (dense peak TFLOP/s, number of GPUs, precision the column applies to)
HARDWARE: dict[str, tuple[float, int, str]] = {
    "1x A100-80GB TF32": (156.0, 1, "fp32"),
    "1x A100-80GB bf16": (312.0, 1, "bf16"),
    "1x H100-SXM TF32": (494.7, 1, "fp32"),
    "1x H100-SXM bf16": (989.0, 1, "bf16"),
    "8x A100-80GB TF32": (156.0, 8, "fp32"),
    "8x H100-SXM TF32": (494.7, 8, "fp32"),
    "8x H100-SXM bf16": (989.0, 8, "bf16"),
}


# --------------------------------------------------------------------------- FLOPs


def _check_loops(lowered: Any, what: str) -> None:
    """Fails if the lowered module has a while loop outside the threefry PRNG functions
    (the cost analysis would count its body once, whatever its trip count)."""
    func = ""
    for line in lowered.as_text().splitlines():
        m = re.match(r"\s*func\.func\s+\S+\s+@([\w.$-]+)", line)
        if m:
            func = m.group(1)
        if "stablehlo.while" in line and "threefry" not in func:
            raise RuntimeError(f"{what}: the lowered module has a while loop in {func!r}; XLA's cost analysis "
                               "would count its body once. Lower a loop-free function instead.")


def flops_of(fn: Any, *args: Any, what: str) -> float:
    """FLOPs of ``jax.jit(fn)`` on abstract ``args`` from XLA's cost analysis (lowered, not compiled)."""
    lowered = (fn if hasattr(fn, "lower") else jax.jit(fn)).lower(*args)
    _check_loops(lowered, what)
    ca = lowered.cost_analysis()
    if isinstance(ca, (list, tuple)):          # older jax: one dict per computation
        return float(sum(c.get("flops", 0.0) for c in ca))
    return float(ca["flops"])


def sds(shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


def dataset(cfg: Any) -> data.Dataset:
    """A ``data.Dataset`` with the config's shapes and statistics but no records."""
    name = cfg.dataset.name
    side = SPLITS[name][2] if name != "imagenet2012" else (cfg.dataset.image_size or 224)
    mean, std = data.KNOWN_STATS[name]
    return data.Dataset(name, None, None, data.NUM_CLASSES[name], (side, side, 3), mean, std)


def train_step_flops(cfg: Any, ds: data.Dataset, batch: int) -> float:
    """FLOPs of one ``train.make_train_step`` step at global batch ``batch`` (E-RSCT loss and
    the teacher's forward pass included when ``distill.enabled``)."""
    _, state, extra, step = _step_parts(cfg, ds)
    b = {"image": sds((batch, *ds.image_shape)), "label": sds((batch,), jnp.int32),
         "index": sds((batch,), jnp.int32)}
    return flops_of(step, state, b, *extra, what=f"train step ({cfg.model.name})")


def _step_parts(cfg: Any, ds: data.Dataset):
    """(classifier, abstract state, extra step inputs, jitted step) as ``train.train`` builds them."""
    clf_config = train.classifier_config(cfg, ds)
    clf = classifier.Classifier(clf_config, None)
    tx = train.make_optimizer(cfg.train, 1000)
    key = jax.random.key(0)
    state = jax.eval_shape(lambda: train.init_state(classifier.init_variables(clf_config, key), tx))
    extra: tuple = ()
    if cfg.distill.enabled:
        tconf = train.classifier_config(distill.teacher_config(cfg), ds)
        loss = distill.distillation_loss(clf, tconf, cfg.distill)
        tv = jax.eval_shape(lambda: classifier.init_variables(tconf, key))
        extra = ({"params": tv["params"], "batch_stats": tv.get("batch_stats", {})},)
    else:
        loss = train.cross_entropy_loss(clf)
    return clf, state, extra, train.make_train_step(loss, tx, jax.random.key(1))


def pass_flops(clf_config: dict[str, Any], ds: data.Dataset, batch: int) -> dict[str, float]:
    """Per-example FLOPs of one forward pass and one forward+backward input gradient
    (``attacks.loss_grad``), both keyed per example as the attacks call them, at ``batch``."""
    clf = classifier.Classifier(clf_config, None)
    variables = jax.eval_shape(lambda: classifier.init_variables(clf_config, jax.random.key(0)))
    x, y, idx = sds((batch, *ds.image_shape)), sds((batch,), jnp.int32), sds((batch,), jnp.int32)

    def keys(i):
        return judging.example_keys(0, i, stream=robustness.STREAM_ATTACK)

    def fwd(v, i, xx):
        return parallel.per_example(lambda k, xi: clf.apply(v, k, xi))(keys(i), xx)

    def grad(v, i, xx, yy):
        return attacks.loss_grad(lambda k, xi: clf.apply(v, k, xi), keys(i), xx, yy)

    name = clf_config["model"]["name"]
    return {"forward": flops_of(fwd, variables, idx, x, what=f"forward ({name})") / batch,
            "grad": flops_of(grad, variables, idx, x, y, what=f"input gradient ({name})") / batch}


def _eval_programs(clf: Any, M: int, draws: int) -> tuple[Any, Any, Any]:
    """The evaluation-side programs compiled for a memory or FLOP figure, keyed per
    example as the evaluators key them: ``evaluate(v, idx, x)`` (logits averaged over M
    draws), ``grad(v, idx, x, y)`` (one input gradient) and ``certify_chunk(v, idx, x)``
    (``draws`` predictions per image)."""
    ekey = jax.random.key(3)

    def evaluate(v, idx, x):
        keys = parallel.example_keys(ekey, idx)
        dk = jax.vmap(lambda k: jax.random.split(k, M))(keys)
        return jax.vmap(lambda ks: clf.apply(v, ks, x), in_axes=1)(dk).mean(0)

    def grad(v, idx, x, y):
        return attacks.loss_grad(lambda k, xi: clf.apply(v, k, xi), parallel.example_keys(ekey, idx), x, y)

    def certify_chunk(v, idx, x):
        keys = parallel.example_keys(ekey, idx)
        one = parallel.per_example(lambda k, xi: clf.apply(v, k, xi))
        j = jnp.arange(draws, dtype=jnp.int32)
        dk = jax.vmap(lambda k: jax.vmap(lambda jj: jax.random.fold_in(k, jj))(j))(keys)
        return jax.vmap(one, in_axes=(1, None))(dk, x).argmax(-1)

    return evaluate, grad, certify_chunk


# --------------------------------------------------------------------------- pass counts


def padded(n: int, batch: int) -> int:
    """Examples computed when ``n`` are mapped ``batch`` at a time (last batch padded)."""
    return -(-n // batch) * batch


def attack_counts(cfg: Any, clf_config: dict[str, Any]) -> dict[str, Any]:
    """Forward / forward+backward passes per attacked example of the ``config.attack`` grid,
    read off the job list ``attack_suite.jobs`` builds (each job's ``passes``, counted from
    the settings its craft function runs with, so it follows the code), plus the judging:
    M draws on the judge stream per row and M more on the report stream per worst-case
    member. Every job counts on every example (the cascade's savings depend on how many
    examples each attack breaks, which only a run shows: ``examples_attacked`` in
    robustness.json)."""
    acfg = robustness.effective_config(cfg.attack)
    clf = classifier.Classifier(clf_config, None)
    variants = robustness.make_variants(clf, acfg) if acfg.ensemble else {}
    dummy = (lambda k, x: x)
    method = clf_config["coding"]["method"]
    relax = ({f"{n}@{t:g}": dummy for n in ("gumbel", "relaxed") for t in acfg.gumbel_temperatures}
             if acfg.poisson_adaptive and method == "poisson" else None)
    jobs = attack_suite.jobs(acfg, dummy, variants, dummy if acfg.transfer else None, clf.num_classes,
                             dummy if acfg.transfer_expectation and method != "direct" else None, relax,
                             stochastic=method != "direct")
    M = acfg.judge_draws
    chained = {id(j) for e in acfg.strong_eps for j in attack_suite.chain(jobs, e)}
    c = {"fwd": 0, "grad": 0, "grad_bptr": 0, "grad_transfer": 0}
    rows = []
    for j in jobs:
        if j.craft is not None and j.eps == 0:
            rows.append({"job": j.name, "eps": j.eps, "reused_clean": True})
            continue
        p = j.passes
        judge = M * (1 + len(j.candidates)) + (M if id(j) in chained else 0)
        grad = p.backward
        fwd = p.forward - p.backward + judge
        per = {"grad": 0, "grad_bptr": 0, "grad_transfer": 0}
        if j.family == "transfer":
            per["grad_transfer"] = grad
        elif j.family == "ensemble":
            names = j.record["variants"]
            per["grad_bptr"] = grad * sum(n == "bptr" for n in names) // len(names)
            per["grad"] = grad - per["grad_bptr"]
        else:
            per["grad"] = grad
        rows.append({"job": j.name, "eps": round(float(j.eps), 6), "fwd": fwd, **per})
        c["fwd"] += fwd
        for k, v in per.items():
            c[k] += v
    if acfg.gradient_check:
        c["grad"] += 1
        rows.append({"job": "gradient-check", "grad": 1})
    conv = None
    if acfg.convergence:   # one APGD-CE trajectory per EOT value (snapshots at the step counts), M judge draws each
        per = {"grad": max(acfg.convergence_steps) * sum(acfg.convergence_eot),
               "fwd": len(acfg.convergence_steps) * len(acfg.convergence_eot) * M}
        conv = {"examples": acfg.convergence_examples, **per}
    return {"per_example": c, "jobs": rows, "batch_size": acfg.batch_size, "num_examples": acfg.num_examples,
            "variants": sorted(variants), "convergence": conv}


# --------------------------------------------------------------------------- one config


def estimate(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """FLOPs of every stage of ``--mode=all`` for ``configs/NAME.py`` (with ``overrides``,
    dotted field -> value, applied first)."""
    t0 = time.time()
    cfg = config.from_file(name)
    for field, value in (overrides or {}).items():
        node = cfg
        *path, last = field.split(".")
        for p in path:
            node = node[p]
        with cfg.unlocked():
            node[last] = value
    config_checks.validate(cfg, device_count=1)
    ds = dataset(cfg)
    n_train, n_test, _ = SPLITS[cfg.dataset.name]
    modes = pipeline.plan(cfg, "all")
    spe = data.steps_per_epoch(n_train, cfg.train.batch_size)
    steps = cfg.train.epochs * spe
    clf_config = train.classifier_config(cfg, ds)
    twin_cfg = distill.teacher_config(cfg) if cfg.distill.enabled else train.ann_twin_config(cfg)
    twin_config = train.classifier_config(twin_cfg, ds)
    twin_steps = twin_cfg.train.epochs * spe
    twin_trained = cfg.distill.enabled and not cfg.distill.teacher or "train_ann_twin" in modes

    stage: dict[str, float] = {}
    step = train_step_flops(cfg, ds, cfg.train.batch_size)
    stage["train"] = step * steps
    twin_step = train_step_flops(twin_cfg, ds, cfg.train.batch_size)
    stage["ann_twin_or_teacher_train"] = twin_step * twin_steps if twin_trained else 0.0

    ab = cfg.attack.batch_size
    snn = pass_flops(clf_config, ds, ab)
    bptr = pass_flops(classifier.Classifier(clf_config, None).with_neuron(grad_mode="bptr").config, ds, ab)
    ann = pass_flops(twin_config, ds, ab)

    n_eval = padded(n_test, cfg.eval.batch_size)
    stage["evaluate"] = n_eval * cfg.eval.draws * snn["forward"]
    if cfg.distill.enabled:       # resolve_teacher evaluates the teacher once (1 draw)
        stage["evaluate"] += n_eval * ann["forward"]

    ac = attack_counts(cfg, clf_config)
    n_att = n_test if ac["num_examples"] == -1 else min(ac["num_examples"], n_test)
    n_att_pad = padded(n_att, ac["batch_size"])
    pe = ac["per_example"]
    per_attacked = (pe["fwd"] * snn["forward"] + pe["grad"] * snn["grad"] + pe["grad_bptr"] * bptr["grad"]
                    + pe["grad_transfer"] * ann["grad"])
    stage["attack"] = n_att_pad * per_attacked if "attack" in modes else 0.0
    cv = ac["convergence"]
    if cv is not None and "attack" in modes:
        n_conv = padded(n_test if cv["examples"] == -1 else min(cv["examples"], n_test), ac["batch_size"])
        stage["attack_convergence"] = n_conv * (cv["grad"] * snn["grad"] + cv["fwd"] * snn["forward"])

    cc = cfg.certify
    n_cert = n_test if cc.num_examples == -1 else min(cc.num_examples, n_test)
    n_cert_pad = padded(n_cert, cc.image_batch)
    draws = -(-cc.n0 // min(cc.batch, cc.n0)) * min(cc.batch, cc.n0) + -(-cc.n // min(cc.batch, cc.n)) * min(cc.batch, cc.n)
    stage["certify"] = n_cert_pad * draws * snn["forward"] if "certify" in modes else 0.0
    total = sum(stage.values())

    bf16 = cfg.model.dtype == "bfloat16"
    hours = {}
    for hw, (peak, gpus, prec) in HARDWARE.items():
        hours[hw] = total / (peak * 1e12 * MFU * gpus) / 3600
    return {
        "config": name, "overrides": overrides or {}, "command": f"python -m rsc_jax.main --config=configs/{name}.py "
                                                               f"--workdir=runs/{name}",
        "modes": list(modes), "model": cfg.model.name, "dtype": cfg.model.dtype, "coding": dict(cfg.coding),
        "dataset": {"name": cfg.dataset.name, "train": n_train, "test": n_test, "image_shape": list(ds.image_shape)},
        "train": {"epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size, "steps_per_epoch": spe,
                  "steps": steps, "step_flops": step, "twin_step_flops": twin_step, "twin_steps": twin_steps,
                  "twin_trained_here": bool(twin_trained), "distill": bool(cfg.distill.enabled)},
        "per_example_flops": {"snn_forward": snn["forward"], "snn_grad": snn["grad"], "snn_grad_bptr": bptr["grad"],
                              "ann_forward": ann["forward"], "ann_grad": ann["grad"]},
        "attack": {"examples": n_att, "examples_padded": n_att_pad, "batch_size": ac["batch_size"],
                   "passes_per_example": pe, "variants": ac["variants"], "jobs": ac["jobs"],
                   "flops_per_example": per_attacked,
                   "forward_equivalents_per_example": per_attacked / snn["forward"]},
        "certify": {"examples": n_cert, "n0": cc.n0, "n": cc.n, "forward_passes_per_image": draws,
                    "image_batch": cc.image_batch},
        "evaluate": {"examples": n_test, "draws": cfg.eval.draws},
        "flops": dict(stage, total=total),
        "hours": hours, "precision": "bf16" if bf16 else "fp32 (TF32 on A100/H100, JAX's GPU default)",
        "hours_applicable": {hw: (HARDWARE[hw][2] == ("bf16" if bf16 else "fp32")) for hw in HARDWARE},
        "seconds_to_estimate": round(time.time() - t0, 1),
    }


# --------------------------------------------------------------------------- memory (optional)

HBM_TBPS = {"A100-80GB": 2.039, "H100-SXM": 3.35}   # vendor HBM bandwidth, TB/s


def _compiled(fn: Any, *args: Any) -> dict[str, float]:
    t0 = time.time()
    c = (fn if hasattr(fn, "lower") else jax.jit(fn)).lower(*args).compile()
    m = c.memory_analysis()
    ca = c.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return {"argument": float(m.argument_size_in_bytes), "temp": float(m.temp_size_in_bytes),
            "bytes_accessed": float(ca.get("bytes accessed", float("nan"))), "flops": float(ca.get("flops", 0.0)),
            "compile_seconds": round(time.time() - t0, 1)}


def memory_proxy(name: str, gpus: tuple[int, ...] = (1, 8)) -> dict[str, Any]:
    """XLA:CPU buffer sizes and post-fusion bytes accessed of the compiled programs at the
    per-device batch of a run on 1 and on 8 GPUs (compiled at that batch: compile time
    hardly depends on it, and nothing is allocated).

    Programs: the training step; evaluation (``evaluators.clean.accuracy``'s body: M draws of the
    batch at once); one attack input gradient; one certification chunk (``certify.batch``
    draws of each image at once). A rough proxy for GPU memory and HBM traffic
    (XLA:GPU fuses and schedules differently, cuDNN adds workspace): it compiles, so it is
    slow (~2-4 min per config on 2 cores) and optional.
    """
    cfg = config.from_file(name)
    ds = dataset(cfg)
    clf, state, extra, step = _step_parts(cfg, ds)
    variables = jax.eval_shape(lambda: classifier.init_variables(clf.config, jax.random.key(0)))
    shape = ds.image_shape
    M, draws = cfg.eval.draws, min(cfg.certify.batch, cfg.certify.n)
    evaluate, grad, certify_chunk = _eval_programs(clf, M, draws)

    def args(b):
        return sds((b, *shape)), sds((b,), jnp.int32), sds((b,), jnp.int32)

    progs = {
        "train_step": (lambda b: _compiled(step, state, {"image": args(b)[0], "label": args(b)[1],
                                                        "index": args(b)[2]}, *extra), cfg.train.batch_size),
        "evaluate": (lambda b: _compiled(evaluate, variables, args(b)[2], args(b)[0]), cfg.eval.batch_size),
        "attack_grad": (lambda b: _compiled(grad, variables, args(b)[2], args(b)[0], args(b)[1]),
                        cfg.attack.batch_size),
        "certify_chunk": (lambda b: _compiled(certify_chunk, variables, args(b)[2], args(b)[0]),
                          cfg.certify.image_batch),
    }
    out: dict[str, Any] = {"gpus": list(gpus), "note": "XLA:CPU proxy compiled at the per-device batch"}
    for prog, (fn, global_batch) in progs.items():
        rec: dict[str, Any] = {}
        for g in gpus:
            b = max(global_batch // g, 1)
            m = fn(b)
            rec[f"{g}gpu"] = dict(m, per_device_batch=b, gib=(m["argument"] + m["temp"]) / 2**30)
        out[prog] = rec
    # The training step as a roofline: FLOP time at the assumed utilisation vs the time
    # to move its (CPU-fused) bytes at the full HBM bandwidth, on one GPU.
    one = out["train_step"]["1gpu"]
    out["train_step_roofline_1gpu_ms"] = {
        gpu: {"flop_ms_at_mfu_tf32": one["flops"] / (HARDWARE[f"1x {gpu} TF32"][0] * 1e12 * MFU) * 1e3,
              "flop_ms_at_mfu_bf16": one["flops"] / (HARDWARE[f"1x {gpu} bf16"][0] * 1e12 * MFU) * 1e3,
              "hbm_ms_full_bandwidth_fp32": one["bytes_accessed"] / (bw * 1e12) * 1e3}
        for gpu, bw in HBM_TBPS.items()}
    return out


# --------------------------------------------------------------------------- compiled GPU memory (optional)

GPU_TARGETS: tuple[str, ...] = ("a100-40gb", "a100-80gb", "h100")
# JAX's GPU client may allocate this fraction of device memory by default
# (XLA_PYTHON_CLIENT_MEM_FRACTION; raise it, up to about 0.95, to use more).
JAX_MEM_FRACTION = 0.75


GPU_PROGRAMS: tuple[str, ...] = ("train_step", "evaluate", "attack_grad", "certify_chunk")


def gpu_memory(name: str, target: str, devices: tuple[int, ...] = (1, 8), remats: tuple[bool, ...] = (False, True),
               programs: tuple[str, ...] = GPU_PROGRAMS, print_fn: Any = None) -> dict[str, Any]:
    """Per-device memory of the config's programs compiled by XLA for GPU ``target``
    (``benchmarks.gpu_aot``: deviceless, needs jax's CUDA plugin) at the config's global
    batches on a data-parallel mesh of each of ``devices`` GPUs: the training step with
    each ``remat`` setting, and at the config's own ``remat`` evaluation (``eval.draws``
    draws of an ``eval.batch_size`` batch at once), one attack input gradient
    (``attack.batch_size``) and one certification chunk (``certify.batch`` draws of
    ``certify.image_batch`` images); ``programs`` picks among those. Figures are XLA's
    buffer assignment per device
    (``memory_analysis``): arguments + outputs - aliased + temporaries, what the program
    itself holds; cuDNN/cuBLAS workspace is not in it. ``fits`` compares that with
    ``JAX_MEM_FRACTION`` of the target's memory (JAX's default allocation limit)."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    from benchmarks import gpu_aot
    from rsc_jax import backend
    text, summary = gpu_aot.read_target(target)
    limit = JAX_MEM_FRACTION * summary["memory_bytes"]
    out: dict[str, Any] = {"target": target, "device": summary["device"], "memory_bytes": summary["memory_bytes"],
                           "limit_bytes": limit, "jax_mem_fraction": JAX_MEM_FRACTION, "programs": {}}
    base = config.from_file(name)
    ds = dataset(base)
    shape = ds.image_shape
    M, draws = base.eval.draws, min(base.certify.batch, base.certify.n)

    def record(prog: str, n: int, m: dict[str, Any], batch: int) -> None:
        m = dict(m, global_batch=batch, per_device_batch=batch // n, gib=m["peak_estimate"] / 2**30,
                 fits=m["peak_estimate"] <= limit)
        out["programs"].setdefault(prog, {})[f"{n}gpu"] = m
        if print_fn:
            print_fn(f"  {name} {target} {prog} {n} GPU(s): {m['gib']:.2f} GiB per device "
                     f"(temp {m['temp'] / 2**30:.2f}) {'fits' if m['fits'] else 'DOES NOT FIT'} [{m['compile_s']} s]")

    with backend.target_platform("gpu"):
        for n in devices:
            mesh = gpu_aot.gpu_mesh(text, n)
            repl, dat = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

            def args(b):
                return (gpu_aot.abstract(sds((b, *shape)), dat), gpu_aot.abstract(sds((b,), jnp.int32), dat),
                        gpu_aot.abstract(sds((b,), jnp.int32), dat))
            for remat in remats if "train_step" in programs else ():
                cfg = config.from_file(name)
                with cfg.unlocked():
                    cfg.model.remat = remat
                _, state, extra, step = _step_parts(cfg, ds)
                b = cfg.train.batch_size
                x, y, idx = args(b)
                m = gpu_aot.compile_stats(step, gpu_aot.abstract(state, repl), {"image": x, "label": y, "index": idx},
                                          *gpu_aot.abstract(extra, repl))
                record(f"train_step_remat_{'on' if remat else 'off'}", n, m, b)
            clf, _, _, _ = _step_parts(base, ds)
            variables = gpu_aot.abstract(jax.eval_shape(lambda: classifier.init_variables(clf.config, jax.random.key(0))),
                                         repl)
            evaluate, grad, certify_chunk = _eval_programs(clf, M, draws)
            for prog, fn, b in (("evaluate", evaluate, base.eval.batch_size),
                                ("attack_grad", grad, base.attack.batch_size),
                                ("certify_chunk", certify_chunk, base.certify.image_batch)):
                if prog not in programs:
                    continue
                x, y, idx = args(b)
                a = (variables, idx, x, y) if prog == "attack_grad" else (variables, idx, x)
                record(prog, n, gpu_aot.compile_stats(backend.jit(fn), *a), b)
    return out


# --------------------------------------------------------------------------- output


def _e(v: float) -> str:
    return f"{v:.2e}".replace("e+", "e")


def _h(v: float) -> str:
    if v * 60 < 1:
        return "< 1 min"
    if v < 1:
        return f"{v * 60:.0f} min"
    if v < 48:
        return f"{v:.1f} h"
    return f"{v:.0f} h ({v / 24:.1f} d)"


def markdown(results: list[dict[str, Any]]) -> str:
    hw = list(HARDWARE)
    lines = [f"FLOP-based estimates at an ASSUMED {MFU:.0%} of the dense peak, linear scaling over GPUs; "
             "not measurements (no GPU was available). Configs as shipped (fp32: TF32 columns; "
             "bf16 columns need `--config.model.dtype=bfloat16`).", "",
             "| config | train steps | step TFLOP | train | ANN twin / teacher | evaluate | attack | certify | "
             "total FLOP |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r["flops"]
        lines.append(f"| `{r['config']}` | {r['train']['steps']:,} | {r['train']['step_flops'] / 1e12:.3g} | "
                     f"{_e(f['train'])} | {_e(f['ann_twin_or_teacher_train'])} | {_e(f['evaluate'])} | "
                     f"{_e(f['attack'])} | {_e(f['certify'])} | **{_e(f['total'])}** |")
    lines += ["", "| config | " + " | ".join(hw) + " |", "|---|" + "---|" * len(hw)]
    for r in results:
        lines.append(f"| `{r['config']}` | " + " | ".join(_h(r["hours"][h]) for h in hw) + " |")
    lines += ["", "| config | attacked examples | fwd / grad / bptr-grad / transfer-grad passes per example | "
              "attack FLOP per example (in forward passes) | certified images x passes |", "|---|---|---|---|---|"]
    for r in results:
        a, p = r["attack"], r["attack"]["passes_per_example"]
        lines.append(f"| `{r['config']}` | {a['examples']:,} | {p['fwd']} / {p['grad']} / {p['grad_bptr']} / "
                     f"{p['grad_transfer']} | {_e(a['flops_per_example'])} "
                     f"({a['forward_equivalents_per_example']:.0f}) | "
                     f"{r['certify']['examples']} x {r['certify']['forward_passes_per_image']:,} |")
    mem = [r for r in results if "memory_proxy" in r]
    if mem:
        lines += ["", "Memory proxy (XLA:CPU buffer assignment of each program compiled at the per-device batch "
                  "of a 1-GPU / 8-GPU run; arguments + temporaries, GiB per device, fp32):", "",
                  "| config | train step 1 GPU / 8 GPUs | evaluate | attack gradient | certify chunk | "
                  "train step on 1 A100: FLOP time at 40% TF32 vs HBM time (CPU-fused bytes) |",
                  "|---|---|---|---|---|---|"]
        for r in mem:
            m = r["memory_proxy"]
            cells = [f"{m[p]['1gpu']['gib']:.1f} / {m[p]['8gpu']['gib']:.1f}"
                     for p in ("train_step", "evaluate", "attack_grad", "certify_chunk")]
            rf = m["train_step_roofline_1gpu_ms"]["A100-80GB"]
            cells.append(f"{rf['flop_ms_at_mfu_tf32']:.0f} ms vs {rf['hbm_ms_full_bandwidth_fp32']:.0f} ms")
            lines.append(f"| `{r['config']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gpu_memory_markdown(results: list[dict[str, Any]], targets: list[str]) -> str:
    """One row per config and program; per target, GiB per device on 1 / 8 GPUs, each
    marked **no** where it does not fit (a program compiled for no target of the row: -)."""
    names = {t: results[0]["gpu_memory"][t]["device"] for t in targets}
    lines = [f"Compiled by XLA for each GPU target (deviceless, `benchmarks.gpu_aot`), not estimated: per-device "
             f"arguments + outputs - aliased + temporaries in GiB (cuDNN/cuBLAS workspace not included), on 1 / 8 "
             f"GPUs; **no**: above {JAX_MEM_FRACTION:.0%} of the device's memory (JAX's default allocation limit).",
             "", "| config | program (global batch) | " + " | ".join(names[t] for t in targets) + " |",
             "|---|---|" + "---|" * len(targets)]
    for r in results:
        progs = list(dict.fromkeys(p for t in targets for p in r["gpu_memory"][t]["programs"]))
        for prog in progs:
            cells, batch = [], None
            for t in targets:
                pr = r["gpu_memory"][t]["programs"].get(prog)
                if pr is None:
                    cells.append("-")
                    continue
                batch = pr["1gpu"]["global_batch"]
                cells.append(" / ".join(f"{pr[k]['gib']:.2f}" + ("" if pr[k]["fits"] else " **no**")
                                        for k in ("1gpu", "8gpu")))
            lines.append(f"| `{r['config']}` | {prog} ({batch}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(PAPER_CONFIGS), help="comma-separated config names")
    p.add_argument("--out", default="", help="write the estimates as JSON here")
    p.add_argument("--memory", action="store_true",
                   help="also compile the train/eval/attack/certify programs at the per-device batches of "
                        "1 and 8 GPUs (slow: ~2-4 min per config) for an XLA:CPU memory and HBM-traffic proxy")
    p.add_argument("--gpu-memory", default="", metavar="TARGETS",
                   help=f"comma list of GPU targets ({','.join(GPU_TARGETS)}, or 'all'): compile each config's "
                        "programs for them (needs jax's CUDA plugin; slow) and report per-device memory and fit "
                        "on 1 and 8 GPUs, with and without remat")
    p.add_argument("--skip-flops", action="store_true", help="with --gpu-memory: only the compiled memory")
    p.add_argument("--gpu-programs", default=",".join(GPU_PROGRAMS),
                   help=f"with --gpu-memory: comma list of {','.join(GPU_PROGRAMS)}")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="config override for every config, e.g. attack.num_examples=1000 (Python literal)")
    args = p.parse_args(argv)
    import ast
    overrides = {}
    for s in args.set:
        k, v = s.split("=", 1)
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    targets = list(GPU_TARGETS) if args.gpu_memory == "all" else [t for t in args.gpu_memory.split(",") if t]
    for t in targets:
        if t not in GPU_TARGETS:
            print(f"error: --gpu-memory: target {t!r} is not allowed; allowed: {', '.join(GPU_TARGETS)} or all",
                  file=sys.stderr)
            return 2
    programs = tuple(q for q in args.gpu_programs.split(",") if q)
    for q in programs:
        if q not in GPU_PROGRAMS:
            print(f"error: --gpu-programs: {q!r} is not allowed; allowed: {', '.join(GPU_PROGRAMS)}", file=sys.stderr)
            return 2
    if targets:
        from benchmarks import gpu_aot
        if gpu_aot.cuda_plugin_missing():
            print("error: --gpu-memory needs jax's CUDA plugin, which is not installed here "
                  "(pip install \"jax[cuda12]==0.10.2\" in a separate venv: docs/GPU_RUNS.md)", file=sys.stderr)
            return 2
    t0 = time.time()
    results = []
    names = [c for c in args.configs.split(",") if c]
    for name in names:        # before any lowering: one line for a config or data set it cannot size
        try:
            ds_name = config.from_file(name).dataset.name
        except FileNotFoundError as e:
            sized = [c for c in config.config_names() if config.from_file(c).dataset.name in SPLITS]
            print(f"error: --configs={name}: {e}; allowed: {', '.join(sized)}", file=sys.stderr)
            return 2
        if ds_name not in SPLITS:
            print(f"error: --configs={name}: data set {ds_name!r} is not one the estimator sizes; allowed: "
                  f"configs on {sorted(SPLITS)} (the full data sets; e.g. {','.join(PAPER_CONFIGS[:2])})",
                  file=sys.stderr)
            return 2
    for name in names:
        r = {"config": name} if args.skip_flops else estimate(name, overrides)
        if args.memory:
            r["memory_proxy"] = memory_proxy(name)
        if targets:
            r["gpu_memory"] = {t: gpu_memory(name, t, programs=programs,
                                             print_fn=lambda m: print(m, file=sys.stderr, flush=True))
                               for t in targets}
        results.append(r)
        print(f"{name}: {round(time.time() - t0, 1)} s", file=sys.stderr)
    if not args.skip_flops:
        print(markdown(results))
    if targets:
        print(gpu_memory_markdown(results, targets))
    meta = {"assumed_mfu": MFU, "hardware": {k: {"peak_tflops": v[0], "gpus": v[1], "precision": v[2]}
                                             for k, v in HARDWARE.items()},
            "jax": jax.__version__, "seconds": round(time.time() - t0, 1),
            "note": "FLOP-based estimates (XLA cost analysis of lowered, uncompiled functions), not measurements"}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
    print(f"\n({meta['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
