"""The frame every classifier shares: input checks, normalisation, time folding, readout."""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from rsc_jax import backend
from rsc_jax.models import layers

Array = jax.Array


class SpikingClassifier(nn.Module):
    """Base: subclasses implement ``features(h, T, train) -> [T*B, F]`` on folded input.

    ``__call__(x, train)`` takes ``[T, B, H, W, C]`` coded input when ``spiking`` and
    ``[B, H, W, C]`` images for the ANN twin, and returns logits ``[B, num_classes]``
    averaged over T (SPEC §2 readout).

    ``conv_general_dilated`` is the arithmetic of every conv of the model (with
    ``lax.conv_general_dilated``'s signature; it has no parameters of its own), chosen
    once here and passed down to the blocks, as flax's ImageNet ResNet takes its
    ``conv``. The default, ``conv_formulations.conv_general_dilated``, picks the fastest
    formulation per shape; variants via ``model.clone(conv_general_dilated=...)`` or
    ``functools.partial`` of the model class, e.g. ``lax.conv_general_dilated`` itself.
    """
    num_classes: int
    spiking: bool = True
    neuron: layers.Neuron = layers.Neuron()
    remat: bool = False
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    width: float = 1.0
    dtype: Any = jnp.float32
    conv_general_dilated: layers.ConvFn = layers.DEFAULT_CONV

    def lean_at(self, T: int) -> bool:
        """``remat`` of a spiking model at ``T`` steps: the memory-lean BN + LIF path
        (``models.lean``), same variables and results as the plain path, where
        ``backend.lean_remat(T)`` (everywhere but at T = 1 off the CPU). ANN twins use
        ``nn.remat``."""
        return self.remat and self.spiking and backend.lean_remat(T)

    def ch(self, c: int) -> int:
        """Channel count ``c`` scaled by ``width`` (at least 1)."""
        return max(1, int(round(c * self.width)))

    def features(self, h: Array, T: int, train: bool) -> Array:
        raise NotImplementedError

    def head(self, h: Array, T: int, train: bool) -> Array:
        return nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(h)

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.spiking:
            chex.assert_rank(x, 5)
            T, B = x.shape[:2]
            h = layers.fold_time(x)
        else:
            chex.assert_rank(x, 4)
            T, B = 1, x.shape[0]
            h = x
        h = layers.Normalize(self.mean, self.std, name="normalize")(h.astype(self.dtype))
        h = self.features(h, T, train)
        logits = self.head(h, T, train).astype(jnp.float32)
        logits = logits.reshape(T, B, self.num_classes).mean(axis=0)
        chex.assert_shape(logits, (B, self.num_classes))
        return logits

    def act(self, T: int, name: str, sow_name: str | None = None) -> layers.Activation:
        return layers.Activation(self.spiking, T, self.neuron, sow_name, name=name)
