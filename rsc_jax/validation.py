"""The argument checks, written once: small helpers used by config validation
(``config_checks``) and by the public functions (coding, attacks, certify, ...) alike.

Every helper runs on concrete host values, before anything is traced or compiled, and
raises one line that names the field, the value and what is allowed::

    {name}={value!r} is not allowed; {what is allowed}

A traced value (a public function called under ``jit`` with the quantity as an array
argument) cannot be inspected; the helpers marked so let it through.

This module imports nothing else from the package.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class ConfigError(ValueError):
    """A configuration field has a value that is not allowed."""


def fail(name: str, value: Any, allowed: str, error: type[Exception] = ValueError) -> NoReturn:
    """Raises ``error("{name}={value!r} is not allowed; {allowed}")``."""
    raise error(f"{name}={value!r} is not allowed; {allowed}")


def is_traced(v: Any) -> bool:
    """True for a value being traced by jit/grad/vmap (not inspectable on the host)."""
    return isinstance(v, jax.core.Tracer)


def is_int(v: Any) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_number(v: Any) -> bool:
    """A finite real scalar (Python, NumPy or a 0-d array), not a bool."""
    if isinstance(v, (bool, np.bool_)):
        return False
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == () and bool(np.isfinite(a))


def check_int(name: str, v: Any, minimum: int | None = None, *, all_value: int | None = None,
              error: type[Exception] = ValueError) -> None:
    """An int >= ``minimum``; ``all_value`` (e.g. -1 for "all") is also accepted."""
    if all_value is not None and is_int(v) and v == all_value:
        return
    if not is_int(v) or (minimum is not None and v < minimum):
        rule = "an int" + (f" >= {minimum}" if minimum is not None else "")
        if all_value is not None:
            rule = f"{all_value} (all) or {rule}"
        fail(name, v, f"must be {rule}", error)


def check_number(name: str, v: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, traced_ok: bool = False,
                 error: type[Exception] = ValueError) -> None:
    """A finite real scalar in the interval given by ``low``/``high`` (closed unless
    ``*_open``). ``traced_ok``: let a traced value through."""
    if traced_ok and is_traced(v):
        return
    ok = is_number(v)
    if ok:
        f = float(np.asarray(v))
        ok = ((low is None or (f > low if low_open else f >= low))
              and (high is None or (f < high if high_open else f <= high)))
    if not ok:
        if low is not None and high is not None:
            rule = f"must be a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            rule = f"must be a finite number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            rule = f"must be a finite number {'<' if high_open else '<='} {high:g}"
        else:
            rule = "must be a finite number"
        fail(name, v, rule, error)


def check_bool(name: str, v: Any, error: type[Exception] = ValueError) -> None:
    """True or False (not 0/1)."""
    if not isinstance(v, (bool, np.bool_)):
        fail(name, v, "must be True or False", error)


def check_choice(name: str, v: Any, options: Sequence[Any], error: type[Exception] = ValueError) -> None:
    """One of ``options``."""
    try:
        ok = v in tuple(options)
    except TypeError:
        ok = False
    if not ok:
        fail(name, v, f"allowed: {list(options)}", error)


def check_grid(name: str, g: Any, *, min_len: int = 1, positive: bool = False, increasing: bool = True,
               error: type[Exception] = ValueError) -> None:
    """A tuple/list of >= ``min_len`` finite numbers >= 0 (> 0 if ``positive``),
    strictly increasing when ``increasing``."""
    ok = isinstance(g, (tuple, list)) and len(g) >= min_len and all(
        is_number(e) and (float(e) > 0 if positive else float(e) >= 0) for e in g)
    if ok and increasing:
        ok = all(float(b) > float(a) for a, b in zip(g[:-1], g[1:]))
    if not ok:
        fail(name, g, f"must be a tuple of {'>= ' + str(min_len) + ' ' if min_len > 0 else ''}"
                      f"{'strictly increasing ' if increasing else ''}finite numbers "
                      f"{'> 0' if positive else '>= 0'}", error)


def check_sigma(name: str, sigma: Any, *, positive: bool, rule: str | None = None,
                error: type[Exception] = ValueError) -> None:
    """The coding's sigma, one rule everywhere: finite; > 0 for a coding that uses it
    (``positive``: the Gaussian noise level of RSC-I/II, a relaxation temperature; ``rule``
    says which in the message); >= 0 for codings that ignore it (direct, Poisson).
    A traced sigma is let through."""
    if is_traced(sigma):
        return
    try:
        s = np.asarray(sigma, dtype=np.float64)
        ok = bool(np.all(np.isfinite(s))) and bool(np.all(s > 0) if positive else np.all(s >= 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        fail(name, sigma, (rule or "sigma must be finite and > 0") if positive
             else "sigma must be finite and >= 0", error)


def check_float_dtype(name: str, x: Any, error: type[Exception] = TypeError) -> None:
    """Float images; uint8 and other integer images are refused with the conversion."""
    dt = jnp.result_type(x)
    if not jnp.issubdtype(dt, jnp.floating):
        raise error(f"{name} has dtype {dt}; float images in [0, 1] are required "
                    "(convert uint8 with x.astype(np.float32) / 255)")


def check_images(name: str, x: Any, *, rank: int | None = 4, values: bool = True,
                 error: type[Exception] = ValueError, dtype_error: type[Exception] = TypeError) -> None:
    """Images ``[B, H, W, C]`` (``rank``; None: any rank >= 2), float, values in [0, 1].

    The shape and dtype are checked for traced values too; the value range (unless
    ``values`` is False) only on concrete values (a traced ``x`` cannot be inspected:
    callers that jit check their host inputs first).
    """
    shape = tuple(np.shape(x))
    if (rank is not None and len(shape) != rank) or len(shape) < 2:
        want = "[B, H, W, C]" if rank == 4 else f"a batch [B, ...] of rank {rank or '>= 2'}"
        raise error(f"{name} has shape {shape}; images {want} are required")
    check_float_dtype(name, x, dtype_error)
    if not values or is_traced(x) or isinstance(x, jax.Array) and not x.is_fully_addressable:
        return
    a = np.asarray(x)
    if a.size:
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise error(f"{name} has values in [{lo}, {hi}]; images must lie in [0, 1] "
                        "(the coding adds noise and the model normalises; do not pre-normalise)")


def check_labels(name: str, y: Any, n: int, num_classes: int | None = None,
                 error: type[Exception] = ValueError) -> None:
    """Integer class ids ``[n]`` in ``[0, num_classes)``."""
    a = np.asarray(y)
    if a.shape != (n,):
        raise error(f"{name} have shape {a.shape}; [{n}] (one per image) is required")
    if not np.issubdtype(a.dtype, np.integer):
        raise error(f"{name} have dtype {a.dtype}; integer class ids are required")
    if num_classes is not None and a.size and (a.min() < 0 or a.max() >= num_classes):
        raise error(f"{name} lie in [{a.min()}, {a.max()}] but the classifier has {num_classes} classes: "
                    f"labels must be in [0, {num_classes - 1}]")


def check_key(name: str, key: Any, error: type[Exception] = TypeError) -> None:
    """A JAX PRNG key: typed (``jax.random.key``) of any shape, or raw uint32 ``[..., 2]``."""
    try:
        dt = jnp.result_type(key)
    except TypeError:
        dt = None
    if dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key):
        return
    if dt == jnp.uint32 and np.shape(key)[-1:] == (2,):
        return
    raise error(f"{name} of dtype {dt} and shape {np.shape(key)} is not a PRNG key; "
                "pass jax.random.key(seed) (or per-example keys of it)")
