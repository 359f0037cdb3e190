"""Six single-draw input gradients of the spiking VGG-11 (T = 4, B = 8): one jitted
fwd+bwd, an unrolled Python loop, ``lax.fori_loop`` plain, partly unrolled (2, 3) and
fully unrolled.

    python -m benchmarks.while_loop

Shows that on XLA:CPU the while-loop body runs ~2.3x slower than the same code unrolled
(docs/PERFORMANCE.md, attack cost).
"""

import time

import jax
import jax.numpy as jnp

from benchmarks import jax_models as jm
from rsc_jax import attacks


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

    fns = {"one fwd+bwd": jax.jit(lambda x: attacks.loss_grad(fn, keys, x, y)),
           "6 unrolled (python)": jax.jit(python_loop),
           "6 in fori_loop": jax.jit(lambda x: jax.lax.fori_loop(0, 6, step, x)),
           "6 in fori_loop(unroll=2)": jax.jit(lambda x: jax.lax.fori_loop(0, 6, step, x, unroll=2)),
           "6 in fori_loop(unroll=3)": jax.jit(lambda x: jax.lax.fori_loop(0, 6, step, x, unroll=3)),
           "6 in fori_loop(unroll=True)": jax.jit(lambda x: jax.lax.fori_loop(0, 6, step, x, unroll=True))}
    for f in fns.values():
        jax.block_until_ready(f(x))
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
