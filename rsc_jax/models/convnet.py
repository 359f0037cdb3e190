"""A small convnet for 8x8 (sklearn digits) and 28x28 (MNIST) inputs. Ours, not the paper's."""

from __future__ import annotations

import flax.linen as nn
import jax

from rsc_jax.models import base, layers

Array = jax.Array


class ConvNet(base.SpikingClassifier):
    """conv32 - pool - conv64 - pool - conv128 - global average - dense.

    Three stages of conv-BN-activation (3x3, SAME); 2x2 average pooling after the first
    two; each stage's pre-synaptic current is sown as ``pre_stage{k}``.
    """
    channels: tuple[int, ...] = (32, 64, 128)

    def features(self, h: Array, T: int, train: bool) -> Array:
        block = layers.maybe_remat(layers.ConvBNAct, self.remat and not self.spiking)
        for k, c in enumerate(self.channels):
            h = block(self.ch(c), self.spiking, T, self.neuron, sow_name=f"pre_stage{k}",
                      dtype=self.dtype, lean=self.lean_at(T),
                      spike_input=k > 0,       # 2x2 averages of spikes
                      conv_general_dilated=self.conv_general_dilated,
                      name=f"stage{k}")(h, train)
            if k < len(self.channels) - 1:
                h = nn.avg_pool(h, (2, 2), (2, 2), padding="SAME")
        return h.mean(axis=(1, 2))
