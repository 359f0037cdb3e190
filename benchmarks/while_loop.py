"""Six single-draw input gradients of the spiking VGG-11 (T = 4, B = 8): one jitted
fwd+bwd, an unrolled Python loop, ``lax.fori_loop`` plain, partly unrolled (2, 3) and
fully unrolled, and the plain loop again with lax's own conv VJP (the models' convs
before their HWIO input gradient, ``models.conv_formulations``).

    python -m benchmarks.while_loop

With lax's VJP the input-gradient convs inside the while body carry ``01oi`` kernel
labels, which XLA:CPU's YNNPACK rewrite does not take there, and the loop runs several
times slower than the same code unrolled; with ours the loop costs about six fwd+bwd
(docs/PERFORMANCE.md items 4 and 6).
"""

import time

import jax
import jax.numpy as jnp

from benchmarks import jax_models as jm
from rsc_jax import attacks, backend, judging
from rsc_jax.models import conv_formulations


def lax_vjp_conv(lhs, rhs, *args, **kw):
    """The models' conv with lax's own conv and autodiff wherever the default runs its
    direct conv (the small maps it runs tap by tap stay as they are, so that only the
    input-gradient form differs)."""
    if conv_formulations.runs_tap_by_tap(lhs):
        return conv_formulations.conv_general_dilated(lhs, rhs, *args, **kw)
    return jax.lax.conv_general_dilated(lhs, rhs, *args, **kw)


def main(reps: int = 3) -> None:
    clf = jm.classifier(T=4)
    b = jm.batch(clf, 8)
    x, y = b["image"], b["label"]
    fn = clf.logits
    keys = judging.per_example_keys(jax.random.key(0), 8)
    # The same model and variables with lax's conv VJP, through the model's conv field.
    lax_model = clf.model.clone(conv_general_dilated=lax_vjp_conv)

    def fn_lax(key, x):
        return lax_model.apply(clf.params, clf.encode(key, x), train=False)

    def step(j, x, fn=fn):
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
           "6 in fori_loop(unroll=True)": backend.jit(lambda x: jax.lax.fori_loop(0, 6, step, x, unroll=True)),
           "6 in fori_loop, lax's conv VJP": backend.jit(
               lambda x: jax.lax.fori_loop(0, 6, lambda j, x: step(j, x, fn_lax), x))}
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
