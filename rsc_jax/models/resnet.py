"""Spiking residual networks: ResNet-19 (CIFAR) and SEW-ResNet-18/34 (ImageNet).

- ResNet-19: Zheng et al., AAAI 2021 ("Going Deeper With Directly-Trained Larger
  Spiking Neural Networks", tdBN): a 128-channel stem, stages of (3, 3, 2) basic
  blocks with (128, 256, 512) channels, a 256-unit hidden dense layer. The block
  adds the shortcut to the BN output and fires after the addition.
- SEW-ResNet: Fang et al., NeurIPS 2021 ("Deep Residual Learning in Spiking Neural
  Networks"), ADD connection: the block fires, then adds the (spiking) shortcut,
  so identity mappings are exact. ImageNet stem: 7x7/2 conv, 3x3/2 max pooling.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsc_jax.models import base, layers

Array = jax.Array


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN units with a shortcut; ``sew`` picks the SEW ADD connection."""
    features: int
    stride: int
    spiking: bool
    T: int
    neuron: layers.Neuron = layers.Neuron()
    sew: bool = False
    sow_name: str | None = None
    dtype: Any = jnp.float32
    lean: bool = False           # memory-lean BN + LIF (lean.bn_lif), for spiking remat=True
    conv_general_dilated: layers.ConvFn = layers.DEFAULT_CONV

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        act = lambda name, sow=None: layers.Activation(self.spiking, self.T, self.neuron, sow, name=name)
        lean = self.lean and self.spiking
        bn = lambda name: layers.batch_norm(train, name=name, dtype=self.dtype, lean=lean)
        # Lean path: every conv here reads spikes or, with SEW, block outputs: sums of
        # spikes, one more per identity block of a stage (at most 7 in SEW-ResNet-34),
        # which lean.conv_spike_residual keeps exactly in one byte (up to 63.75).
        conv = lambda c, k, s, name: layers.conv(c, k, s, name=name, dtype=self.dtype, spike_input=lean,
                                                 conv_general_dilated=self.conv_general_dilated)
        h = conv(self.features, 3, self.stride, "conv1")(x)
        h = bn("bn1")(h)
        h = act("act1")(h)
        h = conv(self.features, 3, 1, "conv2")(h)
        h = bn("bn2")(h)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = conv(self.features, 1, self.stride, "down_conv")(x)
            shortcut = bn("down_bn")(shortcut)
            if self.sew:
                shortcut = act("down_act")(shortcut)
        if self.sew:
            return act("act2", self.sow_name)(h) + shortcut
        return act("act2", self.sow_name)(h + shortcut)


class ResNet(base.SpikingClassifier):
    """Stages of basic blocks; each stage's last pre-synaptic current is sown."""
    stage_sizes: tuple[int, ...] = (3, 3, 2)
    stage_channels: tuple[int, ...] = (128, 256, 512)
    stem: str = "cifar"          # "cifar": 3x3/1 conv; "imagenet": 7x7/2 conv + 3x3/2 max pool
    stem_channels: int = 128
    sew: bool = False
    hidden: int = 0              # units of a hidden dense layer before the classifier (0: none)

    def features(self, h: Array, T: int, train: bool) -> Array:
        stem_kernel, stem_stride = (7, 2) if self.stem == "imagenet" else (3, 1)
        h = layers.conv(self.ch(self.stem_channels), stem_kernel, stem_stride, name="stem_conv", dtype=self.dtype,
                        conv_general_dilated=self.conv_general_dilated)(h)
        h = layers.batch_norm(train, name="stem_bn", dtype=self.dtype, lean=self.lean_at(T))(h)
        h = self.act(T, "stem_act")(h)
        if self.stem == "imagenet":
            h = nn.max_pool(h, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        block = layers.maybe_remat(BasicBlock, self.remat and not self.spiking)
        for s, (n, c) in enumerate(zip(self.stage_sizes, self.stage_channels)):
            for b in range(n):
                stride = 2 if (b == 0 and s > 0) else 1
                h = block(self.ch(c), stride, self.spiking, T, self.neuron, self.sew,
                          f"pre_stage{s}" if b == n - 1 else None, self.dtype, self.lean_at(T),
                          conv_general_dilated=self.conv_general_dilated, name=f"stage{s}_block{b}")(h, train)
        return h.mean(axis=(1, 2))

    def head(self, h: Array, T: int, train: bool) -> Array:
        if self.hidden:
            h = nn.Dense(self.hidden, dtype=self.dtype, name="fc_hidden")(h)
            h = layers.batch_norm(train, name="fc_bn", dtype=self.dtype, lean=self.lean_at(T))(h)
            h = self.act(T, "fc_act")(h)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(h)
