"""Data parallelism over a device mesh, multi-host start-up, and sharding-independent randomness.

Every jitted step in the project takes replicated parameters and a batch sharded
along a mesh axis named ``data`` (``jax.make_mesh`` + ``NamedSharding``; the successor
of ``pmap``). An optional second axis ``model`` shards the largest kernels.
Randomness that touches examples is derived per example from
``fold_in(key, global_example_index)``, so results do not depend on the batch size,
on the number of devices, nor on the number of hosts (``jax_threefry_partitionable``
is on by default in JAX 0.10).

Multi-host: every process runs the same program; each feeds only its own rows of a
global batch (``process_rows``) and ``global_batch`` assembles them with
``jax.make_array_from_process_local_data``; results are gathered with
``gather`` so that every process (and process 0, which writes files) sees them all.

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
MODEL_AXIS = "model"
# Leaves at least this large whose last axis divides by the model-axis size are sharded
# along it (ours: below that, the all-gathers cost more than the memory they save).
MODEL_SHARD_MIN_SIZE = 1 << 18


class DistributedError(RuntimeError):
    """Multi-process start-up failed, or the processes disagree."""


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 300) -> None:
    """Starts ``jax.distributed`` when running as several processes.

    With explicit arguments they are used as given; without, JAX's cluster
    auto-detection runs when it recognises the environment (TPU pods, SLURM with
    more than one task, or ``JAX_COORDINATOR_ADDRESS`` set); otherwise nothing happens
    (a single process). Must run before anything touches a JAX backend.

    Raises:
      DistributedError: the coordinator could not be reached within ``timeout_s``
        (naming the address and the timeout).
    """
    import os
    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    if explicit:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise DistributedError(
                "--coordinator_address, --num_processes and --process_id must be given together; got "
                f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
                f"process_id={process_id!r}")
        if not 0 <= process_id < num_processes:
            raise DistributedError(f"--process_id={process_id} is not allowed; 0 <= process_id < "
                                   f"num_processes={num_processes}")
        kwargs: dict[str, Any] = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                                      process_id=process_id)
    else:
        slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
        tpu_pod = len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1
        if not (slurm or tpu_pod or os.environ.get("JAX_COORDINATOR_ADDRESS")):
            return
        kwargs = {}
    if explicit and process_id != 0:
        # A worker that cannot reach the coordinator aborts inside the runtime (no
        # Python exception): check that it listens before handing over.
        _wait_for_coordinator(coordinator_address, timeout_s, process_id, num_processes)
    try:
        jax.distributed.initialize(initialization_timeout=timeout_s, **kwargs)
    except Exception as e:  # the runtime raises several types on time-out
        address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "(auto-detected)")
        raise DistributedError(f"could not join the coordinator at {address} within {timeout_s} s "
                               f"(process {process_id} of {num_processes}): {str(e)[:300]}") from e


def _wait_for_coordinator(address: str, timeout_s: int, process_id: int, num_processes: int) -> None:
    import socket
    import time
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator_address={address!r} is not allowed; it must be host:port")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"could not reach the coordinator at {address} within {timeout_s} s (process {process_id} of "
                    f"{num_processes}): {e.strerror or e}. Is process 0 running, and is the address right?") from e
            time.sleep(0.5)


def is_primary() -> bool:
    """True on process 0, the one that writes logs, metrics and reports."""
    return jax.process_index() == 0


def check_same(value: str, what: str = "config") -> None:
    """Raises ``DistributedError`` unless every process passed the same ``value``.

    Used at start with a hash of the config, so that processes launched with
    different flags fail at once with a message instead of hanging in a collective.
    """
    if jax.process_count() == 1:
        return
    import hashlib
    from jax.experimental import multihost_utils
    digest = np.frombuffer(hashlib.sha256(value.encode()).digest()[:8], np.int64)
    every = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
    if not np.all(every == every[0]):
        differing = [i for i, d in enumerate(every) if d != every[0]]
        raise DistributedError(f"the {what} differs between processes: process(es) {differing} disagree with "
                               "process 0; launch every process with the same flags")


def barrier(name: str) -> None:
    """Waits until every process reaches ``name`` (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def make_mesh(num_devices: int | None = None, model: int = 1) -> Mesh:
    """A mesh ``(data, model)`` over the first ``num_devices`` devices (default all).

    ``model`` = 1 (the default) is pure data parallelism. ``AxisType.Auto`` keeps
    plain NumPy-style indexing of sharded arrays legal (``Explicit``, the default of
    ``make_mesh``, rejects ``a[5]``).
    """
    n = jax.device_count() if num_devices is None else int(num_devices)
    if not 1 <= n <= jax.device_count():
        raise ValueError(f"num_devices={n} is not allowed; 1 <= num_devices <= {jax.device_count()}")
    if model < 1 or n % model:
        raise ValueError(f"model axis size {model} is not allowed; it must divide the device count {n}")
    if jax.process_count() > 1 and n != jax.device_count():
        raise ValueError(f"num_devices={n} is not allowed with {jax.process_count()} processes; "
                         "a multi-host mesh spans every device")
    auto = jax.sharding.AxisType.Auto
    return jax.make_mesh((n // model, model), (DATA_AXIS, MODEL_AXIS), axis_types=(auto, auto),
                         devices=jax.devices()[:n])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def param_sharding(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """Replicated, or split along the last axis over ``model`` for big kernels."""
    m = mesh.shape.get(MODEL_AXIS, 1)
    if m > 1 and len(shape) >= 2 and shape[-1] % m == 0 and int(np.prod(shape)) >= MODEL_SHARD_MIN_SIZE:
        return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), MODEL_AXIS))
    return replicated(mesh)


def state_shardings(tree: PyTree, mesh: Mesh) -> PyTree:
    """``param_sharding`` of every leaf (parameters, optimizer moments alike)."""
    return jax.tree.map(lambda a: param_sharding(tuple(np.shape(a)), mesh), tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places every leaf of ``tree`` on all devices of ``mesh`` (big kernels split
    over the ``model`` axis when it has more than one device)."""
    if jax.process_count() > 1:
        return jax.tree.map(_to_global, tree, state_shardings(tree, mesh))
    return jax.device_put(tree, state_shardings(tree, mesh))


def _to_global(a: Any, sharding: NamedSharding) -> Array:
    """A host value every process holds in full -> one global array (typed keys too)."""
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = _to_global(np.asarray(jax.random.key_data(a)), NamedSharding(sharding.mesh, P()))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return jax.make_array_from_process_local_data(sharding, np.asarray(a))


def _check_divisible(n: int, mesh: Mesh) -> None:
    d = mesh.shape[DATA_AXIS]
    if n % d:
        raise ValueError(f"batch of {n} examples cannot be split over {d} devices; "
                         f"use a batch size divisible by {d}")


def process_rows(n: int, mesh: Mesh) -> slice:
    """The rows of a global batch of ``n`` examples that this process feeds."""
    _check_divisible(n, mesh)
    idx = batch_sharded(mesh).addressable_devices_indices_map((n,))
    starts = [s[0].start or 0 for s in idx.values()]
    stops = [n if s[0].stop is None else s[0].stop for s in idx.values()]
    return slice(min(starts), max(stops))


def global_batch(local: PyTree, mesh: Mesh, n: int) -> PyTree:
    """Assembles a global batch of ``n`` rows from every process's ``process_rows`` part."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a), (n, *np.shape(a)[1:])), local)


def shard_batch(tree: PyTree, mesh: Mesh) -> PyTree:
    """Splits axis 0 of every leaf of a host-global batch across the ``data`` axis
    (each process contributes its own rows)."""
    leaves = jax.tree.leaves(tree)
    n = np.shape(leaves[0])[0]
    rows = process_rows(n, mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, batch_sharded(mesh))
    return global_batch(jax.tree.map(lambda a: np.asarray(a)[rows], tree), mesh, n)


def gather(tree: PyTree) -> PyTree:
    """Host NumPy copies of (possibly multi-host) arrays, on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return jax.tree.map(lambda a: np.asarray(a) if getattr(a, "is_fully_replicated", True) and
                        getattr(a, "is_fully_addressable", True) else
                        np.asarray(multihost_utils.process_allgather(a, tiled=True)), tree)


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
      The pytree of NumPy arrays with leading axis n, in example order, on every
      process; identical for any ``batch_size``, device count and host count when
      ``fn`` is per-example. Each process reads only its own rows of ``arrays``.
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays have different lengths {[len(a) for a in arrays]}")
    batches = padded_batches(n, batch_size)
    if progress is not None:
        batches = progress(batches)
    outs = []
    for idx, valid in batches:
        rows = process_rows(len(idx), mesh)
        local = (idx[rows].astype(np.int32), *[a[idx[rows]] for a in arrays])   # only this host's rows
        out = gather(fn(*global_batch(local, mesh, len(idx))))
        outs.append(jax.tree.map(lambda o, v=valid: np.asarray(o)[:v], out))
    if not outs:
        raise ValueError("map_examples got no examples")
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *outs)
