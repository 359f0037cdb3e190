"""Data parallelism over a 1-D device mesh, and sharding-independent randomness.

Every jitted step in the project takes replicated parameters and a batch sharded
along a mesh axis named ``data`` (``jax.make_mesh`` + ``NamedSharding``; the successor
of ``pmap``). Randomness that touches examples is derived per example from
``fold_in(key, global_example_index)``, so results do not depend on the batch size or
on the number of devices (``jax_threefry_partitionable`` is on by default in JAX 0.10).

This module imports nothing else from the package.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Array = jax.Array
PyTree = Any

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over the first ``num_devices`` devices (default all).

    ``AxisType.Auto`` keeps plain NumPy-style indexing of sharded arrays legal
    (``Explicit``, the default of ``make_mesh``, rejects ``a[5]``).
    """
    n = jax.device_count() if num_devices is None else int(num_devices)
    if not 1 <= n <= jax.device_count():
        raise ValueError(f"num_devices={n} is not allowed; 1 <= num_devices <= {jax.device_count()}")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places every leaf of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(tree: PyTree, mesh: Mesh) -> PyTree:
    """Splits axis 0 of every leaf across the ``data`` axis of ``mesh``."""
    n = mesh.devices.size
    for leaf in jax.tree.leaves(tree):
        if np.shape(leaf)[0] % n:
            raise ValueError(f"batch of {np.shape(leaf)[0]} examples cannot be split over {n} devices; "
                             f"use a batch size divisible by {n}")
    return jax.device_put(tree, batch_sharded(mesh))


def example_keys(key: Array, indices: Array) -> Array:
    """``[B]`` keys ``fold_in(key, indices[b])``: one stream per global example index."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(indices, jnp.uint32))


def per_example(logits_fn: Callable[[Array, Array], Array]) -> Callable[[Array, Array], Array]:
    """Turns ``logits_fn(key, x[B, ...])`` into ``f(keys[B], x[B, ...])`` keyed per example.

    Example b is classified alone as ``logits_fn(keys[b], x[b:b+1])[0]`` (vectorised with
    ``vmap``), so its noise depends only on its own key: the building block of attacks
    and certification whose results must not depend on batch size or device count.
    The model must treat examples independently (BatchNorm in inference mode).
    """
    return jax.vmap(lambda k, xi: logits_fn(k, xi[None])[0])


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Yields ``(indices, valid)`` covering ``range(n)`` in order, ``batch_size`` at a time.

    The last batch is padded by repeating its last index, so every batch has the same
    shape (one compilation); ``valid`` says how many leading entries are real.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is not allowed; batch_size must be >= 1")
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        valid = len(idx)
        if valid < batch_size:
            idx = np.concatenate([idx, np.full(batch_size - valid, idx[-1])])
        yield idx, valid


def map_examples(fn: Callable[..., PyTree], arrays: Sequence[np.ndarray], *, batch_size: int,
                 mesh: Mesh, progress: Callable[[Iterator], Iterator] | None = None) -> PyTree:
    """Applies a per-example-batched ``fn(indices, *batch)`` to all examples, sharded.

    Args:
      fn: a jitted function of ``(indices [B] int32, *arrays[indices])`` returning a
        pytree of arrays with leading axis B; it must treat examples independently and
        derive any randomness from ``indices`` (see ``example_keys``).
      arrays: host arrays with the same leading length n.
      batch_size: global batch size, divisible by the device count of ``mesh``.
      mesh: the device mesh.
      progress: optional wrapper of the batch iterator (e.g. a tqdm factory).

    Returns:
      The pytree of NumPy arrays with leading axis n, in example order; identical
      for any ``batch_size`` and device count when ``fn`` is per-example.
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays have different lengths {[len(a) for a in arrays]}")
    batches = padded_batches(n, batch_size)
    if progress is not None:
        batches = progress(batches)
    outs = []
    for idx, valid in batches:
        batch = shard_batch((idx.astype(np.int32), *[a[idx] for a in arrays]), mesh)
        out = jax.device_get(fn(*batch))
        outs.append(jax.tree.map(lambda o, v=valid: np.asarray(o)[:v], out))
    if not outs:
        raise ValueError("map_examples got no examples")
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *outs)
