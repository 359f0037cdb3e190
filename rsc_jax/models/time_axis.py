"""The time axis of spiking models: folded into the batch, unfolded for the LIF.

Spiking models take coded input ``[T, B, ...]`` and fold time into the batch
(``[T*B, ...]``) for convolutions, dense layers and BatchNorm; only the neuron unfolds
it again, to scan over T (SPEC §2). How far that scan is unrolled is a performance
choice (same results, bit for bit when fully unrolled): ``lif_unroll`` on the plain
path, ``lean_lif_unroll`` on the memory-lean one (``models.lean``).

Shared by ``layers`` and ``lean``; imports nothing else from the package.
"""

from __future__ import annotations

import jax

Array = jax.Array

# Full unroll of the LIF scan up to this T (XLA fuses the elementwise steps of all
# steps and of the backward pass; see docs/PERFORMANCE.md item 2); longer sequences
# unroll by this factor to bound compile time.
MAX_LIF_UNROLL = 8


def lif_unroll(T: int) -> int | bool:
    """The ``unroll`` the spiking activation passes to ``neurons.lif`` for ``T`` steps."""
    return True if T <= MAX_LIF_UNROLL else MAX_LIF_UNROLL


# The lean path (remat=True, ``bn_lif``) unrolls fully up to this T: XLA:CPU's while
# loops copy their [T, ...] state, which costs the lean step much of the memory it
# saves; compilation takes longer instead (docs/PERFORMANCE.md item 3).
LEAN_MAX_LIF_UNROLL = 16


def lean_lif_unroll(T: int) -> int | bool:
    """The ``unroll`` of ``neurons.lif`` on the lean path for ``T`` steps."""
    return True if T <= LEAN_MAX_LIF_UNROLL else MAX_LIF_UNROLL


def fold_time(x: Array) -> Array:
    """``[T, B, ...] -> [T*B, ...]``."""
    return x.reshape((-1, *x.shape[2:]))


def unfold_time(x: Array, T: int) -> Array:
    """``[T*B, ...] -> [T, B, ...]``."""
    if x.shape[0] % T:
        raise ValueError(f"leading axis {x.shape[0]} is not a multiple of T={T}")
    return x.reshape((T, x.shape[0] // T, *x.shape[1:]))
