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
    """
    spiking: bool
    T: int
    neuron: Neuron = Neuron()
    sow_name: str | None = None

    def __call__(self, h: Array) -> Array:
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


# Full unroll of the LIF scan up to this T (XLA fuses the elementwise steps; same
# results bit for bit, ~2x faster LIF forward+backward on CPU, docs/PERFORMANCE.md);
# longer sequences unroll by this factor to bound compile time.
MAX_LIF_UNROLL = 8


def lif_unroll(T: int) -> int | bool:
    """The ``unroll`` the spiking activation passes to ``neurons.lif`` for ``T`` steps."""
    return True if T <= MAX_LIF_UNROLL else MAX_LIF_UNROLL


def fold_time(x: Array) -> Array:
    """``[T, B, ...] -> [T*B, ...]``."""
    return x.reshape((-1, *x.shape[2:]))


def unfold_time(x: Array, T: int) -> Array:
    """``[T*B, ...] -> [T, B, ...]``."""
    if x.shape[0] % T:
        raise ValueError(f"leading axis {x.shape[0]} is not a multiple of T={T}")
    return x.reshape((T, x.shape[0] // T, *x.shape[1:]))


# Largest input map (H * W) that ``conv_general_dilated`` computes as one dense matmul.
SMALL_MAP_PIXELS = 4


def _window_matrix(n_in: int, n_out: int, size: int, stride: int, pad_lo: int) -> np.ndarray:
    """0/1 ``[size, n_in, n_out]``: tap d of output o reads input ``o*stride + d - pad_lo``."""
    a = np.zeros((size, n_in, n_out), np.float32)
    for o in range(n_out):
        for d in range(size):
            i = o * stride + d - pad_lo
            if 0 <= i < n_in:
                a[d, i, o] = 1.0
    return a


def _dense_small_map_conv(x: Array, k: Array, strides, pads, precision) -> Array:
    """NHWC x HWIO conv on a tiny map as ``x[N, H*W*C] @ M[H*W*C, Ho*Wo*O]``.

    M holds the kernel taps that reach each (input, output) pixel pair and zeros
    elsewhere, so the matmul does exactly the conv's multiply-adds (no padding taps)
    and its gradient is two matmuls plus a small einsum on the kernel.
    """
    n, h, w, c = x.shape
    kh, kw, _, o = k.shape
    (pt, pb), (pl, pr) = pads
    ho = (h + pt + pb - kh) // strides[0] + 1
    wo = (w + pl + pr - kw) // strides[1] + 1
    a = _window_matrix(h, ho, kh, strides[0], pt).astype(k.dtype)
    b = _window_matrix(w, wo, kw, strides[1], pl).astype(k.dtype)
    m = jnp.einsum("yhH,xwW,yxio->hwiHWo", a, b, k, precision=precision)
    y = jnp.dot(x.reshape(n, h * w * c), m.reshape(h * w * c, ho * wo * o), precision=precision)
    return y.reshape(n, ho, wo, o)


def conv_general_dilated(lhs: Array, rhs: Array, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         precision=None, **kw) -> Array:
    """``lax.conv_general_dilated`` that picks the fastest correct formulation.

    On XLA:CPU a direct 3x3 conv on a 2x2 map with 512 channels is ~40x slower than
    the same conv as a matmul (docs/PERFORMANCE.md); from 4x4 up the direct conv wins.
    So NHWC/HWIO convs without dilation or groups on maps of at most
    ``SMALL_MAP_PIXELS`` pixels run as one dense matmul; everything else is lax's.
    """
    fast = (lhs.ndim == 4 and feature_group_count == 1 and not kw
            and lhs.shape[1] * lhs.shape[2] <= SMALL_MAP_PIXELS
            and all(d == 1 for d in (lhs_dilation or (1, 1)))
            and all(d == 1 for d in (rhs_dilation or (1, 1)))
            and dimension_numbers is not None
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
            == lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers))
    if fast:
        pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
                if isinstance(padding, str) else padding)
        pads = tuple(tuple(int(v) for v in p) for p in pads)
        if all(v >= 0 for p in pads for v in p):
            return _dense_small_map_conv(lhs, rhs, tuple(window_strides), pads, precision)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kw)


def conv(features: int, kernel: int, stride: int = 1, *, name: str, dtype: Any = jnp.float32,
         padding: str | Sequence[tuple[int, int]] = "SAME") -> nn.Module:
    """The convolution every model uses (bias-free, as it feeds a BatchNorm).

    A plain ``nn.Conv`` (params ``kernel`` HWIO, no bias) whose convolution is
    ``conv_general_dilated`` above: same parameters and results, no conv cliff.
    """
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=padding,
                   use_bias=False, dtype=dtype, name=name, conv_general_dilated=conv_general_dilated)


def batch_norm(train: bool, *, name: str, dtype: Any = jnp.float32) -> nn.Module:
    """BatchNorm with PyTorch's momentum 0.1 (flax ``momentum=0.9``) and eps 1e-5."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, name=name)


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

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        h = conv(self.features, self.kernel, self.stride, name="conv", dtype=self.dtype)(x)
        h = batch_norm(train, name="bn", dtype=self.dtype)(h)
        return Activation(self.spiking, self.T, self.neuron, self.sow_name, name="act")(h)


def maybe_remat(cls: type[nn.Module], remat: bool) -> type[nn.Module]:
    """``nn.remat`` of a block whose ``__call__(self, x, train)`` has a static ``train``.

    Callers pass explicit ``name=``: ``nn.remat`` renames auto-named modules, which
    would change the parameter tree between remat and no remat.
    """
    return nn.remat(cls, static_argnums=(2,)) if remat else cls
