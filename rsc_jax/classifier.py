"""The trained classifier and what describes and checks it.

A classifier is a model with its input coding, described by a JSON-able config
(``classifier_config``: model, coding, data set) and holding its variables
``{"params": ..., "batch_stats": ...}``: ``Classifier(config, variables).logits(key, x)``
codes images ``x`` in [0, 1] and returns time-averaged logits. ``export`` writes and
reads classifiers; ``check_inputs`` tells whether data fit one before anything runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rsc_jax import __version__, coding, models, neurons, validation
from rsc_jax.models import layers

Array = jax.Array
FORMAT_VERSION = 1   # version of the description ``classifier_config`` writes (an export's config.json)


class InputError(ValueError):
    """Images or labels do not fit a classifier (shape, dtype, value range, classes)."""


def classifier_config(*, model: dict[str, Any], coding_cfg: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able description of a classifier (what an export stores as config.json).

    Args:
      model: ``{"name", "spiking", "overrides"}``; overrides are ``models.create``
        keywords (neuron options included).
      coding_cfg: ``{"method", "sigma", "T"}``.
      dataset: ``Dataset.info()`` (name, num_classes, image_shape, mean, std).
    """
    return {"format": FORMAT_VERSION,
            "package_version": __version__,   # the rsc_jax that wrote it (exports without it still load)
            "model": {"name": model["name"], "spiking": bool(model["spiking"]),
                      "overrides": dict(model.get("overrides", {}))},
            "coding": {"method": coding_cfg["method"], "sigma": float(coding_cfg["sigma"]),
                       "T": int(coding_cfg["T"])},
            "dataset": dict(dataset)}


def check_images(x: Any, name: str = "x") -> None:
    """Host-side check of concrete images: float ``[B, H, W, C]`` with values in [0, 1].

    The value range is checked only on concrete values (NumPy arrays, or JAX arrays
    outside ``jit``): a traced ``x`` cannot be inspected, so callers that jit check their
    host inputs first (``check_inputs``). Raises ``InputError`` naming the problem.
    """
    validation.check_images(name, x, error=InputError, dtype_error=InputError)


def check_inputs(config: dict[str, Any], images: Any, labels: Any | None = None, *, where: str = "") -> None:
    """Host-side checks that ``images`` [N, H, W, C] (and int ``labels`` [N]) fit the
    classifier described by ``config`` (e.g. an export's): same image shape, pixels in
    [0, 1], labels in ``[0, num_classes)``. ``where`` (an export path) is named in the
    messages. Raises ``InputError`` naming the problem."""
    src = f"export {where!r}" if where else "the export"
    check_images(images, "images")
    shape = tuple(np.shape(images)[1:])
    want = tuple(config["dataset"]["image_shape"])
    if shape != want:
        raise InputError(f"images have shape {shape} per example but {src} was trained on {want} "
                         f"({config['dataset'].get('name', '?')} data, model {config['model']['name']!r}); "
                         "use an export trained on this data set")
    if labels is not None:
        validation.check_labels(f"labels for {src}" if where else "labels", labels, len(images),
                                int(config["dataset"]["num_classes"]), error=InputError)


def build_model(config: dict[str, Any]):
    """The flax module a classifier config describes (normalisation from the data set)."""
    m = config["model"]
    overrides = dict(m.get("overrides", {}))
    overrides.setdefault("mean", tuple(config["dataset"]["mean"]))
    overrides.setdefault("std", tuple(config["dataset"]["std"]))
    return models.create(m["name"], num_classes=int(config["dataset"]["num_classes"]),
                         spiking=m["spiking"], **overrides)


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """A trained model with its coding: ``logits(key, x)`` is one noisy forward pass.

    Attributes:
      config: the stored configuration (see ``classifier_config``).
      params: the variables ``{"params": ..., "batch_stats": ...}``.
    """
    config: dict[str, Any]
    params: Any

    @functools.cached_property
    def model(self):
        return build_model(self.config)

    @property
    def num_classes(self) -> int:
        return int(self.config["dataset"]["num_classes"])

    def encode(self, key: Array, x: Array) -> Array:
        """Coded input for the model: ``[T, B, ...]`` (spiking) or ``[B, ...]`` (ANN).

        ``key`` is one key (noise for the whole batch) or ``[B]`` keys, one per example
        (then example b is coded exactly as if it were alone with ``key[b]``). An ANN
        sees the first step of the coding (T = 1), except on the codings with
        ``ann_mean`` (Poisson): there it sees the mean of the T coded frames, the
        SNN's time average (T = 1: one frame, as before).
        """
        c = self.config["coding"]
        spiking = self.config["model"]["spiking"]
        mean = not spiking and coding.get(c["method"]).ann_mean and int(c["T"]) > 1
        T = c["T"] if spiking or mean else 1
        kw = dict(method=c["method"], T=T, sigma=c["sigma"])
        key = jnp.asarray(key)
        if key.ndim == 1 and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            coded = coding.encode_per_example(key, x, **kw)
        else:
            coded = coding.encode(key, x, **kw)
        return self._model_input(coded)

    def _model_input(self, frames: Array) -> Array:
        """The model's input from coded frames ``[T', B, ...]``: the frames (spiking), their
        mean (an ANN on a coding with ``ann_mean``), else the first frame."""
        if self.config["model"]["spiking"]:
            return frames
        return frames.mean(0) if coding.get(self.config["coding"]["method"]).ann_mean else frames[0]

    def logits_of_frames(self, frames: Array) -> Array:
        """Logits ``[B, classes]`` of given coded frames ``[T, B, H, W, C]`` (e.g. Bernoulli
        spikes drawn by an attack, ``bernoulli.py``), with the stored variables."""
        return self.model.apply(self.params, self._model_input(frames), train=False)

    def apply(self, variables: Any, key: Array, x: Array) -> Array:
        """Pure: logits ``[B, classes]`` of images ``x`` ``[B, H, W, C]`` in [0, 1].

        Concrete host inputs (NumPy arrays) are checked for range and dtype here
        (``check_images``); traced or device inputs are not inspected (no sync)."""
        shape = tuple(np.shape(x))
        if len(shape) != 4:
            want = tuple(self.config["dataset"]["image_shape"])
            hint = " (one image: pass x[None])" if shape == want else f", here [B, {', '.join(map(str, want))}]"
            raise InputError(f"x has shape {shape}; a batch of images [B, H, W, C] is required{hint}")
        if isinstance(x, np.ndarray):
            check_images(x)
        return self.model.apply(variables, self.encode(key, x), train=False)

    def logits(self, key: Array, x: Array) -> Array:
        """``apply`` with the stored variables; differentiable in ``x``."""
        return self.apply(self.params, key, x)

    def stateful(self, key: Array, x: Array, state: Any = None, update: bool = True) -> tuple[Array, Any]:
        """Logits ``[B, classes]`` of a model whose surrogate carries a state across the
        passes of an attack (``neurons.STATEFUL``, after ``with_neuron(surrogate="assg-ema")``),
        and the state after this pass.

        ``state`` None starts it (M = 1, D = 0 in every spiking layer); ``update``: whether
        this pass updates it (the first of a step's EOT draws) or reads it (the others).
        The state is a pytree of ``[T, B, ...]`` arrays (the ``"assg"`` collection)."""
        enc = self.encode(key, x)
        variables = self.params if state is None else {**self.params, layers.STATE: state}
        if update:
            out, mut = self.model.apply(variables, enc, train=False, mutable=[layers.STATE])
            return out, mut[layers.STATE]
        return self.model.apply(variables, enc, train=False), state

    def with_neuron(self, **neuron: Any) -> "Classifier":
        """The same weights with other neuron options (e.g. ``surrogate="atan"``,
        ``alpha=8.0``, ``grad_mode="bptr"``): forward spikes are unchanged when only
        gradient options change, so attacks can try several surrogates."""
        unknown = set(neuron) - set(models.NEURON_FIELDS)
        if unknown:
            raise ValueError(f"with_neuron got unknown option(s) {sorted(unknown)}; "
                             f"allowed: {list(models.NEURON_FIELDS)}")
        cfg = json.loads(json.dumps(self.config))
        cfg["model"]["overrides"].update(neuron)
        if neuron.get("surrogate") in neurons.STATEFUL and cfg["model"]["overrides"].get("remat"):
            cfg["model"]["overrides"]["remat"] = False    # the lean path has no state (same forward values)
        return Classifier(cfg, self.params)

    def with_coding(self, **coding_cfg: Any) -> "Classifier":
        """The same weights behind another coding (``method``, ``sigma``, ``T``), e.g.
        ``method="direct"``: the noise-free copy that sees the coding's expectation
        E[s_t] = x at every step (a transfer source for attacks on the noisy model)."""
        unknown = set(coding_cfg) - {"method", "sigma", "T"}
        if unknown:
            raise ValueError(f"with_coding got unknown option(s) {sorted(unknown)}; allowed: ['method', 'sigma', 'T']")
        cfg = json.loads(json.dumps(self.config))
        cfg["coding"].update(coding_cfg)
        coding.check_sigma(cfg["coding"]["sigma"], cfg["coding"]["method"])
        return Classifier(cfg, self.params)


def dummy_input(config: dict[str, Any], batch: int = 1) -> Array:
    """Zeros shaped like the model's input: ``[T, B, H, W, C]`` or ``[B, H, W, C]``."""
    shape = (batch, *config["dataset"]["image_shape"])
    return jnp.zeros((config["coding"]["T"], *shape) if config["model"]["spiking"] else shape)


def init_variables(config: dict[str, Any], key: Array) -> Any:
    """Freshly initialised variables for the model a classifier config describes."""
    return build_model(config).init(key, dummy_input(config), train=False)
