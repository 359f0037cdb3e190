"""The convolution formulations behind every model conv, chosen per shape for XLA:CPU.

``conv_general_dilated`` has ``lax.conv_general_dilated``'s signature and values (to
float32 summation order), and is what ``layers.conv`` plugs into ``nn.Conv`` by default
(the models' ``conv_general_dilated`` field). For an NHWC x HWIO conv without dilation
or groups, input ``x [N, H, W, C]``, kernel ``k [kh, kw, C, O]``, strides ``(sy, sx)``,
output ``y[n, i, j, :] = sum_{dy, dx, c} x[n, i*sy + dy - pad_top, j*sx + dx - pad_left,
c] k[dy, dx, c, :]`` (x zero outside the map), it runs

- on small maps (``runs_tap_by_tap``): one ``[N*h*w, C] @ [C, O]`` matmul per kernel
  tap over the outputs it reaches (``_tap_conv``): the conv's multiply-adds and none on
  padding, where XLA:CPU's direct conv is slowest;
- elsewhere: lax's direct conv (``_direct_conv``);

both with custom VJPs: tap by tap on the smallest maps (``_tap_conv_vjp``), else an
input gradient that keeps an HWIO kernel (``_direct_conv_bwd``), which XLA:CPU runs
fast inside ``while`` bodies too. Any other conv is lax's. Why and what it bought:
docs/PERFORMANCE.md items 1, 6 and 7.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


# Which convs run tap by tap (``_tap_conv``), by input map size H * W: up to
# TAP_BACKWARD_PIXELS always (forward and backward); up to TAP_FORWARD_PIXELS only when
# not differentiated (inference, certification) and with at least
# TAP_FORWARD_MIN_CHANNELS input channels (ours, measured on the CPU: at 4x4 the tap-wise
# forward wins with many channels and loses with few; under autodiff it costs temporary
# memory; at 8x8 lax's conv is faster; see docs/PERFORMANCE.md item 7).
TAP_FORWARD_PIXELS = 16
TAP_FORWARD_MIN_CHANNELS = 256
TAP_BACKWARD_PIXELS = 4


def _taps_under_autodiff(x: Array) -> bool:
    """Whether the conv of an NHWC input runs tap by tap when differentiated."""
    return x.shape[1] * x.shape[2] <= TAP_BACKWARD_PIXELS


def runs_tap_by_tap(x: Array) -> bool:
    """Whether ``conv_general_dilated`` of an NHWC input ``x`` runs tap by tap
    (``_tap_conv``; under autodiff its forward rule still picks by ``_taps_under_autodiff``)."""
    return _taps_under_autodiff(x) or (x.shape[1] * x.shape[2] <= TAP_FORWARD_PIXELS
                                       and x.shape[3] >= TAP_FORWARD_MIN_CHANNELS)


def _out_size(n_in: int, size: int, stride: int, pads: tuple[int, int]) -> int:
    return (n_in + pads[0] + pads[1] - size) // stride + 1


def _taps(n_in: int, n_out: int, size: int, stride: int, pad_lo: int) -> list[tuple[int, slice, slice]]:
    """Per kernel tap d: (d, input slice, output slice) of the outputs o whose input
    ``o*stride + d - pad_lo`` lies in the map (a contiguous, strided range); taps that
    reach no input are left out."""
    out = []
    for d in range(size):
        os_ = [o for o in range(n_out) if 0 <= o * stride + d - pad_lo < n_in]
        if os_:
            i0 = os_[0] * stride + d - pad_lo
            out.append((d, slice(i0, i0 + (len(os_) - 1) * stride + 1, stride),
                        slice(os_[0], os_[-1] + 1)))
    return out


def _tap_windows(x_shape: tuple, k_shape: tuple, out_hw: tuple[int, int], strides, pads):
    """Per kernel tap (ty, tx) that reaches the map: ``(ty, tx, xw, yw)``, where ``xw``
    and ``yw`` index the NHWC input pixels it reads and the output pixels it feeds
    (``x[xw]`` and ``y[yw]`` are ``[N, h, w, C]`` windows of the same h x w)."""
    for ty, iy, oy in _taps(x_shape[1], out_hw[0], k_shape[0], strides[0], pads[0][0]):
        for tx, ix, ox in _taps(x_shape[2], out_hw[1], k_shape[1], strides[1], pads[1][0]):
            yield ty, tx, (slice(None), iy, ix), (slice(None), oy, ox)


def _tap_conv_vjp(x: Array, k: Array, g: Array, strides, pads, precision) -> tuple[Array, Array]:
    """``(dx, dk)`` of ``_tap_conv`` at ``(x, k)`` for the output cotangent ``g``,
    tap by tap: for each kernel tap (dy, dx) and the outputs it reaches,
    ``dk[dy, dx] = x_tap^T g_tap`` and ``dx_tap += g_tap k[dy, dx]^T`` (the conv's exact
    multiply-adds, contracting over all pixel pairs of a tap at once)."""
    dk = jnp.zeros(k.shape, jnp.promote_types(x.dtype, g.dtype))
    dx = jnp.zeros(x.shape, jnp.promote_types(g.dtype, k.dtype))
    for ty, tx, xw, yw in _tap_windows(x.shape, k.shape, g.shape[1:3], strides, pads):
        xs, gs = x[xw], g[yw]
        dk = dk.at[ty, tx].set(jnp.einsum("nhwc,nhwo->co", xs, gs, precision=precision))
        dx = dx.at[xw].add(jnp.einsum("nhwo,co->nhwc", gs, k[ty, tx], precision=precision))
    return dx.astype(x.dtype), dk.astype(k.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _tap_conv(x: Array, k: Array, strides: tuple, pads: tuple, precision: Any) -> Array:
    """NHWC x HWIO conv on a small map as one ``[N*h*w, C] @ [C, O]`` matmul per kernel
    tap, over the outputs that tap reaches inside the map, summed in place.

    This does exactly the conv's multiply-adds and none of those on padding, which on
    small maps are many (3x3 SAME: 31 % of a direct conv's work at 4x4, 56 % at 2x2),
    and it reads each tap ``k[dy, dx]`` as it lies in memory (timings: docs/PERFORMANCE.md
    item 7).

    This is the primal, run when nothing differentiates the conv. Under autodiff
    (``_tap_conv_fwd``) maps larger than ``TAP_BACKWARD_PIXELS`` run lax's conv forward
    and ``_direct_conv_bwd`` backward instead, which need less temporary memory; the
    two forwards agree to float32 summation order.
    """
    n, h, w, _ = x.shape
    kh, kw, _, o = k.shape
    ho, wo = _out_size(h, kh, strides[0], pads[0]), _out_size(w, kw, strides[1], pads[1])
    y = jnp.zeros((n, ho, wo, o), jnp.promote_types(x.dtype, k.dtype))
    for ty, tx, xw, yw in _tap_windows(x.shape, k.shape, (ho, wo), strides, pads):
        y = y.at[yw].add(jnp.einsum("nhwc,co->nhwo", x[xw], k[ty, tx], precision=precision))
    return y


def _tap_conv_fwd(x, k, strides, pads, precision):
    if _taps_under_autodiff(x):
        y = _tap_conv(x, k, strides, pads, precision)
    else:
        y = lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=NHWC_HWIO, precision=precision)
    return y, (x, k)


def _tap_conv_bwd(strides, pads, precision, res, g):
    x, k = res
    if _taps_under_autodiff(x):
        return _tap_conv_vjp(x, k, g, strides, pads, precision)
    return _direct_conv_bwd(strides, pads, precision, res, g)


_tap_conv.defvjp(_tap_conv_fwd, _tap_conv_bwd)


NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _nhwc_pads(lhs: Array, rhs: Array, window_strides, padding, lhs_dilation=None,
               rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
               precision=None, **kw) -> tuple | None:
    """The explicit non-negative pads of an NHWC x HWIO conv without dilation or groups
    (the convs of every model here), or None for any other conv."""
    plain = (lhs.ndim == 4 and feature_group_count == 1 and not kw
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1)))
             and dimension_numbers is not None
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC_HWIO)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers))
    if not plain:
        return None
    pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
            if isinstance(padding, str) else padding)
    pads = tuple(tuple(int(v) for v in p) for p in pads)
    return pads if all(v >= 0 for p in pads for v in p) else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _direct_conv(x: Array, k: Array, strides: tuple, pads: tuple, precision: Any) -> Array:
    return lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=NHWC_HWIO, precision=precision)


def _direct_conv_fwd(x, k, strides, pads, precision):
    return _direct_conv(x, k, strides, pads, precision), (x, k)


def _direct_conv_bwd(strides, pads, precision, res, g):
    """The input gradient as a stride-1 conv of the (``strides``-dilated) cotangent with
    the flipped kernel, its in/out axes swapped in the array itself so that it stays an
    HWIO operand. lax's own transpose rule expresses the swap in the dimension labels
    (``01oi``) instead, and XLA:CPU's YNNPACK rewrite does not take such a conv inside a
    ``while`` body: it then runs on the generic path, several times slower (PGD and EOT
    loops; see docs/PERFORMANCE.md item 6). The kernel gradient is lax's (tap by tap, as
    ``_tap_conv_vjp`` computes it, it was faster but took far more temporary memory;
    item 5)."""
    x, k = res
    in_pads = []
    for n_in, n_out, size, s, (lo, _) in zip(x.shape[1:3], g.shape[1:3], k.shape[:2], strides, pads):
        before = size - 1 - lo
        in_pads.append((before, n_in + size - 1 - ((n_out - 1) * s + 1) - before))
    kt = jnp.swapaxes(jnp.flip(k, (0, 1)), 2, 3)
    dx = lax.conv_general_dilated(g, kt, (1, 1), in_pads, lhs_dilation=strides,
                                  dimension_numbers=NHWC_HWIO, precision=precision)
    _, vjp_k = jax.vjp(lambda kk: lax.conv_general_dilated(x, kk, strides, pads, dimension_numbers=NHWC_HWIO,
                                                           precision=precision), k)
    return dx.astype(x.dtype), vjp_k(g)[0]


_direct_conv.defvjp(_direct_conv_fwd, _direct_conv_bwd)


def conv_general_dilated(lhs: Array, rhs: Array, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         precision=None, **kw) -> Array:
    """``lax.conv_general_dilated`` that picks the fastest correct formulation.

    On XLA:CPU a direct 3x3 conv on a 2x2 map with many channels is far slower than the
    same conv as matmuls, and on small maps much of a direct conv's work is on padding
    (docs/PERFORMANCE.md item 1). So NHWC/HWIO convs without dilation or groups on
    maps of at most ``TAP_BACKWARD_PIXELS`` pixels, or of at most ``TAP_FORWARD_PIXELS``
    with at least ``TAP_FORWARD_MIN_CHANNELS`` input channels, run as one matmul per
    kernel tap (``_tap_conv``; the latter only when not differentiated, for memory);
    larger ones run as lax's direct conv; both with custom VJPs whose input gradient
    keeps an HWIO kernel (``_direct_conv_bwd``), tap by tap on maps of at most
    ``TAP_BACKWARD_PIXELS``. Any other conv is lax's, autodiff included. Same values
    (to float32 summation order) and gradients; forward-mode autodiff (``jax.jvp``) is
    not supported through the custom VJPs (models are differentiated in reverse mode).
    """
    pads = _nhwc_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                      dimension_numbers, feature_group_count, precision, **kw)
    if pads is None:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision, **kw)
    strides = tuple(int(s) for s in window_strides)
    if runs_tap_by_tap(lhs):
        return _tap_conv(lhs, rhs, strides, pads, precision)
    return _direct_conv(lhs, rhs, strides, pads, precision)
