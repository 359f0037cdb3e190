"""The memory-lean training path of spiking models (``remat=True``).

On XLA:CPU ``nn.remat`` of the unscannable, differently shaped conv blocks saves no
memory (XLA drops the barriers and merges the recomputation with the forward pass).
Most of a training step's memory is what autodiff keeps of the elementwise BN + LIF
part (current, membrane potentials and spikes of every step, each ``[T*B, H, W, C]``)
and the spike inputs of the convs in float32. This path keeps less, with the same
variables, forward values bit for bit and gradients up to float rounding:

- ``LeanBatchNorm`` (``nn.BatchNorm``'s variables) returns a lazy ``Normalized``
  (summed with others: ``PreActivation``) that the next spiking ``layers.Activation``
  evaluates with ``bn_lif``: BN (Ioffe & Szegedy 2015) + LIF (``neurons.lif``) as one
  custom VJP that keeps the conv outputs and per-channel moments and recomputes the rest;
- ``conv_spike_residual``: a conv that keeps its spike-derived input as ``uint8(4 x)``.

Memory saved: docs/PERFORMANCE.md item 3.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rsc_jax import backend, neurons
from rsc_jax.models import conv_formulations
from rsc_jax.models.time_axis import fold_time, lean_lif_unroll, unfold_time

if TYPE_CHECKING:      # annotations only: layers imports this module
    from rsc_jax.models.layers import Neuron

Array = jax.Array


def _hashable(v: Any) -> Any:
    if type(v) in (list, tuple):          # not namedtuples (ConvDimensionNumbers)
        return tuple(_hashable(e) for e in v)
    return v


# Spike-derived conv inputs (spikes {0, 1}, their 2x2 averages, SEW sums of spikes) are
# non-negative multiples of 1/4 below 64: SPIKE_RESIDUAL_SCALE * x is an integer that
# uint8 holds exactly.
SPIKE_RESIDUAL_SCALE = 4.0


class _ConvSpec(NamedTuple):
    """The static arguments of one ``conv_spike_residual`` call (hashable); ``kw``: the
    other keyword arguments as sorted (name, value) pairs, ``dtype``: the input's."""
    window_strides: Any
    padding: Any
    kw: tuple
    dtype: Any
    conv: Callable[..., Array]

    def __call__(self, lhs: Array, rhs: Array) -> Array:
        return self.conv(lhs, rhs, self.window_strides, self.padding, **dict(self.kw))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_spike_residual(lhs: Array, rhs: Array, spec: _ConvSpec) -> Array:
    return spec(lhs, rhs)


def _conv_spike_residual_fwd(lhs, rhs, spec):
    narrow = (lhs * SPIKE_RESIDUAL_SCALE).astype(jnp.uint8)
    # The output as the conv computes it under autodiff (its forward rule, which on
    # some small maps differs from its primal in summation order), so that the lean
    # path's forward stays bit for bit the plain path's; the unused VJP is dropped.
    y, _ = jax.vjp(spec, lhs, rhs)
    return y, (narrow, rhs)


def _conv_spike_residual_bwd(spec, res, g):
    narrow, rhs = res
    dtype = spec.dtype
    # Widened inside a conditional on the cotangent (true unless it is NaN), where
    # backend.widen_residual_in_cond(): XLA can then neither fuse the narrowing into the
    # backward pass (it did, keeping the wide input alive) nor hoist the widening into
    # the forward pass. The kernel is tied to the cotangent (_tie_to) so that XLA does
    # not precompute its transposes in the forward pass.
    def widen(n):
        return n.astype(dtype) * jnp.asarray(1.0 / SPIKE_RESIDUAL_SCALE, dtype)
    if backend.widen_residual_in_cond():
        lhs = lax.cond(~jnp.isnan(g.reshape(-1)[0]), widen, lambda n: jnp.zeros(n.shape, dtype), narrow)
    else:
        lhs = widen(narrow)
    rhs = _tie_to(rhs, g)
    _, vjp = jax.vjp(spec, lhs, rhs)
    return vjp(g)


_conv_spike_residual.defvjp(_conv_spike_residual_fwd, _conv_spike_residual_bwd)


def conv_spike_residual(lhs: Array, rhs: Array, window_strides, padding, *,
                        conv: Callable[..., Array] = conv_formulations.conv_general_dilated, **kw) -> Array:
    """``conv(lhs, rhs, window_strides, padding, **kw)`` (default: the models' conv,
    ``conv_formulations.conv_general_dilated``) whose backward pass keeps its input
    (the left operand, needed for the kernel gradient) as ``uint8(4 x)`` (1 byte
    instead of 4): a custom VJP for spike-derived inputs, i.e. non-negative multiples
    of 1/4 below 64 (spikes {0, 1}, their 2x2 averages, sums of a few spikes), which it
    stores exactly, so values and gradients are those of ``conv``. Other inputs would
    be rounded: callers must guarantee the value set."""
    spec = _ConvSpec(_hashable(window_strides), _hashable(padding),
                     tuple(sorted((k, _hashable(v)) for k, v in kw.items())), jnp.dtype(lhs.dtype), conv)
    return _conv_spike_residual(lhs, rhs, spec)


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
    (biased batch variance, not updated during ``init``). Built by
    ``layers.batch_norm``, which passes the models' momentum and epsilon.
    """
    use_running_average: bool
    momentum: float
    epsilon: float
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

    Each float leaf x becomes ``where(isnan(g0), 0, x)`` with g0 one element of ``g``
    (x itself unless the gradient is NaN anyway), so a recomputation from it can neither
    be merged (CSE) with the identical forward computation nor scheduled before ``g``
    exists. (XLA:CPU removes ``lax.optimization_barrier``s before CSE.)
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
    ``h - mu``, per-step pieces and two concatenations of ``dI`` alive; see
    docs/PERFORMANCE.md item 3): every activation-sized expression reads only ``dI``,
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
    operations in their order: same spikes, same statistics). The backward pass keeps
    only the operands (conv outputs ``h_i [T*B, ..., C]``, added arrays, per-channel
    vectors) and the raw batch moments, recomputes BN + LIF from them and
    backpropagates (``_bn_lif_bwd``), so gradients flow as on the plain path, to
    ``h_i``, scale, bias, the added arrays and through the batch statistics, up to
    float rounding (sums in another order).

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
