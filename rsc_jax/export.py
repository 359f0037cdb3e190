"""Self-contained exports of trained classifiers: ``save`` and ``load``.

An export is a directory::

    PATH/config.json     model, neuron, coding and data-set description (JSON,
                         ``classifier.classifier_config``)
    PATH/variables/      orbax checkpoint of {"params": ..., "batch_stats": ...}

It loads without the training config and without optimizer state:
``export.load(PATH).logits(key, images)`` applies the stored coding and returns
time-averaged logits (``classifier.Classifier``).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax

from rsc_jax import checkpoints, classifier, parallel

FORMAT_VERSION = classifier.FORMAT_VERSION   # the format of config.json is the classifier description's


class ExportError(ValueError):
    """An export is missing, damaged, or does not fit what it is used for."""


def _abstract_variables(config: dict[str, Any]) -> Any:
    return jax.eval_shape(lambda: classifier.init_variables(config, jax.random.key(0)))


def save(path: str, clf: classifier.Classifier) -> str:
    """Writes ``clf`` to ``path`` (replacing an older export only once the new one is
    complete). Returns the absolute path."""
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
    variables = parallel.gather({"params": clf.params["params"],
                                 "batch_stats": clf.params.get("batch_stats", {})})
    checkpoints.save_variables(os.path.join(tmp, "variables"), variables)
    if primary:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(clf.config, f, indent=2)
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


def load(path: str) -> classifier.Classifier:
    """Loads an export written by ``save`` onto this process's first local device."""
    config = load_config(path)
    abstract = _abstract_variables(config)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
    try:
        variables = checkpoints.restore_variables(os.path.join(os.path.abspath(path), "variables"), target)
    except Exception as e:
        raise ExportError(f"export path={path!r}: variables could not be restored for model "
                          f"{config['model']['name']!r}: {e}") from e
    return classifier.Classifier(config, variables)
