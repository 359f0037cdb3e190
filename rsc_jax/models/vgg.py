"""Spiking VGG-11 for CIFAR-sized inputs (Simonyan & Zisserman, 2015; the SNN variant
with average pooling used by Wu et al., 2024 and most SNN robustness work)."""

from __future__ import annotations

import flax.linen as nn
import jax

from rsc_jax.models import base, layers

Array = jax.Array

# Channels per conv; "M" is 2x2 pooling. Stage k ends at the k-th "M".
VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(base.SpikingClassifier):
    """VGG with conv-BN-activation units and 2x2 average pooling (ours: the spiking
    literature replaces max by average pooling; the paper does not say which).

    The head is a single dense layer on the globally averaged feature map (ours).
    """
    cfg: tuple = VGG11

    def features(self, h: Array, T: int, train: bool) -> Array:
        block = layers.maybe_remat(layers.ConvBNAct, self.remat and not self.spiking)
        stage, i = 0, 0
        for j, v in enumerate(self.cfg):
            if v == "M":
                h = nn.avg_pool(h, (2, 2), (2, 2))
                stage += 1
                continue
            ends_stage = j + 1 < len(self.cfg) and self.cfg[j + 1] == "M"
            h = block(self.ch(v), self.spiking, T, self.neuron,
                      sow_name=f"pre_stage{stage}" if ends_stage else None,
                      dtype=self.dtype, lean=self.lean_at(T),
                      spike_input=i > 0,       # spikes or their 2x2 averages
                      conv_general_dilated=self.conv_general_dilated,
                      name=f"conv{i}")(h, train)
            i += 1
        return h.mean(axis=(1, 2))
