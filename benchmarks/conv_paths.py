"""The three pieces of each VGG-11 conv (forward, input gradient, kernel gradient) at
batch 128 (T = 4 x 32) under XLA:CPU's default conv path (YNNPACK), under the package's
compiler options (``rsc_jax.backend``: Eigen's conv path), and in PyTorch (oneDNN),
interleaved in one process:

    python -m benchmarks.conv_paths [--reps 5]

Plain ``lax.conv_general_dilated`` and its autodiff in both JAX columns (the
formulation choices of ``models.conv_formulations`` are timed by ``benchmarks.run
--suite=profile``). Shows where XLA:CPU's convs lose to oneDNN and what the options
buy (docs/PERFORMANCE.md, item 8).
"""

from __future__ import annotations

import argparse

import jax
from jax import lax

from benchmarks import common
from rsc_jax import backend
from rsc_jax.models import conv_formulations

SHAPES = ((32, 3, 64), (16, 64, 128), (8, 128, 256), (8, 256, 256), (4, 256, 512), (4, 512, 512))


def lax_conv(x, k):
    """VGG-11's 3x3 SAME stride-1 conv, lax's own (no formulation choice, lax's autodiff)."""
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=conv_formulations.NHWC_HWIO)


def _jax_pieces(jit, x, k, g) -> dict:
    fwd = jit(lax_conv)
    dx = jit(lambda g, k: jax.vjp(lambda x: lax_conv(x, k), x)[1](g)[0])
    dk = jit(lambda g, x: jax.vjp(lambda k: lax_conv(x, k), k)[1](g)[0])
    return {"fwd": lambda: jax.block_until_ready(fwd(x, k)),
            "dx": lambda: jax.block_until_ready(dx(g, k)),
            "dk": lambda: jax.block_until_ready(dk(g, x))}


def _torch_pieces(n, s, ci, co) -> dict:
    import torch
    x, w, g = torch.randn(n, ci, s, s), torch.randn(co, ci, 3, 3) * 0.05, torch.randn(n, co, s, s)

    def nograd(f):
        def run():
            with torch.no_grad():
                f()
        return run
    return {"fwd": nograd(lambda: torch.nn.functional.conv2d(x, w, padding=1)),
            "dx": nograd(lambda: torch.nn.grad.conv2d_input(x.shape, w, g, padding=1)),
            "dk": nograd(lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, padding=1))}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args(argv)
    try:
        import torch   # its default thread count, as in benchmarks.run
    except ImportError:
        torch = None
    n, out = a.batch, []
    print(f"{'layer':18s} {'piece':4s} {'XLA default':>12s} {'options':>12s} {'torch':>12s}")
    for s, ci, co in SHAPES:
        x = jax.random.normal(jax.random.key(0), (n, s, s, ci))
        k = jax.random.normal(jax.random.key(1), (3, 3, ci, co)) * 0.05
        g = jax.random.normal(jax.random.key(2), (n, s, s, co))
        cols = {"xla_default": _jax_pieces(jax.jit, x, k, g), "options": _jax_pieces(backend.jit, x, k, g)}
        if torch is not None:
            cols["torch"] = _torch_pieces(n, s, ci, co)
        fns = {f"{c}/{piece}": f for c, d in cols.items() for piece, f in d.items()}
        t = common.interleave(fns, a.reps)
        for piece in ("fwd", "dx", "dk"):
            rec = {"map": s, "cin": ci, "cout": co, "piece": piece,
                   **{c: common.stats(t[f"{c}/{piece}"])["median"] for c in cols}}
            out.append(rec)
            print(f"{s}x{s} {ci}->{co:<8d} {piece:4s} " + " ".join(f"{rec[c]:12.4f}" for c in cols), flush=True)
    return out


if __name__ == "__main__":
    main()
