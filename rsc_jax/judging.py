"""Judging stochastic classifiers on fresh coding draws, and the per-example keys behind it.

A classifier ``logits_fn(key, x) -> logits [B, classes]`` draws its own coding noise from
``key``. ``judge`` classifies every example on M fresh draws: the single-draw
correctness averaged over the M draws, and the correctness of the M-draw-averaged
logits (the smoothed prediction), with the cross-entropy and margin of those logits.
Draw d of example b uses ``fold_in(keys[b], d)``; ``example_keys(seed, indices, stream)``
builds keys from global example indices, so results depend only on (seed, stream,
index), never on the batch an example is in. Attacks (``attacks.py``) craft on one
stream and are judged on another.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsc_jax import parallel, validation

Array = jax.Array
LogitsFn = Callable[[Array, Array], Array]


def _is_typed_key(key: Array) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def per_example_keys(key: Array, batch: int) -> Array:
    """Returns ``[batch]`` per-example keys from a single key or a batch of keys.

    A batch of keys (typed ``[B]`` or raw ``[B, 2]``) is returned as is (its length
    must equal ``batch``); a single key k gives ``parallel.example_keys(k, arange(B))``.
    """
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    single = key.ndim == 0 if _is_typed_key(key) else key.ndim == 1
    if single:
        return parallel.example_keys(key, jnp.arange(batch))
    if key.shape[0] != batch:
        raise ValueError(f"key has {key.shape[0]} per-example keys but the batch has {batch} examples")
    return key


def example_keys(seed: int | Array, indices: Array, *, stream: int = 0) -> Array:
    """``[B]`` keys for global example ``indices``: ``fold_in(fold_in(key(seed), stream), i)``.

    Use one ``stream`` for crafting and another for judging; the keys depend only on
    (seed, stream, global index), never on the batch an example is in.
    """
    base = jax.random.fold_in(jax.random.key(seed), stream)
    return parallel.example_keys(base, indices)


def fold(keys: Array, data: int | Array) -> Array:
    """``[B]`` keys ``fold_in(keys[b], data)``: a sub-stream of every example's key."""
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def check_xy(x: Array, y: Array) -> None:
    """x ``[B, ...]`` float images (their [0, 1] range checked for host arrays only:
    traced/device inputs are not inspected), y ``[B]``."""
    chex.assert_rank(y, 1)
    validation.check_images("x", x, rank=None, values=isinstance(x, np.ndarray))
    chex.assert_equal_shape_prefix((x, y), 1)


def mean_logits(logits_fn: LogitsFn, keys: Array, x: Array, draws: int) -> tuple[Array, Array]:
    """Returns (mean logits over draws [B, C], per-draw logits [draws, B, C])."""
    pe = parallel.per_example(logits_fn)
    if draws == 1:
        per_draw = pe(fold(keys, 0), x).astype(jnp.float32)[None]
    else:
        per_draw = jax.lax.map(lambda d: pe(fold(keys, d), x).astype(jnp.float32), jnp.arange(draws))
    return per_draw.mean(0), per_draw


def margin(logits: Array, y: Array) -> Array:
    """Margin z_y - max_{j != y} z_j per example (``[B, C], [B] -> [B]``); < 0 means wrong."""
    chex.assert_rank(logits, 2)
    z_y = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    other = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits)
    return z_y - other.max(axis=1)


def judge(logits_fn: LogitsFn, key: Array, x: Array, y: Array, *, draws: int = 1) -> dict[str, Array]:
    """Classifies every example on M fresh coding draws, per example.

    Draw d of example b uses ``fold_in(keys[b], d)``.

    Returns a dict of ``[B]`` arrays:
      ``correct_single``: fraction of the M single-draw predictions that are correct
        (its mean over examples estimates the single-draw accuracy);
      ``correct_first``: correctness of draw 0 alone (0/1);
      ``correct_avg``: correctness of the argmax of the logits averaged over M draws (0/1);
      ``loss``: cross-entropy of the averaged logits; ``margin``: their margin.
    """
    validation.check_int("draws", draws, 1)
    check_xy(x, y)
    keys = per_example_keys(key, x.shape[0])
    mean, per_draw = mean_logits(logits_fn, keys, x, draws)
    ok = (per_draw.argmax(-1) == y[None]).astype(jnp.float32)
    out = {
        "correct_single": ok.mean(0),
        "correct_first": ok[0],
        "correct_avg": (mean.argmax(-1) == y).astype(jnp.float32),
        "loss": optax.softmax_cross_entropy_with_integer_labels(mean, y),
        "margin": margin(mean, y),
    }
    for v in out.values():
        chex.assert_shape(v, (x.shape[0],))
    return out


def accuracy(logits_fn: LogitsFn, key: Array, x: Array, y: Array, *, draws: int = 1) -> dict[str, Array]:
    """Batch means of ``judge``: ``single`` (single-draw accuracy, averaged over M draws),
    ``first`` (draw 0 only), ``avg`` (accuracy of M-draw averaged logits), scalars."""
    j = judge(logits_fn, key, x, y, draws=draws)
    return {"single": j["correct_single"].mean(), "first": j["correct_first"].mean(),
            "avg": j["correct_avg"].mean()}
