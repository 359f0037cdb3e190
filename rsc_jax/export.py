"""Self-contained exports of trained classifiers, and the ``Classifier`` that uses them.

An export is a directory::

    PATH/config.json     model, neuron, coding and data-set description (JSON)
    PATH/variables/      orbax checkpoint of {"params": ..., "batch_stats": ...}

It loads without the training config and without optimizer state:
``export.load(PATH).logits(key, images)`` applies the stored coding and returns
time-averaged logits.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rsc_jax import coding, models, parallel

Array = jax.Array
FORMAT_VERSION = 1


class ExportError(ValueError):
    """An export is missing, damaged, or does not fit what it is used for."""


def classifier_config(*, model: dict[str, Any], coding_cfg: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able description an export stores.

    Args:
      model: ``{"name", "spiking", "overrides"}``; overrides are ``models.create``
        keywords (neuron options included).
      coding_cfg: ``{"method", "sigma", "T"}``.
      dataset: ``Dataset.info()`` (name, num_classes, image_shape, mean, std).
    """
    return {"format": FORMAT_VERSION,
            "model": {"name": model["name"], "spiking": bool(model["spiking"]),
                      "overrides": dict(model.get("overrides", {}))},
            "coding": {"method": coding_cfg["method"], "sigma": float(coding_cfg["sigma"]),
                       "T": int(coding_cfg["T"])},
            "dataset": dict(dataset)}


def check_images(x: Any, name: str = "x") -> None:
    """Host-side check of concrete images: float ``[B, H, W, C]`` with values in [0, 1].

    Runs only on concrete values (NumPy arrays, or JAX arrays outside ``jit``): a traced
    ``x`` cannot be inspected and is let through, so callers that jit check their host
    inputs first (``check_inputs``, ``robustness.run``, ``certify.run``, ``pipeline.run``).
    Raises ``ExportError`` naming the problem.
    """
    if isinstance(x, jax.core.Tracer):
        return
    a = np.asarray(x)
    if a.ndim != 4:
        raise ExportError(f"{name} has shape {a.shape}; images [B, H, W, C] are required")
    if not np.issubdtype(a.dtype, np.floating):
        raise ExportError(f"{name} has dtype {a.dtype}; float images in [0, 1] are required "
                          "(convert uint8 with x.astype(np.float32) / 255)")
    if a.size:
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ExportError(f"{name} has values in [{lo}, {hi}]; images must lie in [0, 1] "
                              "(the coding adds noise and the model normalises; do not pre-normalise)")


def check_inputs(config: dict[str, Any], images: Any, labels: Any | None = None, *, where: str = "") -> None:
    """Host-side checks that ``images`` [N, H, W, C] (and int ``labels`` [N]) fit the
    export described by ``config``: same image shape, pixels in [0, 1], labels in
    ``[0, num_classes)``. Raises ``ExportError`` naming the problem."""
    src = f"export {where!r}" if where else "the export"
    check_images(images, "images")
    shape = tuple(np.shape(images)[1:])
    want = tuple(config["dataset"]["image_shape"])
    if shape != want:
        raise ExportError(f"images have shape {shape} per example but {src} was trained on {want} "
                          f"({config['dataset'].get('name', '?')} data, model {config['model']['name']!r}); "
                          "use an export trained on this data set")
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != (len(images),):
            raise ExportError(f"labels have shape {y.shape}; [{len(images)}] (one per image) is required")
        if not np.issubdtype(y.dtype, np.integer):
            raise ExportError(f"labels have dtype {y.dtype}; integer class ids are required")
        k = int(config["dataset"]["num_classes"])
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ExportError(f"labels lie in [{y.min()}, {y.max()}] but {src} has {k} classes: labels must be "
                              f"in [0, {k - 1}]")


def build_model(config: dict[str, Any]):
    """The flax module an export config describes (normalisation from the data set)."""
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
        (then example b is coded exactly as if it were alone with ``key[b]``). The ANN
        twin sees the first step of the coding (T = 1).
        """
        c = self.config["coding"]
        spiking = self.config["model"]["spiking"]
        T = c["T"] if spiking else 1
        kw = dict(method=c["method"], T=T, sigma=c["sigma"])
        key = jnp.asarray(key)
        if key.ndim == 1 and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            coded = coding.encode_per_example(key, x, **kw)
        else:
            coded = coding.encode(key, x, **kw)
        return coded if spiking else coded[0]

    def apply(self, variables: Any, key: Array, x: Array) -> Array:
        """Pure: logits ``[B, classes]`` of images ``x`` ``[B, H, W, C]`` in [0, 1].

        Concrete host inputs (NumPy arrays) are checked for range and dtype here
        (``check_images``); traced or device inputs are not inspected (no sync)."""
        chex.assert_rank(x, 4)
        if isinstance(x, np.ndarray):
            check_images(x)
        return self.model.apply(variables, self.encode(key, x), train=False)

    def logits(self, key: Array, x: Array) -> Array:
        """``apply`` with the stored variables; differentiable in ``x``."""
        return self.apply(self.params, key, x)

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
        return Classifier(cfg, self.params)


def dummy_input(config: dict[str, Any], batch: int = 1) -> Array:
    """Zeros shaped like the model's input: ``[T, B, H, W, C]`` or ``[B, H, W, C]``."""
    shape = (batch, *config["dataset"]["image_shape"])
    return jnp.zeros((config["coding"]["T"], *shape) if config["model"]["spiking"] else shape)


def init_variables(config: dict[str, Any], key: Array) -> Any:
    """Freshly initialised variables for the model an export config describes."""
    return build_model(config).init(key, dummy_input(config), train=False)


def _abstract_variables(config: dict[str, Any]) -> Any:
    return jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))


def save(path: str, classifier: Classifier) -> str:
    """Writes ``classifier`` to ``path`` (replacing an older export only once the new
    one is complete). Returns the absolute path."""
    import orbax.checkpoint as ocp
    path = os.path.abspath(path)
    tmp, old = path + ".tmp", path + ".old"
    primary = parallel.is_primary()
    # Multi-host: every process takes part in the orbax save (it writes from process
    # 0 and synchronises the rest); only process 0 moves directories, between barriers.
    if primary:
        for p in (tmp, old):
            if os.path.exists(p):
                shutil.rmtree(p)
        os.makedirs(tmp)
    parallel.barrier("export-save-start")
    variables = parallel.gather({"params": classifier.params["params"],
                                 "batch_stats": classifier.params.get("batch_stats", {})})
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(tmp, "variables"), variables)
    if primary:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(classifier.config, f, indent=2)
        if os.path.exists(path):
            os.rename(path, old)
        os.rename(tmp, path)
        if os.path.exists(old):
            shutil.rmtree(old)
    parallel.barrier("export-save-done")
    return path


def load_config(path: str) -> dict[str, Any]:
    """The ``config.json`` of an export, checked."""
    f = os.path.join(os.path.abspath(path), "config.json")
    if not os.path.isfile(f):
        raise ExportError(f"export path={path!r} has no config.json; is it an export directory "
                          "(a training run writes WORKDIR/export)?")
    with open(f) as fh:
        config = json.load(fh)
    for key in ("model", "coding", "dataset"):
        if key not in config:
            raise ExportError(f"export path={path!r}: config.json lacks {key!r}")
    return config


def load(path: str) -> Classifier:
    """Loads an export written by ``save`` onto this process's first local device."""
    import orbax.checkpoint as ocp
    config = load_config(path)
    abstract = _abstract_variables(config)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(os.path.join(os.path.abspath(path), "variables"), target)
    except Exception as e:
        raise ExportError(f"export path={path!r}: variables could not be restored for model "
                          f"{config['model']['name']!r}: {e}") from e
    return Classifier(config, variables)
