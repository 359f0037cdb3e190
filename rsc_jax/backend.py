"""The package's backend-specific decisions, all in one place: how its jitted functions
are compiled (``jit`` with per-backend XLA options), and the other choices that differ
on the CPU (``on_cpu``: ``should_unroll``, ``widen_residual_in_cond``).

On XLA:CPU (jaxlib 0.10.2) convolutions are rewritten into YNNPACK fusions by default.
For the convolutions of the CIFAR-scale models here, XLA's other CPU conv path (Eigen's)
is faster, above all for the kernel gradients (a conv contracting over the batch with
the whole feature map as its window). ``CPU_COMPILER_OPTIONS`` therefore takes
``INDIVIDUAL_CONVOLUTION`` out of the YNNPACK fusion types; dots and reductions stay
YNNPACK's. The one loss measured: the digits convnet's first conv (one input channel,
8x8) is faster on YNNPACK. Figures: docs/PERFORMANCE.md item 8.

The options go to each compilation (``jax.jit(..., compiler_options=...)``), not to
the process (``XLA_FLAGS``), so importing the package changes nothing for other code,
and they are chosen for the backend a function first runs on: none on GPU and TPU.
Functions you jit yourself (notebooks) get them with ``backend.jit`` in place of
``jax.jit``, or process-wide with
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``.

This module imports nothing else from the package.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import jax

# Ours, measured on an AMD EPYC (AVX-512) with jaxlib 0.10.2, whose default YNNPACK list is
# REDUCE, INDIVIDUAL_DOT and INDIVIDUAL_CONVOLUTION (checked: passing all three compiles
# the VGG-11 step to the same HLO as passing nothing). Per compilation the option takes
# full enum names; the '+'/'-' forms work only in XLA_FLAGS.
CPU_COMPILER_OPTIONS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


# The platform traced and compiled for, when it is not the default backend: set only by
# ``target_platform`` (ahead-of-time compilation for a device this process does not have).
_TARGET: list[str] = []


def current_platform() -> str:
    """The platform the package's functions are traced and compiled for: the innermost
    ``target_platform`` if one is active, else ``jax.default_backend()``."""
    return _TARGET[-1] if _TARGET else jax.default_backend()


@contextlib.contextmanager
def target_platform(name: str) -> Iterator[None]:
    """Within the block, trace and compile as for ``name`` ("cpu", "gpu" or "tpu";
    "cuda"/"rocm" count as "gpu"): ``compiler_options``, ``on_cpu``, ``should_unroll``
    and ``widen_residual_in_cond`` answer for that platform. For ahead-of-time
    compilation on a machine without the device (``benchmarks.gpu_aot``: XLA compiles
    for a GPU target on a CPU host, whose default backend stays the CPU). Functions
    jitted by ``jit`` fix their options at first use: build them inside the block."""
    allowed = ("cpu", "gpu", "tpu", "cuda", "rocm")
    if name not in allowed:
        raise ValueError(f"target platform {name!r} is not allowed; allowed: {list(allowed)}")
    _TARGET.append("gpu" if name in ("cuda", "rocm") else name)
    try:
        yield
    finally:
        _TARGET.pop()


def compiler_options(platform: str | None = None) -> dict[str, str]:
    """The XLA compiler options the package compiles with on ``platform``
    (default: ``current_platform()``): ``CPU_COMPILER_OPTIONS`` on ``"cpu"``, else none."""
    platform = platform or current_platform()
    return dict(CPU_COMPILER_OPTIONS) if platform == "cpu" else {}


class _Jitted:
    """``jax.jit(fun, compiler_options=compiler_options(), **kw)``, built at first use.

    Deferred so that decorating at import time neither initialises the backends (which
    must wait for ``jax.distributed.initialize`` on multi-host jobs) nor fixes the
    options before the platform is known. Attribute access (``lower``, ``trace``,
    ``eval_shape``, ...) goes to the jitted function; ``__wrapped__`` is ``fun``.
    """

    def __init__(self, fun: Callable, kw: dict[str, Any]) -> None:
        functools.update_wrapper(self, fun)
        self._fun, self._kw = fun, kw

    @functools.cached_property
    def _jitted(self) -> Callable:
        return jax.jit(self._fun, compiler_options=compiler_options() or None, **self._kw)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._jitted(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_fun", "_kw"):
            raise AttributeError(name)
        return getattr(self._jitted, name)


def jit(fun: Callable | None = None, **kw: Any) -> Any:
    """``jax.jit`` with the package's compiler options for the backend (see module doc).

    Takes ``jax.jit``'s keyword arguments (``static_argnames``, ``donate_argnums``,
    shardings, ...) but not ``compiler_options``; usable as ``jit(f, ...)``,
    ``@jit`` and ``functools.partial(jit, ...)``.
    """
    if "compiler_options" in kw:
        raise TypeError("backend.jit: compiler_options is chosen per backend here; "
                        "use jax.jit directly to pass your own")
    if fun is None:
        return functools.partial(jit, **kw)
    return _Jitted(fun, kw)


# Matmul/conv precision of float32 models (``config.matmul_precision``). Policy (ours):
# "default" everywhere, training, evaluation, attacks and certification alike: the
# backend's own choice, i.e. exact float32 on the CPU, TF32 tensor cores on A100/H100
# GPUs (10-bit mantissa inputs, float32 accumulation), one bf16 pass on TPUs. "highest"
# computes true float32 products everywhere (slower on GPUs and TPUs); "high" is bf16_3x
# on TPUs and TF32 on GPUs. Whether accuracy and robust accuracy move between "default"
# and "highest" on a GPU has not been measured here (no GPU was lent).
MATMUL_PRECISIONS: tuple[str, ...] = ("default", "high", "highest")


def matmul_precision(precision: str):
    """A context manager: what is traced inside uses ``precision`` (one of
    ``MATMUL_PRECISIONS``) for float32 matmuls and convolutions
    (``jax.default_matmul_precision``); "default" leaves the backend's choice."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul precision {precision!r} is not allowed; allowed: {list(MATMUL_PRECISIONS)}")
    return jax.default_matmul_precision(None if precision == "default" else precision)


def on_cpu() -> bool:
    """Whether the platform traced for (``current_platform()``: the default backend unless
    ``target_platform`` says otherwise) is the CPU."""
    return current_platform() == "cpu"


# Attack loops (PGD steps, EOT draws) unroll on the CPU up to this many gradients: each
# XLA:CPU while-loop iteration has a fixed cost of its own, and the compile time grows
# with the number of unrolled gradient copies (docs/PERFORMANCE.md items 4 and 9).
AUTO_UNROLL_MAX = 16


def should_unroll(unroll: bool | None, iterations: int) -> bool:
    """``unroll`` if given; else True on the CPU backend for ``iterations <= AUTO_UNROLL_MAX``."""
    if unroll is not None:
        return bool(unroll)
    return on_cpu() and iterations <= AUTO_UNROLL_MAX


def lean_remat(T: int) -> bool:
    """Whether ``remat=True`` spiking models take the memory-lean BN + LIF path
    (``models.lean``; same results as the plain path) at ``T`` time steps: on the CPU
    always, elsewhere for T > 1. Ours, from compiled memory: at T = 1 on the H100 target
    the lean training step's temporaries were 1.08-1.15x the plain step's (VGG-11 at
    B = 32, ResNet-19 at B = 32 and 128; 0.92x for VGG-11 at B = 128), on XLA:CPU 0.60x
    (docs/GPU_RUNS.md, docs/PERFORMANCE.md)."""
    return T > 1 or on_cpu()


def widen_residual_in_cond() -> bool:
    """Whether a custom VJP widens its narrowed residual (the one-byte spike input of
    ``models.lean.conv_spike_residual``) inside a ``lax.cond`` on the cotangent, which
    keeps XLA:CPU from fusing the narrowing into the backward pass (and so keeping the
    wide input alive). On the CPU only: elsewhere a conditional may cost a device-to-host
    sync per conv, and GPU/TPU schedulers are memory-aware without it."""
    return on_cpu()
