"""Six single-draw input gradients of the spiking VGG-11 (T = 4, B = 8): one jitted
fwd+bwd, an unrolled Python loop, ``lax.fori_loop`` plain, partly unrolled (2, 3) and
fully unrolled, and the plain loop again with lax's own conv VJP (the code before
``models.layers._direct_conv``).

    python -m benchmarks.while_loop

With lax's VJP the input-gradient convs inside the while body carry ``01oi`` kernel
labels, which XLA:CPU's YNNPACK rewrite does not take there, and the loop runs ~2.3x
slower than the same code unrolled; with ours the loop costs about six fwd+bwd
(docs/PERFORMANCE.md, attack cost).
"""

import contextlib
import time

import jax
import jax.numpy as jnp

from benchmarks import jax_models as jm
from rsc_jax import attacks, backend
from rsc_jax.models import layers


@contextlib.contextmanager
def lax_conv_vjp():
    """While tracing: the models' direct convs without their custom VJP (lax's autodiff)."""
    saved = layers._direct_conv
    layers._direct_conv = lambda x, k, s, p, precision: jax.lax.conv_general_dilated(
        x, k, s, p, dimension_numbers=layers.NHWC_HWIO, precision=precision)
    try:
        yield
    finally:
        layers._direct_conv = saved


def main(reps: int = 3) -> None:
    clf = jm.classifier(T=4)
    b = jm.batch(clf, 8)
    x, y = b["image"], b["label"]
    fn = clf.logits
    keys = attacks.per_example_keys(jax.random.key(0), 8)

    def step(j, x):
        return x + 1e-3 * jnp.sign(attacks.loss_grad(fn, attacks._fold(keys, j), x, y))

    def python_loop(x):
        for j in range(6):
            x = step(j, x)
        return x

    fns = {"one fwd+bwd": backend.jit(lambda x: attacks.loss_grad(fn, keys, x, y)),
           "6 unrolled (python)": backend.jit(python_loop),
           "6 in fori_loop": backend.jit(lambda x: jax.lax.fori_loop(0, 6, step, x)),
           "6 in fori_loop(unroll=2)": backend.jit(lambda x: jax.lax.fori_loop(0, 6, step, x, unroll=2)),
           "6 in fori_loop(unroll=3)": backend.jit(lambda x: jax.lax.fori_loop(0, 6, step, x, unroll=3)),
           "6 in fori_loop(unroll=True)": backend.jit(lambda x: jax.lax.fori_loop(0, 6, step, x, unroll=True))}
    for f in fns.values():
        jax.block_until_ready(f(x))
    with lax_conv_vjp():      # compiled now, so the patch is in the program; a new body
        # function, as lax caches the traced body of the one above
        def step_lax(j, x):
            return step(j, x)
        fns["6 in fori_loop, lax's conv VJP"] = backend.jit(lambda x: jax.lax.fori_loop(0, 6, step_lax, x)).lower(x).compile()
        jax.block_until_ready(fns["6 in fori_loop, lax's conv VJP"](x))
    times = {n: [] for n in fns}
    for _ in range(reps):
        for n, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f(x))
            times[n].append(time.perf_counter() - t)
    for n, ts in times.items():
        print(f"{n:30s} median {sorted(ts)[len(ts) // 2]:.3f} s  (min {min(ts):.3f}, max {max(ts):.3f})")


if __name__ == "__main__":
    main()
