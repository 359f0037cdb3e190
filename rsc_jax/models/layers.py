"""Building blocks shared by every architecture: normalisation, time folding, spiking
activation, and the one convolution every model uses.

Convention (SPEC §2): spiking models take coded input ``[T, B, H, W, C]``, fold time
into the batch (``[T*B, ...]``) for convolutions, dense layers and BatchNorm (whose
statistics therefore pool over time and batch, as in SpikingJelly's multi-step mode),
and scan over time only inside the neuron. ANN twins take ``[B, H, W, C]`` and use the
same layers with ReLU in place of the neuron (T = 1, no time axis).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rsc_jax import neurons

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Neuron:
    """LIF options (SPEC §2 defaults). ``alpha=None`` takes the surrogate's default."""
    tau: float = 2.0
    v_th: float = 1.0
    reset: str = "hard"
    surrogate: str = "sigmoid"
    alpha: float | None = None
    detach_reset: bool = False
    grad_mode: str = "bptt"

    def validate(self) -> "Neuron":
        if self.reset not in neurons.RESETS:
            raise ValueError(f"neuron reset={self.reset!r} is not known; allowed: {list(neurons.RESETS)}")
        if self.grad_mode not in neurons.GRAD_MODES:
            raise ValueError(f"neuron grad_mode={self.grad_mode!r} is not known; "
                             f"allowed: {list(neurons.GRAD_MODES)}")
        if not self.tau >= 1.0:
            raise ValueError(f"neuron tau={self.tau!r} is not allowed; tau must be >= 1")
        if not self.v_th > 0:
            raise ValueError(f"neuron v_th={self.v_th!r} is not allowed; v_th must be > 0")
        neurons.resolve_alpha(self.surrogate, self.alpha)
        return self


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: the dataset normalisation, after the coding."""
    mean: Sequence[float]
    std: Sequence[float]

    def __call__(self, x: Array) -> Array:
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        return (x - mean) / std


class Activation(nn.Module):
    """LIF over time (spiking) or ReLU (ANN twin), on time-folded input ``[T*B, ...]``.

    When ``sow_name`` is set, the pre-synaptic input (the current that feeds the
    neuron; for the ANN the pre-ReLU value) is sown into the ``intermediates``
    collection: time-averaged to ``[B, ...]`` for spiking models (SPEC §3, E-RSCT).

    A lazy input (``Normalized`` from ``LeanBatchNorm``, or a ``PreActivation`` sum of
    those and arrays: spiking models with ``remat=True``) takes the memory-lean path,
    ``bn_lif``: same spikes, sown current and BN statistics.
    """
    spiking: bool
    T: int
    neuron: Neuron = Neuron()
    sow_name: str | None = None

    def __call__(self, h: Array | Normalized | PreActivation) -> Array:
        if isinstance(h, Normalized):
            h = PreActivation((h,))
        if isinstance(h, PreActivation):
            return self._lean(h)
        if not self.spiking:
            if self.sow_name:
                self.sow("intermediates", self.sow_name, h)
            return nn.relu(h)
        n = self.neuron
        seq = unfold_time(h, self.T)
        if self.sow_name:
            self.sow("intermediates", self.sow_name, seq.mean(axis=0))
        s = neurons.lif(seq, tau=n.tau, v_th=n.v_th, reset=n.reset, surrogate=n.surrogate,
                        alpha=n.alpha, detach_reset=n.detach_reset, grad_mode=n.grad_mode,
                        unroll=lif_unroll(self.T))
        return fold_time(s)

    def _lean(self, pre: PreActivation) -> Array:
        """The memory-lean path (``remat=True``): BN(s) + LIF as one custom VJP
        (``bn_lif``), the sown time-mean current as on the plain path, then the
        running-average updates of the BN modules (those using batch statistics)."""
        if not self.spiking:
            raise ValueError("the lean BN + activation path is for spiking models only")
        sow = bool(self.sow_name) and self.is_mutable_collection("intermediates")
        s, pre_mean, stats = bn_lif(pre, self.T, self.neuron, sow=sow)
        if sow:
            self.sow("intermediates", self.sow_name, pre_mean)
        batch_bns = [o.module for o in pre.operands
                     if isinstance(o, Normalized) and not o.module.use_running_average]
        for module, (mean, var) in zip(batch_bns, stats, strict=True):
            module.update_running_average(mean, var)
        return s


# Full unroll of the LIF scan up to this T (XLA fuses the elementwise steps; same
# results bit for bit, ~2x faster LIF forward+backward on CPU, docs/PERFORMANCE.md);
# longer sequences unroll by this factor to bound compile time.
MAX_LIF_UNROLL = 8


def lif_unroll(T: int) -> int | bool:
    """The ``unroll`` the spiking activation passes to ``neurons.lif`` for ``T`` steps."""
    return True if T <= MAX_LIF_UNROLL else MAX_LIF_UNROLL


# The lean path (remat=True, ``bn_lif``) unrolls fully up to this T: XLA:CPU's while
# loops copy their [T, ...] state, which at T = 16 cost VGG-11's lean step 3.7x its
# memory (1903 vs 518 MiB); compilation takes ~2x longer instead.
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


# Which convs run tap by tap (``_tap_conv``), by input map size H * W: up to
# TAP_BACKWARD_PIXELS always (forward and backward); up to TAP_FORWARD_PIXELS only when
# not differentiated (inference, certification) and with at least
# TAP_FORWARD_MIN_CHANNELS input channels. Ours, measured on the CPU (docs/PERFORMANCE.md,
# item 7): at 4x4 the tap-wise forward is 15-30 % faster than lax's conv with 256-512
# channels (VGG-11) but ~15 % slower with 32 (the digits convnet's certification); under
# autodiff it raised the compiled temporary memory of a VGG-11 training step by 13-15 MiB
# (lean: 130 -> 145 MiB at T = 4) for a 2 % faster step, and the tap-wise backward needs
# several times lax's temporary memory there; at 8x8 lax's conv is faster.
TAP_FORWARD_PIXELS = 16
TAP_FORWARD_MIN_CHANNELS = 256
TAP_BACKWARD_PIXELS = 4


def _taps_under_autodiff(x: Array) -> bool:
    """Whether the conv of an NHWC input runs tap by tap when differentiated."""
    return x.shape[1] * x.shape[2] <= TAP_BACKWARD_PIXELS


def _taps_when_not_differentiated(x: Array) -> bool:
    """Whether the conv of an NHWC input runs tap by tap when nothing differentiates it."""
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
    and it reads each tap ``k[dy, dx]`` as it lies in memory. VGG-11 at batch 128 on the
    CPU: 2x2 512->512 forward 6.9 ms (PyTorch's conv 9.4 ms; lax's direct conv on
    XLA:CPU is ~40x slower there, JAX_RECIPES §7); 4x4 512->512 35 ms against 46-51 ms
    for lax's conv (docs/PERFORMANCE.md, item 7).

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
    ``while`` body: it then runs on the generic path, ~2.5x slower (PGD and EOT loops;
    docs/PERFORMANCE.md). The kernel gradient is lax's (computing it tap by tap, as
    ``_tap_conv_vjp`` does, took ~10 % off a VGG-11 step on the CPU but raised its
    compiled temporary memory by 60-180 %)."""
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

    On XLA:CPU a direct 3x3 conv on a 2x2 map with 512 channels is ~40x slower than
    the same conv as matmuls, and on small maps much of a direct conv's work is on
    padding (docs/PERFORMANCE.md). So NHWC/HWIO convs without dilation or groups on
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
    if _taps_when_not_differentiated(lhs):
        return _tap_conv(lhs, rhs, strides, pads, precision)
    return _direct_conv(lhs, rhs, strides, pads, precision)


def _hashable(v: Any) -> Any:
    if type(v) in (list, tuple):          # not namedtuples (ConvDimensionNumbers)
        return tuple(_hashable(e) for e in v)
    return v


# Spike-derived conv inputs (spikes {0, 1}, their 2x2 averages, SEW sums of spikes) are
# non-negative multiples of 1/4 below 64: SPIKE_RESIDUAL_SCALE * x is an integer that
# uint8 holds exactly.
SPIKE_RESIDUAL_SCALE = 4.0


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_spike_residual(lhs: Array, rhs: Array, spec: tuple) -> Array:
    return conv_general_dilated(lhs, rhs, *spec[:2], **dict(spec[2]))


def _conv_spike_residual_fwd(lhs, rhs, spec):
    narrow = (lhs * SPIKE_RESIDUAL_SCALE).astype(jnp.uint8)
    # The output as conv_general_dilated computes it under autodiff (its forward rule,
    # which on some small maps differs from its primal in summation order), so that the
    # lean path's forward stays bit for bit the plain path's; the unused VJP is dropped.
    y, _ = jax.vjp(lambda a, b: conv_general_dilated(a, b, *spec[:2], **dict(spec[2])), lhs, rhs)
    return y, (narrow, rhs)


def _conv_spike_residual_bwd(spec, res, g):
    narrow, rhs = res
    dtype = spec[3]
    # Widened inside a conditional on the cotangent (always true unless it is NaN): XLA
    # can neither fuse the narrowing into the backward pass (it did, reading the wide
    # input there and keeping it alive: the wide input is what the narrowing computes
    # from) nor hoist the widening into the forward pass. The kernel is tied to the
    # cotangent (_tie_to) so that XLA does not precompute its transposes in the forward
    # pass.
    # Only on the CPU: elsewhere a conditional may cost a device-to-host sync per conv,
    # and GPU/TPU schedulers are memory-aware without it.
    def widen(n):
        return n.astype(dtype) * jnp.asarray(1.0 / SPIKE_RESIDUAL_SCALE, dtype)
    if jax.default_backend() == "cpu":
        lhs = lax.cond(~jnp.isnan(g.reshape(-1)[0]), widen, lambda n: jnp.zeros(n.shape, dtype), narrow)
    else:
        lhs = widen(narrow)
    rhs = _tie_to(rhs, g)
    kw = dict(spec[2])
    _, vjp = jax.vjp(lambda a, b: conv_general_dilated(a, b, *spec[:2], **kw), lhs, rhs)
    return vjp(g)


_conv_spike_residual.defvjp(_conv_spike_residual_fwd, _conv_spike_residual_bwd)


def conv_spike_residual(lhs: Array, rhs: Array, window_strides, padding, **kw) -> Array:
    """``conv_general_dilated`` whose backward pass keeps its input (the left operand,
    needed for the kernel gradient) as ``uint8(4 x)`` (1 byte instead of 4): a
    custom VJP for spike-derived inputs, i.e. non-negative multiples of 1/4 below 64
    (spikes {0, 1}, their 2x2 averages, sums of a few spikes), which it stores
    exactly, so values and gradients are those of ``conv_general_dilated``. Other
    inputs would be rounded: callers must guarantee the value set."""
    spec = (_hashable(window_strides), _hashable(padding),
            tuple(sorted((k, _hashable(v)) for k, v in kw.items())), jnp.dtype(lhs.dtype))
    return _conv_spike_residual(lhs, rhs, spec)


def conv(features: int, kernel: int, stride: int = 1, *, name: str, dtype: Any = jnp.float32,
         padding: str | Sequence[tuple[int, int]] = "SAME", spike_input: bool = False) -> nn.Module:
    """The convolution every model uses (bias-free, as it feeds a BatchNorm).

    A plain ``nn.Conv`` (params ``kernel`` HWIO, no bias) whose convolution is
    ``conv_general_dilated`` above: same parameters and results, no conv cliff.
    ``spike_input`` (lean path): the input is spike-derived and the backward pass
    keeps it in one byte per value (``conv_spike_residual``).
    """
    fn = conv_spike_residual if spike_input else conv_general_dilated
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=padding,
                   use_bias=False, dtype=dtype, name=name, conv_general_dilated=fn)


BN_MOMENTUM = 0.9     # flax convention: PyTorch's momentum 0.1
BN_EPSILON = 1e-5


def batch_norm(train: bool, *, name: str, dtype: Any = jnp.float32, lean: bool = False) -> nn.Module:
    """BatchNorm with PyTorch's momentum 0.1 (flax ``momentum=0.9``) and eps 1e-5.

    ``lean=True`` (spiking models with ``remat=True``) gives ``LeanBatchNorm``: the
    same variables, but it returns a lazy ``PreActivation`` that the next spiking
    ``Activation`` evaluates together with the LIF in one memory-lean custom VJP.
    """
    cls = LeanBatchNorm if lean else nn.BatchNorm
    return cls(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
               dtype=dtype, name=name)


# --------------------------------------------------------------------------- lean BN + LIF
#
# The memory-lean path of spiking models with ``remat=True``. On XLA:CPU ``nn.remat``
# (``jax.checkpoint``) of the unscannable, differently shaped conv blocks saves no
# memory: XLA:CPU drops optimization barriers, merges the recomputation with the
# forward pass (CSE) and keeps everything alive (docs/PERFORMANCE.md). Most of the
# training step's memory is what autodiff keeps for the backward pass of the
# elementwise BN + LIF part (normalised current, membrane potentials and spikes of
# every step, each of the size of the conv output) and the conv inputs (spikes) in
# float32. So instead:
#
# - ``bn_lif``: BN (batch or running statistics) + LIF as one custom VJP that keeps only
#   the conv output and per-channel vectors, and recomputes BN + LIF (elementwise work)
#   in the backward pass, tied to the cotangent (``_tie_to``) so that XLA cannot merge
#   or hoist the recomputation;
# - ``conv_spike_residual``: a conv whose backward pass keeps its spike-derived input
#   in one byte per value (exactly).
#
# Same variables, same values, same gradients up to float rounding (the backward pass
# sums in another order); VGG-11 (batch 32, 32x32) training step temporary memory at
# T = 4: 287 -> 137 MiB (benchmarks/run.py --suite=memory).

class Normalized:
    """A lazy BN output ``BN(h)`` (``LeanBatchNorm``'s return value): the input ``h``
    ``[N, ..., C]``, the module's ``scale``/``bias`` ``[C]``, the running ``mean``/``var``
    ``[C]`` (used when ``use_running_average``), and the module, for the update."""

    def __init__(self, h: Array, scale: Array, bias: Array, mean: Array, var: Array,
                 module: LeanBatchNorm) -> None:
        self.h, self.scale, self.bias, self.mean, self.var, self.module = h, scale, bias, mean, var, module

    def __add__(self, other: Any) -> PreActivation:
        return PreActivation((self,)) + other

    def __radd__(self, other: Any) -> PreActivation:
        return PreActivation((self,)).__radd__(other)


class PreActivation:
    """A lazy sum ``operands[0] + operands[1] + ...`` (left to right, as the plain
    path adds them) of ``Normalized`` BN outputs and arrays: the input current of a
    lean spiking ``Activation``. Anything else than ``+`` or feeding an
    ``Activation`` fails loudly (no ``shape``, no arithmetic)."""

    def __init__(self, operands: tuple) -> None:
        self.operands = operands

    def __add__(self, other: Any) -> PreActivation:
        if isinstance(other, PreActivation):
            if len(other.operands) != 1:
                raise TypeError("lean BN: a + (b + c) is not supported (rounding differs from the plain path)")
            other = other.operands[0]
        if not isinstance(other, (Normalized, jax.Array, np.ndarray)):
            return NotImplemented
        return PreActivation(self.operands + (other,))

    def __radd__(self, other: Any) -> PreActivation:
        if len(self.operands) != 1:     # other + (a + b) would round differently from (other + a) + b
            raise TypeError("lean BN: a + (b + c) is not supported (rounding differs from the plain path)")
        if not isinstance(other, (Normalized, jax.Array, np.ndarray)):
            return NotImplemented
        return PreActivation((other,) + self.operands)   # x + y == y + x exactly


class LeanBatchNorm(nn.Module):
    """``nn.BatchNorm``'s variables (same names, shapes, dtypes, initial values and
    creation order: ``batch_stats/{mean, var}`` then ``params/{scale, bias}``), with
    the arithmetic deferred to the next spiking ``Activation`` (see ``bn_lif``).

    The running averages are updated there, by ``update_running_average``, exactly
    as ``nn.BatchNorm`` does: ``r <- momentum * r + (1 - momentum) * batch_stat``
    (biased batch variance, not updated during ``init``).
    """
    use_running_average: bool
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Array) -> Normalized:
        c = h.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return Normalized(h, scale, bias, ra_mean.value, ra_var.value, self)

    def update_running_average(self, mean: Array, var: Array) -> None:
        if self.use_running_average or self.is_initializing():
            return
        m = self.momentum
        self.put_variable("batch_stats", "mean", m * self.get_variable("batch_stats", "mean") + (1 - m) * mean)
        self.put_variable("batch_stats", "var", m * self.get_variable("batch_stats", "var") + (1 - m) * var)


def _raw_moments(h: Array) -> tuple[Array, Array]:
    """``(E[x], E[x^2])`` per channel (last axis) of ``x = h`` in float32 (at least)."""
    x = h.astype(jnp.promote_types(h.dtype, jnp.float32))
    axes = tuple(range(h.ndim - 1))
    return x.mean(axes), lax.square(x).mean(axes)


def _bn_vectors(train: bool, epsilon: float, m1: Array, m2: Array, scale: Array
                ) -> tuple[Array, Array, Array]:
    """Per-channel ``(mu, mul, var)`` of BN: from the raw moments ``m1 = E[h]``,
    ``m2 = E[h^2]`` (``train``: ``mu = m1``, ``var = max(0, m2 - m1^2)``) or from the
    running ``m1 = mean``, ``m2 = var``; ``mul = scale / sqrt(var + eps)``."""
    if train:
        mu, var = m1, jnp.maximum(0.0, m2 - lax.square(m1))
    else:
        mu, var = m1, m2
    return mu, lax.rsqrt(var + epsilon) * scale, var


@dataclasses.dataclass(frozen=True)
class _BNLIFConfig:
    kinds: tuple[str, ...]        # per operand of the sum: "bn" or "add"
    train: tuple[bool, ...]       # per operand: batch statistics (True) or running ones
    epsilon: tuple[float, ...]
    dtype: tuple[Any, ...]        # per operand: the BN's output dtype
    T: int
    neuron: Neuron
    sow: bool


def _lif_and_mean(cfg: _BNLIFConfig, current: Array) -> tuple[Array, Array | None]:
    """LIF spikes ``[T*B, ...]`` of the folded current, and its time mean (if sown)."""
    n = cfg.neuron
    seq = unfold_time(current, cfg.T)
    s = neurons.lif(seq, tau=n.tau, v_th=n.v_th, reset=n.reset, surrogate=n.surrogate, alpha=n.alpha,
                    detach_reset=n.detach_reset, grad_mode=n.grad_mode, unroll=lean_lif_unroll(cfg.T))
    return fold_time(s), (seq.mean(axis=0) if cfg.sow else None)


def _current(cfg: _BNLIFConfig, operands: tuple, vectors: list) -> Array:
    """``I = op_0 + op_1 + ...`` (left to right); a BN operand is
    ``y = (h - mu) * mul + bias`` with ``mul = scale / sqrt(var + eps)``, cast to the
    BN dtype (``nn.BatchNorm``'s operations in its order, so the same bits; Ioffe &
    Szegedy 2015, Alg. 1); other operands are added as they are."""
    cur = None
    for kind, dtype, op, vec in zip(cfg.kinds, cfg.dtype, operands, vectors):
        if kind == "bn":
            mu, mul, bias = vec
            y = jnp.asarray((op[0] - mu) * mul + bias, dtype)
        else:
            y = op
        cur = y if cur is None else cur + y
    return cur


def _bn_lif_forward(cfg: _BNLIFConfig, operands: tuple) -> tuple[tuple, tuple]:
    """The plain path's computation: current ``I = sum_i op_i`` with ``op_i =
    BN_i(h_i)`` or an added array, then LIF over T.

    Returns ``((spikes [T*B, ...], mean_t I [B, ...] or None, ((mu_i, var_i) per BN with
    batch statistics)), per operand the raw batch moments (E[h_i], E[h_i^2]) of a BN
    with batch statistics, else None)``.
    """
    vectors, stats, moments = [], [], []
    for kind, train, eps, op in zip(cfg.kinds, cfg.train, cfg.epsilon, operands):
        if kind != "bn":
            vectors.append(None)
            moments.append(None)
            continue
        h, scale, bias, ra_mean, ra_var = op
        m = _raw_moments(h) if train else None
        mu, mul, var = _bn_vectors(train, eps, *(m if train else (ra_mean, ra_var)), scale)
        if train:
            stats.append((mu, var))
        vectors.append((mu, mul, bias))
        moments.append(m)
    s, pre_mean = _lif_and_mean(cfg, _current(cfg, operands, vectors))
    return (s, pre_mean, tuple(stats)), tuple(moments)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bn_lif(cfg: _BNLIFConfig, operands: tuple) -> tuple:
    return _bn_lif_forward(cfg, operands)[0]


def _bn_lif_fwd(cfg, operands):
    # Residuals: the operands (conv outputs h_i, per-channel vectors, added arrays) and
    # the per-channel raw batch moments; not the current, membrane potentials or
    # spikes of every step, which autodiff would keep.
    out, moments = _bn_lif_forward(cfg, operands)
    return out, (operands, moments)


def _tie_to(tree: Any, g: Array) -> Any:
    """``tree`` made data-dependent on the array ``g`` without changing its values.

    Each float leaf x becomes ``where(isnan(g0), 0, x)`` with g0 one element of ``g``:
    x itself unless g0 is NaN (then the gradient is NaN anyway). A recomputation from
    the result can then neither be merged (CSE) with the identical forward computation
    nor scheduled before ``g`` exists. ``lax.optimization_barrier`` would say this
    directly, but XLA:CPU removes barriers before CSE, so the forward's normalised
    current and membrane potentials were kept alive for the backward pass.
    """
    nan = jnp.isnan(g.reshape(-1)[0])
    return jax.tree.map(lambda x: jnp.where(nan, jnp.zeros((), x.dtype), x), tree)


def _bn_lif_bwd(cfg, res, cts):
    """Recomputes the current and the LIF from the residuals and backpropagates.

    Per BN, ``(mu, mul, var) = _bn_vectors(...)`` is recomputed with its VJP (per
    channel) and tied to the spikes' cotangent (``_tie_to``); ``I`` is recomputed from
    ``h``; ``dI`` is the VJP of ``neurons.lif`` (and of the time mean, if sown) at
    ``I``. Then, per BN, with ``dy = dI`` and sums over all axes but channels (BN's
    backward pass written out, Ioffe & Szegedy 2015, for flax's ``var = E[h^2] -
    E[h]^2``):

        dbias = sum(dy),  dmul = sum(dy * (h - mu)) = sum(dy * h) - mu * dbias,
        dmu = -mul * dbias (+ the cotangent of the returned batch mean),
        (dm1, dm2, dscale) = VJP of _bn_vectors,  dh = dy * mul + dm1 / N + 2 h dm2 / N

    (N elements per channel; ``dh = dy * mul`` and ``(dmean, dvar)`` from the VJP with
    running statistics); added arrays get ``dI``. Written out so that XLA:CPU keeps
    no activation-sized intermediate but ``dI`` (autodiff of the recomputation kept
    ``h - mu``, per-step pieces and two concatenations of ``dI`` alive, +50% at
    VGG-11's first layer): every activation-sized expression reads only ``dI``,
    ``h`` and per-channel vectors, in the ``[T, B, ...]`` layout of the LIF's VJP,
    and the reductions read whole arrays (XLA:CPU's reduction kernels fuse neither
    broadcasts nor slices, which would be materialised: ``h - mu``, per-step copies).
    ``sum(dy * h) - mu * dbias`` rounds like flax's ``E[h^2] - E[h]^2`` variance: it
    loses digits only when |mu| >> std(h).
    """
    operands, moments = res
    g_s, g_pre, g_stats = cts
    vectors, vec_vjps = [], []
    for kind, train, eps, op, m in zip(cfg.kinds, cfg.train, cfg.epsilon, operands, moments):
        if kind != "bn":
            vectors.append(None)
            vec_vjps.append(None)
            continue
        h, scale, bias, ra_mean, ra_var = op
        (mu, mul, _), vjp = jax.vjp(functools.partial(_bn_vectors, train, eps),
                                    *(m if train else (ra_mean, ra_var)), scale)
        vectors.append(_tie_to((mu, mul, bias), g_s))
        vec_vjps.append(vjp)
    _, lif_vjp = jax.vjp(functools.partial(_lif_and_mean, cfg), _current(cfg, operands, vectors))
    (d_cur,) = lif_vjp((g_s, g_pre))
    grads, k = [], 0
    for kind, train, op, vec, vjp in zip(cfg.kinds, cfg.train, operands, vectors, vec_vjps):
        if kind != "bn":
            grads.append(d_cur.astype(op.dtype))
            continue
        h, scale, bias, ra_mean, ra_var = op
        mu, mul, _ = vec
        ftype = jnp.promote_types(h.dtype, jnp.float32)
        x = unfold_time(h, cfg.T).astype(ftype)
        dy = unfold_time(d_cur, cfg.T).astype(ftype)
        axes = tuple(range(x.ndim - 1))
        d_bias = dy.sum(axes)
        d_mul = (dy * x).sum(axes) - mu * d_bias
        d_mu = -(d_bias * mul)
        d_var = jnp.zeros_like(d_mu)
        if train:
            g_mu, g_var = g_stats[k]
            k += 1
            d_mu, d_var = d_mu + g_mu, d_var + g_var
        d_m1, d_m2, d_scale = vjp((d_mu, d_mul, d_var))
        if train:
            n = math.prod(h.shape[:-1])
            dh = dy * mul + d_m1 / n + x * (2.0 * (d_m2 / n))
        else:
            dh = dy * mul
        grads.append((fold_time(dh).astype(h.dtype), d_scale.astype(scale.dtype), d_bias.astype(bias.dtype),
                      None if train else d_m1.astype(ra_mean.dtype),
                      None if train else d_m2.astype(ra_var.dtype)))
    return (tuple(grads),)


_bn_lif.defvjp(_bn_lif_fwd, _bn_lif_bwd)


def bn_lif(pre: PreActivation, T: int, neuron: Neuron, *, sow: bool = False
           ) -> tuple[Array, Array | None, tuple]:
    """BatchNorm(s) + LIF with a memory-lean backward pass (spiking ``remat=True``).

    Computes the input current ``I = sum_i op_i`` over the operands of ``pre``
    (``Normalized`` BN outputs ``BN_i(h_i) = (h_i - mu_i) * scale_i / sqrt(var_i + eps)
    + bias_i``, Ioffe & Szegedy 2015, with batch statistics mu_i, var_i over the folded
    ``[T*B, ...]`` batch in training mode and the running ones otherwise; or plain
    arrays, e.g. a residual shortcut), then the LIF recurrence over T of
    ``neurons.lif`` (charge, fire with the surrogate, hard/soft reset, detach_reset,
    bptt/bptr) on ``I`` unfolded to ``[T, B, ...]``.

    The forward pass is the plain path's (``nn.BatchNorm``'s and ``Activation``'s
    operations in their order: same spikes, same statistics). What differs is what
    the backward pass keeps: only the operands (conv outputs ``h_i [T*B, ..., C]``,
    added arrays, per-channel vectors) and the raw batch moments, not the
    normalised current, membrane potentials and spikes of every step; it recomputes
    BN + LIF from them (elementwise work) and backpropagates (``_bn_lif_bwd``: the
    LIF's own VJP, with its surrogate, reset and grad mode, and BN's backward pass
    written out), so gradients flow to ``h_i``, scale, bias, the added arrays and,
    through the batch statistics, as in BN's own backward. They equal the plain
    path's up to float rounding (sums in another order).

    Returns:
      ``(spikes [T*B, ...], mean_t I [B, ...] (if sow, else None), ((mu_i, var_i) for
      each BN using batch statistics))``.
    """
    kinds, train, eps, dtypes, operands = [], [], [], [], []
    for op in pre.operands:
        if isinstance(op, Normalized):
            m = op.module
            use_batch = not m.use_running_average
            kinds.append("bn")
            train.append(use_batch)
            eps.append(float(m.epsilon))
            dtypes.append(jnp.dtype(m.dtype) if m.dtype is not None else None)
            operands.append((op.h, op.scale, op.bias, None if use_batch else op.mean,
                             None if use_batch else op.var))
        else:
            kinds.append("add")
            train.append(False)
            eps.append(0.0)
            dtypes.append(None)
            operands.append(op)
    cfg = _BNLIFConfig(tuple(kinds), tuple(train), tuple(eps), tuple(dtypes), T, neuron, bool(sow))
    return _bn_lif(cfg, tuple(operands))


class ConvBNAct(nn.Module):
    """conv -> BN -> activation, the unit of VGG and of the small convnet."""
    features: int
    spiking: bool
    T: int
    neuron: Neuron = Neuron()
    kernel: int = 3
    stride: int = 1
    sow_name: str | None = None
    dtype: Any = jnp.float32
    lean: bool = False           # memory-lean BN + LIF (bn_lif), for spiking remat=True
    spike_input: bool = False    # lean: the input is spike-derived (conv_spike_residual)

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        h = conv(self.features, self.kernel, self.stride, name="conv", dtype=self.dtype,
                 spike_input=self.lean and self.spiking and self.spike_input)(x)
        h = batch_norm(train, name="bn", dtype=self.dtype, lean=self.lean and self.spiking)(h)
        return Activation(self.spiking, self.T, self.neuron, self.sow_name, name="act")(h)


def maybe_remat(cls: type[nn.Module], remat: bool) -> type[nn.Module]:
    """``nn.remat`` of a block whose ``__call__(self, x, train)`` has a static ``train``.

    Callers pass explicit ``name=``: ``nn.remat`` renames auto-named modules, which
    would change the parameter tree between remat and no remat.

    The models use it for the ANN twins only; spiking models with ``remat=True`` take
    the memory-lean BN + LIF path instead (``bn_lif``): on XLA:CPU ``nn.remat`` of
    these unrolled, differently shaped blocks saves no memory (docs/PERFORMANCE.md).
    """
    return nn.remat(cls, static_argnums=(2,)) if remat else cls
