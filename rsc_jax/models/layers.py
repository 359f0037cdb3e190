"""Building blocks shared by every architecture: neuron options, normalisation,
spiking activation, and the convolution and BatchNorm every model uses.

Convention (SPEC §2): spiking models take coded input ``[T, B, H, W, C]``, fold time
into the batch (``[T*B, ...]``, ``fold_time``) for convolutions, dense layers and
BatchNorm (whose statistics therefore pool over time and batch, as in SpikingJelly's
multi-step mode), and scan over time only inside the neuron. ANN twins take
``[B, H, W, C]`` and use the same layers with ReLU in place of the neuron (T = 1, no
time axis).

The convolution's arithmetic is a model field (``conv_general_dilated``, with
``lax.conv_general_dilated``'s signature), by default the per-shape formulation of
``models.conv_formulations``; the memory-lean path of ``remat=True`` is
``models.lean``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsc_jax import neurons
from rsc_jax.models import conv_formulations
from rsc_jax.models.lean import LeanBatchNorm, Normalized, PreActivation, bn_lif, conv_spike_residual
from rsc_jax.models.time_axis import MAX_LIF_UNROLL, fold_time, lif_unroll, unfold_time  # noqa: F401  (public)

Array = jax.Array
ConvFn = Callable[..., Array]     # lax.conv_general_dilated's signature
DEFAULT_CONV: ConvFn = conv_formulations.conv_general_dilated


STATE = "assg"       # variable collection of the stateful surrogates' statistics (neurons.STATEFUL)


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
        """``self``, or ValueError ``neuron {field}={value!r} is not allowed; ...``."""
        neurons.check_options(**dataclasses.asdict(self))
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

    A lazy input (``Normalized`` from ``lean.LeanBatchNorm``, or a ``PreActivation`` sum
    of those and arrays: spiking models with ``remat=True``) takes the memory-lean path,
    ``lean.bn_lif``: same spikes, sown current and BN statistics.
    """
    spiking: bool
    T: int
    neuron: Neuron = Neuron()
    sow_name: str | None = None

    @nn.compact
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
        if n.surrogate in neurons.STATEFUL and n.grad_mode == "bptt" and (
                self.is_mutable_collection(STATE) or self.has_variable(STATE, "m")):
            return fold_time(self._stateful(seq))
        s = neurons.lif(seq, tau=n.tau, v_th=n.v_th, reset=n.reset, surrogate=n.surrogate,
                        alpha=n.alpha, detach_reset=n.detach_reset, grad_mode=n.grad_mode,
                        unroll=lif_unroll(self.T))
        return fold_time(s)

    def _stateful(self, seq: Array) -> Array:
        """LIF with ``assg-ema`` whose statistics (M, D) ``[T, B, ...]`` live in the
        ``"assg"`` collection: updated by the pass where the collection is mutable, read
        as they are where it is not (``neurons.lif_layer_surrogate``)."""
        n = self.neuron
        m = self.variable(STATE, "m", jnp.ones, seq.shape, seq.dtype)
        d = self.variable(STATE, "d", jnp.zeros, seq.shape, seq.dtype)
        update = self.is_mutable_collection(STATE)
        s, (m_new, d_new) = neurons.lif_layer_surrogate(
            seq, tau=n.tau, v_th=n.v_th, reset=n.reset, surrogate=n.surrogate, alpha=n.alpha,
            detach_reset=n.detach_reset, state=(m.value, d.value), update=update, unroll=lif_unroll(self.T))
        if update:
            m.value, d.value = m_new, d_new
        return s

    def _lean(self, pre: PreActivation) -> Array:
        """The memory-lean path (``remat=True``): BN(s) + LIF as one custom VJP
        (``lean.bn_lif``), the sown time-mean current as on the plain path, then the
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



def conv(features: int, kernel: int, stride: int = 1, *, name: str, dtype: Any = jnp.float32,
         padding: str | Sequence[tuple[int, int]] = "SAME", spike_input: bool = False,
         conv_general_dilated: ConvFn = DEFAULT_CONV) -> nn.Module:
    """The convolution every model uses (bias-free, as it feeds a BatchNorm).

    A plain ``nn.Conv`` (params ``kernel`` HWIO, no bias) whose convolution is
    ``conv_general_dilated`` (default: ``conv_formulations.conv_general_dilated``, same
    parameters and results as lax's, no conv cliff; the models pass their field).
    ``spike_input`` (lean path): the input is spike-derived and the backward pass
    keeps it in one byte per value (``lean.conv_spike_residual`` around that conv).
    """
    fn = (functools.partial(conv_spike_residual, conv=conv_general_dilated) if spike_input
          else conv_general_dilated)
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=padding,
                   use_bias=False, dtype=dtype, name=name, conv_general_dilated=fn)


BN_MOMENTUM = 0.9     # flax convention: PyTorch's momentum 0.1
BN_EPSILON = 1e-5


def batch_norm(train: bool, *, name: str, dtype: Any = jnp.float32, lean: bool = False) -> nn.Module:
    """BatchNorm with PyTorch's momentum 0.1 (flax ``momentum=0.9``) and eps 1e-5.

    ``lean=True`` (spiking models with ``remat=True``) gives ``lean.LeanBatchNorm``:
    the same variables, but it returns a lazy ``PreActivation`` that the next spiking
    ``Activation`` evaluates together with the LIF in one memory-lean custom VJP.
    """
    cls = LeanBatchNorm if lean else nn.BatchNorm
    return cls(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
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
    lean: bool = False           # memory-lean BN + LIF (lean.bn_lif), for spiking remat=True
    spike_input: bool = False    # lean: the input is spike-derived (lean.conv_spike_residual)
    conv_general_dilated: ConvFn = DEFAULT_CONV

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        h = conv(self.features, self.kernel, self.stride, name="conv", dtype=self.dtype,
                 spike_input=self.lean and self.spiking and self.spike_input,
                 conv_general_dilated=self.conv_general_dilated)(x)
        h = batch_norm(train, name="bn", dtype=self.dtype, lean=self.lean and self.spiking)(h)
        return Activation(self.spiking, self.T, self.neuron, self.sow_name, name="act")(h)


def maybe_remat(cls: type[nn.Module], remat: bool) -> type[nn.Module]:
    """``nn.remat`` of a block whose ``__call__(self, x, train)`` has a static ``train``.

    Callers pass explicit ``name=``: ``nn.remat`` renames auto-named modules, which
    would change the parameter tree between remat and no remat.

    The models use it for the ANN twins only; spiking models with ``remat=True`` take
    the memory-lean BN + LIF path instead (``lean.bn_lif``): on XLA:CPU ``nn.remat`` of
    these unrolled, differently shaped blocks saves no memory (docs/PERFORMANCE.md item 3).
    """
    return nn.remat(cls, static_argnums=(2,)) if remat else cls
