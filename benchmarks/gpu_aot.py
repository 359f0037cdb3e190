"""Deviceless GPU compilation: the package's own programs compiled by XLA for a named GPU
(H100, A100 40/80 GB) on a machine without one, their compiled memory and kernel counts.

XLA compiles for a GPU described by a ``GpuTargetConfig`` text proto (``benchmarks/targets``)
when jax's CUDA plugin is installed, no GPU needed: with ``JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1``,
``jax.experimental.topologies.get_topology_desc(platform="cuda", target_config=TEXT,
topology="1x1xN")`` gives N compile-only devices; ``jax.jit(f).lower(ShapeDtypeStructs
sharded on a mesh of them).compile()`` returns the GPU executable, whose
``memory_analysis()`` is the buffer assignment the GPU would use and whose optimized HLO
lists its kernels (``count_kernels``). Install (never in CI, about 3.5 GB, outside the repo)::

    python -m venv --system-site-packages /opt/cudavenv
    /opt/cudavenv/bin/pip install "jax[cuda12]==0.10.2"
    JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 /opt/cudavenv/bin/python -m benchmarks.run --suite=gpu-aot --target=h100

Without the plugin the suite prints one line saying so and does nothing else.

What is compiled (``programs``), each through the package's own step functions, traced as for
a GPU (``backend.target_platform("gpu")``: no CPU compiler options, attack and
certification loops rolled as on a GPU):

- the training step ``train.make_train_step`` (cross-entropy, SGD momentum) of the spiking
  model at batch B, plain and ``remat=True``, and of its ANN twin at batch T*B;
- APGD-CE (``apgd.apgd``, as the attack grid calls it: 100 steps, EOT-20, rolled loops, so
  the compiled program holds one step's buffers) at batch B;
- certification (``certify.certify_counts``, the CLI's program: n0 = 100, n = 10,000 in
  chunks of ``batch`` = 100 draws of ``image_batch`` = 8 images; one chunk's buffers).

Parameters are arguments (abstract), not constants, as in the CLI's training step.
Memory figures are XLA's buffer assignment (``temp``: temporaries; ``argument``: inputs);
cuDNN/cuBLAS workspace chosen at run time by autotuning is not in them. Kernel counts are
static (a loop body counts once).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable

TARGET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets")
TARGETS: dict[str, str] = {"h100": "h100.txtpb", "a100-40gb": "a100-40gb.txtpb", "a100-80gb": "a100-80gb.txtpb"}
NOT_INSTALLED = ("gpu-aot: skipped, jax's CUDA plugin is not installed (pip install \"jax[cuda12]==0.10.2\" in a "
                 "separate venv; docs/GPU_RUNS.md)")


# --------------------------------------------------------------------------- pure parts

def parse_text_proto(text: str) -> dict[str, Any]:
    """A protobuf text-format message of scalar fields and nested messages -> nested dict.

    Handles what ``GpuTargetConfig`` files use: ``name: value`` (int, float, quoted
    string), ``name { ... }`` and ``#`` comments; a repeated field becomes a list.
    Raises ValueError naming the line on anything else.
    """
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+', re.sub(r"#[^\n]*", "", text))
    pos = 0

    def value(tok: str) -> Any:
        if tok.startswith('"'):
            return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
        for conv in (int, float):
            try:
                return conv(tok)
            except ValueError:
                pass
        if tok in ("true", "false"):
            return tok == "true"
        return tok        # an enum name

    def put(d: dict, k: str, v: Any) -> None:
        if k in d:
            d[k] = (d[k] if isinstance(d[k], list) else [d[k]]) + [v]
        else:
            d[k] = v

    def message(depth: int) -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens):
            tok = tokens[pos]
            if tok == "}":
                if depth == 0:
                    raise ValueError("text proto: unbalanced '}'")
                pos += 1
                return out
            if not re.fullmatch(r"[A-Za-z_]\w*", tok):
                raise ValueError(f"text proto: expected a field name, got {tok!r}")
            nxt = tokens[pos + 1] if pos + 1 < len(tokens) else ""
            if nxt == "{" or (nxt == ":" and pos + 2 < len(tokens) and tokens[pos + 2] == "{"):
                pos += 2 if nxt == "{" else 3
                put(out, tok, message(depth + 1))
            elif nxt == ":" and pos + 2 < len(tokens):
                put(out, tok, value(tokens[pos + 2]))
                pos += 3
            else:
                raise ValueError(f"text proto: field {tok!r} has no value")
        if depth:
            raise ValueError("text proto: missing '}'")
        return out

    return message(0)


def target_summary(cfg: dict[str, Any]) -> dict[str, Any]:
    """The figures of a parsed ``GpuTargetConfig`` the reports quote: device name, compute
    capability, SM count, device memory (bytes), memory bandwidth (bytes/s)."""
    try:
        info = cfg["gpu_device_info"]
        cc = info["cuda_compute_capability"]
        return {"device": cfg.get("device_description_str", "?"),
                "compute_capability": f"{cc.get('major', 0)}.{cc.get('minor', 0)}",
                "sm_count": int(info["core_count"]), "memory_bytes": int(info["device_memory_size"]),
                "bandwidth_bytes_per_s": int(info["memory_bandwidth"])}
    except (KeyError, TypeError) as e:
        raise ValueError(f"GpuTargetConfig: field {e} is missing; a target needs gpu_device_info with "
                         "cuda_compute_capability, core_count, device_memory_size, memory_bandwidth") from None


def read_target(name: str) -> tuple[str, dict[str, Any]]:
    """(text proto, ``target_summary``) of ``TARGETS[name]`` or of a ``.txtpb`` path."""
    if name in TARGETS:
        path = os.path.join(TARGET_DIR, TARGETS[name])
    elif name.endswith(".txtpb") and os.path.exists(name):
        path = name
    else:
        raise ValueError(f"--target={name!r} is not allowed; allowed: {', '.join(TARGETS)} or a .txtpb file")
    with open(path) as f:
        text = f.read()
    return text, target_summary(parse_text_proto(text))


# Instructions of non-fused computations that launch nothing (bookkeeping, control flow).
_NO_KERNEL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "conditional",
              "call", "after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency",
              "custom-call-done", "async-done", "copy-done", "all-reduce-done", "all-gather-done",
              "collective-permute-done", "send-done", "recv-done", "domain"}
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*.*?\s([a-z][a-z0-9\-]*)\((.*)$")
_HEADER = re.compile(r"^\s*(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def count_kernels(hlo_text: str) -> dict[str, int]:
    """Kernels of an optimized HLO module (``compiled.as_text()``): the instructions of the
    computations that run as programs (ENTRY and, transitively, while bodies/conditions,
    conditional branches and called computations), not those inside fusions.

    Returns counts of ``fusion`` (generated kernels), ``custom_call`` (library calls:
    cuBLAS, cuDNN), ``other`` (unfused ops that launch, e.g. copies, collectives) and their
    sum ``kernels``. On XLA:GPU each is one launch per execution of its computation; a loop
    body counts once.
    """
    comps: dict[str, list[str]] = {}
    entry, cur = None, None
    for line in hlo_text.splitlines():
        if cur is None:
            m = _HEADER.match(line)
            if m and not line.lstrip().startswith("HloModule"):
                cur = m.group(2)
                comps[cur] = []
                if m.group(1):
                    entry = cur
            continue
        if line.strip() == "}":
            cur = None
            continue
        comps[cur].append(line)
    if entry is None:
        raise ValueError("count_kernels: no ENTRY computation in the HLO text")
    counts = {"fusion": 0, "custom_call": 0, "other": 0}
    seen, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for line in comps[name]:
            m = _INSTR.match(line)
            if not m:
                continue
            op, rest = m.group(1), m.group(2)
            if op in ("while", "conditional", "call", "async-start"):
                for attr in ("body", "condition", "to_apply", "true_computation", "false_computation", "calls"):
                    todo += re.findall(rf"\b{attr}=%?([\w.\-]+)", rest)
                b = re.search(r"branch_computations=\{([^}]*)\}", rest)
                if b:
                    todo += [s.strip().lstrip("%") for s in b.group(1).split(",")]
            if op == "fusion":
                counts["fusion"] += 1
            elif op == "custom-call" or op == "custom-call-start":
                counts["custom_call"] += 1
            elif op not in _NO_KERNEL and op != "async-start":
                counts["other"] += 1
    counts["kernels"] = sum(counts.values())
    return counts


def mib(b: float) -> float:
    return b / 2**20


# --------------------------------------------------------------------------- compiling

def cuda_plugin_missing() -> str | None:
    """None when jax's CUDA plugin is importable, else the one-line skip message."""
    import importlib.util
    if importlib.util.find_spec("jax_plugins") is None:
        return NOT_INSTALLED
    try:
        import jax_plugins  # noqa: F401
        names = {m.name for m in __import__("pkgutil").iter_modules(jax_plugins.__path__)}
    except Exception:     # noqa: BLE001
        return NOT_INSTALLED
    return None if any(n.startswith("xla_cuda") for n in names) else NOT_INSTALLED


def gpu_mesh(target_text: str, devices: int = 1):
    """A ``(data, model)`` mesh of ``devices`` compile-only GPUs of the target (one host)."""
    import numpy as np
    from jax.experimental import topologies
    from jax.sharding import Mesh
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    topo = topologies.get_topology_desc(platform="cuda", target_config=target_text, topology=f"1x1x{devices}")
    devs = list(topo.devices)[:devices]
    if len(devs) != devices:
        raise RuntimeError(f"topology 1x1x{devices} gave {len(devs)} devices")
    from jax.sharding import AxisType
    return Mesh(np.array(devs).reshape(devices, 1), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))


def abstract(tree: Any, sharding: Any) -> Any:
    """``tree``'s leaves (arrays or ShapeDtypeStructs) as ShapeDtypeStructs with ``sharding``."""
    import jax
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def compile_stats(fn: Callable, *args: Any, **static: Any) -> dict[str, Any]:
    """Compiles ``fn`` (a jitted function) on abstract ``args``; memory (bytes) and kernels."""
    t0 = time.time()
    c = fn.lower(*args, **static).compile()
    m = c.memory_analysis()
    out = {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
           "alias": int(m.alias_size_in_bytes), "temp": int(m.temp_size_in_bytes),
           "generated_code": int(m.generated_code_size_in_bytes)}
    out["peak_estimate"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    out.update(count_kernels(c.as_text()))
    out["compile_s"] = round(time.time() - t0, 1)
    return out


# --------------------------------------------------------------------------- programs

def _parts(cfg: dict[str, Any]):
    """(abstract classifier, abstract variables) of a ``classifier_config`` dict."""
    import jax
    from rsc_jax import classifier as rc
    return rc.Classifier(cfg, None), jax.eval_shape(lambda: rc.init_variables(cfg, jax.random.key(0)))


def _batch(cfg: dict[str, Any], B: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    shape = tuple(cfg["dataset"]["image_shape"])
    return {"image": jax.ShapeDtypeStruct((B, *shape), jnp.float32),
            "label": jax.ShapeDtypeStruct((B,), jnp.int32), "index": jax.ShapeDtypeStruct((B,), jnp.int32)}


def train_program(cfg: dict[str, Any], B: int, mesh: Any) -> dict[str, Any]:
    """``train.make_train_step`` (cross-entropy, ``optax.sgd(0.01, momentum=0.9)`` as
    ``benchmarks.jax_models.train_step``) at global batch ``B`` on ``mesh``."""
    import jax
    import optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from rsc_jax import classifier as rc, train
    clf = rc.Classifier(cfg, None)
    tx = optax.sgd(0.01, momentum=0.9)
    state = jax.eval_shape(lambda: train.init_state(rc.init_variables(cfg, jax.random.key(0)), tx))
    step = train.make_train_step(train.cross_entropy_loss(clf), tx, jax.random.key(1))
    return compile_stats(step, abstract(state, NamedSharding(mesh, P())),
                         abstract(_batch(cfg, B), NamedSharding(mesh, P("data"))))


def apgd_program(cfg: dict[str, Any], B: int, mesh: Any, *, steps: int = 100, eot: int = 20) -> dict[str, Any]:
    """``apgd.apgd`` (CE loss, as the attack grid calls it) at batch ``B``; on a GPU target
    its loops stay rolled, so the program holds one step's (one draw's) buffers."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from rsc_jax import apgd, backend
    clf, v = _parts(cfg)

    def f(v, key, x, y):
        return apgd.apgd(lambda k, xi: clf.apply(v, k, xi), key, x, y, eps=8 / 255, steps=steps, eot=eot, loss="ce")
    b = _batch(cfg, B)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return compile_stats(backend.jit(f), abstract(v, repl), abstract(key, repl), abstract(b["image"], data),
                         abstract(b["label"], data))


def certify_program(cfg: dict[str, Any], image_batch: int, mesh: Any, *, n0: int = 100, n: int = 10_000,
                    batch: int = 100) -> dict[str, Any]:
    """``certify.certify_counts`` (the CLI's certification program) on ``image_batch``
    images: n0 + n draws in chunks of ``batch`` (one chunk's buffers)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from rsc_jax import backend, certify
    clf, v = _parts(cfg)
    counts = certify.certify_counts.__wrapped__       # the function backend.jit wraps

    def f(v, key, idx, x):
        return counts(key, idx, x, logits_fn=lambda k, xi: clf.apply(v, k, xi), n0=n0, n=n, batch=batch)
    b = _batch(cfg, image_batch)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return compile_stats(backend.jit(f), abstract(v, repl), abstract(key, repl), abstract(b["index"], data),
                         abstract(b["image"], data))


def _emit(rows: list, rec: dict[str, Any], print_fn: Callable[[str], None]) -> None:
    rows.append(rec)
    print_fn(f"  {rec['case']:58s} temp {mib(rec['temp']):8.1f} MiB  arg {mib(rec['argument']):7.1f} MiB  "
             f"kernels {rec['kernels']:5d} (fusions {rec['fusion']}, library {rec['custom_call']})  "
             f"[{rec['compile_s']} s]")


def run_suite(target: str, *, models: tuple[str, ...] = ("vgg11", "resnet19"), Ts: tuple[int, ...] = (1, 4, 8),
              Bs: tuple[int, ...] = (32, 128), attack_B: int = 128, dtype: str = "float32",
              print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Compiles every program of the module docstring for ``target``; rows of figures plus
    the ratios the performance goals are stated in (remat/plain temp, SNN/ANN kernels)."""
    from benchmarks import jax_models as jm
    from rsc_jax import backend
    text, summary = read_target(target)
    mesh = gpu_mesh(text, 1)
    print_fn(f"gpu-aot: {summary['device']} (sm_{summary['compute_capability'].replace('.', '')}, "
             f"{summary['sm_count']} SMs, {mib(summary['memory_bytes']) / 1024:.1f} GiB), devices {mesh.devices.size}")
    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    with backend.target_platform("gpu"):
        for model in models:
            for T in Ts:
                for B in Bs:
                    got = {}
                    for kind, spiking, remat, batch in (("snn", True, False, B), ("snn_remat", True, True, B),
                                                        ("ann", False, False, T * B)):
                        cfg = jm.classifier_config(model, spiking=spiking, T=T, remat=remat, dtype=dtype)
                        rec = dict(case=f"{model} train T={T} B={B} {kind}" + (f" @{batch}" if kind == "ann" else ""),
                                   program="train", model=model, T=T, B=B, kind=kind, batch=batch,
                                   **train_program(cfg, batch, mesh))
                        _emit(rows, rec, print_fn)
                        got[kind] = rec
                    r = {"model": model, "T": T, "B": B,
                         "remat_over_plain_temp": got["snn_remat"]["temp"] / got["snn"]["temp"],
                         "snn_over_ann_kernels": got["snn"]["kernels"] / got["ann"]["kernels"],
                         "snn_over_ann_fusions": got["snn"]["fusion"] / got["ann"]["fusion"],
                         "snn_over_ann_temp": got["snn"]["temp"] / got["ann"]["temp"]}
                    ratios.append(r)
                    print_fn(f"  -> remat/plain temp {r['remat_over_plain_temp']:.2f}, SNN/ANN kernels "
                             f"{r['snn_over_ann_kernels']:.2f} (fusions {r['snn_over_ann_fusions']:.2f})")
            cfg = jm.classifier_config(model, T=4, dtype=dtype)
            _emit(rows, dict(case=f"{model} APGD-CE 100 steps EOT-20 T=4 B={attack_B}", program="apgd", model=model,
                             T=4, B=attack_B, kind="snn", **apgd_program(cfg, attack_B, mesh)), print_fn)
            _emit(rows, dict(case=f"{model} certify_counts T=4 8 images x 100 draws", program="certify",
                             model=model, T=4, B=8, kind="snn", **certify_program(cfg, 8, mesh)), print_fn)
    return {"target": target, "target_summary": summary, "dtype": dtype, "rows": rows, "ratios": ratios}


def markdown(res: dict[str, Any]) -> str:
    """The suite's figures as two Markdown tables (programs; goal ratios)."""
    s = res["target_summary"]
    lines = [f"{s['device']} target (`benchmarks/targets/{TARGETS.get(res['target'], res['target'])}`), "
             f"{res['dtype']}; compiled, not run: XLA's buffer assignment (MiB) and static kernel counts.", "",
             "| program | temp MiB | argument MiB | kernels | fusions | library calls | compile s |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['case']} | {mib(r['temp']):.1f} | {mib(r['argument']):.1f} | {r['kernels']} | "
                     f"{r['fusion']} | {r['custom_call']} | {r['compile_s']} |")
    lines += ["", "| model | T | B | remat / plain temp (goal <= 0.5 at T = 4, 8; <= 1 at T = 1) | "
              "SNN / ANN kernels (goal <= 1.15 at T = 4) | SNN / ANN fusions | SNN / ANN temp |",
              "|---|---|---|---|---|---|---|"]
    for r in res["ratios"]:
        lines.append(f"| {r['model']} | {r['T']} | {r['B']} | {r['remat_over_plain_temp']:.2f} | "
                     f"{r['snn_over_ann_kernels']:.2f} | {r['snn_over_ann_fusions']:.2f} | {r['snn_over_ann_temp']:.2f} |")
    return "\n".join(lines)
