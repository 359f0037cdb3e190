"""Leaky integrate-and-fire (LIF) neurons with surrogate gradients, unrolled by scan.

Dynamics (SPEC §2; Wu et al., ACM MM 2024 follow the usual discrete LIF of
SpikingJelly, Fang et al., 2023), per step t with input current I_t:

    u_t = (1 - 1/tau) * v_{t-1} + I_t          (charge)
    s_t = H(u_t - v_th)                          (fire)
    v_t = u_t * (1 - s_t)          hard reset    (to 0)
    v_t = u_t - v_th * s_t         soft reset    (subtract threshold)

``detach_reset`` stops the gradient through s_t in the reset term. The Heaviside step
H has a surrogate derivative in the backward pass, chosen by name (x = u - v_th):

- ``sigmoid`` (alpha 4):  alpha * sig(alpha x) * (1 - sig(alpha x))
- ``atan``    (alpha 2):  (alpha / 2) / (1 + (pi/2 * alpha * x)^2)
- ``triangle`` (alpha = gamma = 1): max(0, gamma - |x|) / gamma^2
- ``rectangle`` (alpha = width a = 1): 1{|x| < a/2} / a

and two whose sharpness adapts to the input, from the statistics of x over the layer
(per example: every axis but the batch axis 0, at that time step), for attacks:

- ``assg`` (alpha = omega 2): the sigmoid's with sharpness a = omega / mean|x|, after
  the adaptive-sharpness surrogate of Wang et al. (arXiv 2512.22522, "Towards Reliable
  Evaluation of Adversarial Robustness for Spiking Neural Networks"), whose sharpness
  follows the input distribution so that the surrogate neither vanishes nor flattens;
  ours is stateless (the statistics of this call, not a running estimate over attack
  iterations, and over the layer rather than per neuron);
- ``pdsg`` (alpha = kappa 1): a Gaussian density of x with standard deviation
  s = std(x) / kappa, a surrogate whose width follows the membrane potential's spread
  (after the potential-dependent surrogate gradient, CVPR 2025; ours: the layer's std).

Each integrates to 1 over x. The alpha defaults are the common ones in the SNN
literature (SpikingJelly; Deng et al., 2022 for the triangle; ours for assg and pdsg);
``alpha=None`` picks them.

This module imports only ``validation`` from the package.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from rsc_jax import validation

Array = jax.Array

SURROGATE_DEFAULT_ALPHA: dict[str, float] = {
    "sigmoid": 4.0, "atan": 2.0, "triangle": 1.0, "rectangle": 1.0, "assg": 2.0, "pdsg": 1.0}
SURROGATES: tuple[str, ...] = tuple(SURROGATE_DEFAULT_ALPHA)
ADAPTIVE: frozenset[str] = frozenset({"assg", "pdsg"})      # sharpness from the input's statistics
_TINY = 1e-6


def _layer_mean(v: Array) -> Array:
    """Mean over every axis but the batch axis 0, kept for broadcasting (a scalar for 1-D)."""
    return jnp.mean(v, axis=tuple(range(1, v.ndim)), keepdims=True) if v.ndim > 1 else jnp.mean(v)
RESETS: tuple[str, ...] = ("hard", "soft")
GRAD_MODES: tuple[str, ...] = ("bptt", "bptr")


def surrogate_derivative(x: Array, surrogate: str, alpha: float) -> Array:
    """The surrogate dH/dx at ``x`` (see the module docstring for the formulas)."""
    if surrogate == "sigmoid":
        sg = jax.nn.sigmoid(alpha * x)
        return alpha * sg * (1.0 - sg)
    if surrogate == "atan":
        return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)
    if surrogate == "triangle":
        return jnp.maximum(alpha - jnp.abs(x), 0.0) / alpha**2
    if surrogate == "rectangle":
        return (jnp.abs(x) < alpha / 2.0).astype(x.dtype) / alpha
    if surrogate == "assg":
        a = alpha / (_layer_mean(jnp.abs(x)) + _TINY)
        sg = jax.nn.sigmoid(a * x)
        return a * sg * (1.0 - sg)
    if surrogate == "pdsg":
        sd = jnp.sqrt(jnp.maximum(_layer_mean(x * x) - _layer_mean(x) ** 2, 0.0)) / alpha + _TINY
        return jnp.exp(-0.5 * (x / sd) ** 2) / (math.sqrt(2.0 * math.pi) * sd)
    raise ValueError(f"surrogate={surrogate!r} is not known; allowed: {list(SURROGATES)}")


def resolve_alpha(surrogate: str, alpha: float | None) -> float:
    """Returns ``alpha``, or the surrogate's default when ``alpha`` is None."""
    validation.check_choice("neuron surrogate", surrogate, SURROGATES)
    if alpha is None:
        return SURROGATE_DEFAULT_ALPHA[surrogate]
    validation.check_number("neuron alpha", alpha, low=0.0, low_open=True)
    return float(alpha)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def spike(x: Array, surrogate: str = "sigmoid", alpha: float = 4.0) -> Array:
    """Heaviside step H(x) = 1[x >= 0] with a surrogate gradient in the backward pass."""
    return (x >= 0).astype(x.dtype)


def _spike_fwd(x, surrogate, alpha):
    return spike(x, surrogate, alpha), x


def _spike_bwd(surrogate, alpha, x, g):
    return (g * surrogate_derivative(x, surrogate, alpha),)


spike.defvjp(_spike_fwd, _spike_bwd)


def check_options(*, tau: Any = 2.0, v_th: Any = 1.0, reset: Any = "hard", surrogate: Any = "sigmoid",
                  alpha: Any = None, detach_reset: Any = False, grad_mode: Any = "bptt",
                  prefix: str = "neuron ", error: type[Exception] = ValueError) -> None:
    """The one check of the neuron options (used by ``lif``, ``models`` and the config):
    tau >= 1 (decay 1 - 1/tau in [0, 1)), v_th > 0, known reset/surrogate/grad_mode,
    alpha None or > 0, detach_reset a bool. ``prefix`` names the fields in the message."""
    validation.check_number(prefix + "tau", tau, low=1.0, error=error)
    validation.check_number(prefix + "v_th", v_th, low=0.0, low_open=True, error=error)
    validation.check_choice(prefix + "reset", reset, RESETS, error)
    validation.check_choice(prefix + "surrogate", surrogate, SURROGATES, error)
    if alpha is not None:
        validation.check_number(prefix + "alpha", alpha, low=0.0, low_open=True, error=error)
    validation.check_bool(prefix + "detach_reset", detach_reset, error)
    validation.check_choice(prefix + "grad_mode", grad_mode, GRAD_MODES, error)


def lif_step(v: Array, current: Array, *, tau: float = 2.0, v_th: float = 1.0,
             reset: str = "hard", surrogate: str = "sigmoid", alpha: float | None = None,
             detach_reset: bool = False) -> tuple[Array, Array]:
    """One LIF step: ``(v_{t-1}, I_t) -> (v_t, s_t)``, shapes equal to ``current``."""
    check_options(tau=tau, v_th=v_th, reset=reset, surrogate=surrogate, alpha=alpha,
                  detach_reset=detach_reset)
    alpha = resolve_alpha(surrogate, alpha)
    u = (1.0 - 1.0 / tau) * v + current
    s = spike(u - v_th, surrogate, alpha)
    s_reset = jax.lax.stop_gradient(s) if detach_reset else s
    v_new = u * (1.0 - s_reset) if reset == "hard" else u - v_th * s_reset
    return v_new, s


def lif(currents: Array, *, tau: float = 2.0, v_th: float = 1.0, reset: str = "hard",
        surrogate: str = "sigmoid", alpha: float | None = None, detach_reset: bool = False,
        grad_mode: str = "bptt", unroll: int | bool = 1) -> Array:
    """Runs LIF neurons over time with ``jax.lax.scan`` from v_0 = 0.

    Args:
      currents: ``[T, ...]`` input currents; axis 0 is time.
      tau, v_th, reset, surrogate, alpha, detach_reset: see the module docstring.
        ``alpha=None`` uses the surrogate's default (sigmoid 4, atan 2, triangle 1,
        rectangle 1); the spec's defaults (tau 2, v_th 1, hard reset, sigmoid).
      grad_mode: ``"bptt"`` (backpropagation through time with the surrogate) or
        ``"bptr"`` (backpropagation through the spike rate, see ``lif_bptr``).
      unroll: passed to ``lax.scan`` (a performance knob; results are identical).

    Returns:
      ``[T, ...]`` spikes in {0, 1}, dtype of ``currents``.
    """
    if currents.ndim < 1:
        raise ValueError(f"currents must have a time axis 0; got shape {currents.shape}")
    validation.check_choice("neuron grad_mode", grad_mode, GRAD_MODES)
    if grad_mode == "bptr":
        return lif_bptr(currents, tau=tau, v_th=v_th, reset=reset, detach_reset=detach_reset,
                        unroll=unroll)
    step: Callable[[Array, Array], tuple[Array, Array]] = functools.partial(
        lif_step, tau=tau, v_th=v_th, reset=reset, surrogate=surrogate, alpha=alpha,
        detach_reset=detach_reset)
    v0 = jnp.zeros(currents.shape[1:], currents.dtype)
    _, spikes = jax.lax.scan(step, v0, currents, unroll=unroll)
    return spikes


def lif_bptr(currents: Array, *, tau: float = 2.0, v_th: float = 1.0, reset: str = "hard",
             detach_reset: bool = False, unroll: int | bool = 1) -> Array:
    """LIF spikes forward, backpropagation through the spike rate (BPTR) backward.

    Ding et al. (IJCAI 2022, "SNN-RAT: Robustness-enhanced Spiking Neural Network
    through Regularized Adversarial Training") attack SNNs through the rate
    r = mean_t s_t seen as a function of the mean input current I_bar = mean_t I_t
    rather than through the unrolled recurrence. The backward pass here treats
    every step's spike as the rate, s_t ~ r(I_bar), with the rate-coding ReLU
    approximation dr/dI_bar = 1[I_bar > 0] / v_th (ours: the paper's exact rate
    derivative for LIF is not given), so that

        dL/dI_t = (1/T) * sum_t' dL/ds_t' * 1[I_bar > 0] / v_th.
    """
    return _lif_bptr(currents, tau, v_th, reset, detach_reset, unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _lif_bptr(currents, tau, v_th, reset, detach_reset, unroll):
    return lif(currents, tau=tau, v_th=v_th, reset=reset, detach_reset=detach_reset,
               unroll=unroll)


def _lif_bptr_fwd(currents, tau, v_th, reset, detach_reset, unroll):
    out = _lif_bptr(currents, tau, v_th, reset, detach_reset, unroll)
    return out, jnp.mean(currents, axis=0)


def _lif_bptr_bwd(tau, v_th, reset, detach_reset, unroll, i_bar, g):
    T = g.shape[0]
    g_bar = jnp.sum(g, axis=0) * (i_bar > 0).astype(g.dtype) / v_th
    return (jnp.broadcast_to(g_bar / T, g.shape),)


_lif_bptr.defvjp(_lif_bptr_fwd, _lif_bptr_bwd)
