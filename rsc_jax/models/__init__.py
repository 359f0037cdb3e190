"""Spiking classifiers and their ANN twins, built by name.

``create(name, num_classes=..., spiking=True, **overrides)`` returns a Flax linen
module whose ``init(key, x)`` / ``apply(variables, x, train=False)`` take coded input
``[T, B, H, W, C]`` when spiking and images ``[B, H, W, C]`` for the ANN twin, and
return logits ``[B, num_classes]`` averaged over T.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from rsc_jax import validation
from rsc_jax.models import conv_formulations, convnet, layers, lean, resnet, vgg  # noqa: F401  (public)
from rsc_jax.models.layers import Neuron

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "convnet": convnet.ConvNet,
    "vgg11": lambda **kw: vgg.VGG(cfg=vgg.VGG11, **kw),
    "resnet19": lambda **kw: resnet.ResNet(stage_sizes=(3, 3, 2), stage_channels=(128, 256, 512),
                                           stem="cifar", stem_channels=128, hidden=256, **kw),
    "sew_resnet18": lambda **kw: resnet.ResNet(stage_sizes=(2, 2, 2, 2), stage_channels=(64, 128, 256, 512),
                                               stem="imagenet", stem_channels=64, sew=True, **kw),
    "sew_resnet34": lambda **kw: resnet.ResNet(stage_sizes=(3, 4, 6, 3), stage_channels=(64, 128, 256, 512),
                                               stem="imagenet", stem_channels=64, sew=True, **kw),
}

NEURON_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Neuron))
MODEL_FIELDS: tuple[str, ...] = ("remat", "mean", "std", "width", "dtype")
DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def names() -> list[str]:
    """The model names ``create`` accepts."""
    return sorted(_FACTORIES)


def create(name: str, *, num_classes: int, spiking: bool = True, **overrides: Any) -> nn.Module:
    """Builds model ``name``.

    Args:
      name: one of ``names()``.
      num_classes: output classes (>= 2).
      spiking: LIF neurons over time (True) or the ANN twin with ReLU (False).
      **overrides: model options ``remat`` (bool; spiking models: the memory-lean
        BN + LIF backward pass of ``lean.bn_lif`` and one-byte spike residuals of
        ``lean.conv_spike_residual``, same variables and results; ANN twins:
        ``nn.remat`` per block),
        ``mean``/``std`` (per-channel normalisation, applied after the coding),
        ``width`` (channel multiplier), ``dtype`` ("float32" or "bfloat16"), and neuron
        options ``tau``, ``v_th``, ``reset``, ``surrogate``, ``alpha``,
        ``detach_reset``, ``grad_mode`` (see ``rsc_jax.neurons``).

    Raises:
      ValueError: unknown name or override, or a bad value.
    """
    validation.check_choice("model name", name, names())
    validation.check_int("num_classes", num_classes, 2)
    unknown = sorted(set(overrides) - set(NEURON_FIELDS) - set(MODEL_FIELDS))
    if unknown:
        validation.fail("model overrides", unknown, f"allowed: {sorted(NEURON_FIELDS + MODEL_FIELDS)}")
    neuron = Neuron(**{k: overrides.pop(k) for k in NEURON_FIELDS if k in overrides}).validate()
    kw: dict[str, Any] = {k: overrides[k] for k in ("remat", "width") if k in overrides}
    for k in ("mean", "std"):
        if k in overrides:
            kw[k] = tuple(float(v) for v in overrides[k])
    if "remat" in kw:
        validation.check_bool("model remat", kw["remat"])
    if "std" in kw:
        validation.check_grid("model std", kw["std"], positive=True, increasing=False)
    if "width" in kw:
        validation.check_number("model width", kw["width"], low=0.0, low_open=True)
    if "dtype" in overrides:
        validation.check_choice("model dtype", overrides["dtype"], list(DTYPES))
        kw["dtype"] = DTYPES[overrides["dtype"]]
    return _FACTORIES[name](num_classes=num_classes, spiking=spiking, neuron=neuron, **kw)
