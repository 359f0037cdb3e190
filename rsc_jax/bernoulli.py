"""Unbiased input gradients through Bernoulli (Poisson) coding, for attacks.

A Poisson-coded classifier sees T frames s_t ~ Bernoulli(x), independent over steps t
and pixels i. Its straight-through gradient (``coding "poisson"``) and the
Gumbel-sigmoid ones (``"poisson_gumbel"``, ``"poisson_relaxed"``) are biased: at
saturated pixels (x at 0 or 1, most of MNIST) they can be far off. The expected loss
F(x) = E_s[f(s)] is multilinear in the firing probabilities, so its exact partial
derivative is

    dF/dx_i = sum_t E[f(s | s_ti = 1) - f(s | s_ti = 0)],

and one draw s gives the unbiased estimate (the local expectation gradient of Titsias
& Lazaro-Gredilla, NeurIPS 2015, for independent binary variables)

    g_i = sum_t (1 - 2 s_ti) (f(s with s_ti flipped) - f(s)),

since flipping s_ti turns f(s) into the other of the two terms. It costs one forward
pass per flipped frame entry: T * H * W * C + 1 per draw (257 on 8x8 digits at T = 4),
no backward pass, so it is meant for small images (``config.attack.poisson_exact_max``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
# frames [T, 1, H, W, C] -> logits [1, classes], one example (``Classifier.logits_of_frames``)
FramesFn = Callable[[Array], Array]


def draw_frames(key: Array, x: Array, T: int) -> Array:
    """``[T, *x.shape]`` frames s_t ~ Bernoulli(clip(x, 0, 1)), float like ``x``."""
    return jax.random.bernoulli(key, jnp.clip(x, 0.0, 1.0), (T, *x.shape)).astype(x.dtype)


def local_expectation_grad(f: Callable[[Array], Array], s: Array, *, chunk: int = 64) -> tuple[Array, Array]:
    """``(f(s), g)`` with ``g`` of the shape of one frame: g_i = sum_t (1 - 2 s_ti)
    (f(s with s_ti flipped) - f(s)) (module docstring). ``f`` maps frames ``[T, ...]`` to a
    scalar; the T * prod(frame) flipped copies are evaluated ``chunk`` at a time."""
    flat = s.reshape(s.shape[0], -1)
    T, d = flat.shape
    f0 = f(s)

    def flipped(k):
        t, i = k // d, k % d
        return f(flat.at[t, i].set(1.0 - flat[t, i]).reshape(s.shape))

    fk = jax.lax.map(flipped, jnp.arange(T * d), batch_size=min(chunk, T * d))
    g = ((1.0 - 2.0 * flat.reshape(-1)) * (fk - f0)).reshape(T, d).sum(0)
    return f0, g.reshape(s.shape[1:])


def ce_draw_grad(frames_fn: FramesFn, T: int, *, chunk: int = 64) -> Callable[[Array, Array, Array],
                                                                               tuple[Array, Array, Array]]:
    """A per-draw gradient for ``apgd.apgd(draw_grad=...)``: ``(keys [B], x [B, ...], y [B])
    -> (CE [B], unbiased gradient [B, ...], logits [B, C])`` of one Bernoulli draw per
    example (keys[b]), the gradient by ``local_expectation_grad``."""
    def one(key, xi, yi):
        s = draw_frames(key, xi[None], T)                        # [T, 1, H, W, C]

        def ce(frames):
            return optax.softmax_cross_entropy_with_integer_labels(frames_fn(frames).astype(jnp.float32),
                                                                   yi[None])[0]

        loss, g = local_expectation_grad(ce, s, chunk=chunk)
        return loss, g[0], frames_fn(s)[0].astype(jnp.float32)

    return jax.vmap(one)


def forwards_per_draw(T: int, image_shape: tuple[int, ...]) -> int:
    """Forward passes of one ``ce_draw_grad`` draw: every flipped entry, the draw itself
    and its logits once more."""
    n = T
    for k in image_shape:
        n *= k
    return n + 2


__all__ = ["ce_draw_grad", "draw_frames", "forwards_per_draw", "local_expectation_grad"]
