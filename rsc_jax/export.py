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
    try:
        with open(f) as fh:
            config = json.load(fh)
    except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError is a ValueError
        raise ExportError(f"export path={path!r}: {f} is damaged, not valid JSON ({e}); re-export "
                          "(--mode=export in the training workdir) or train again") from None
    if not isinstance(config, dict):
        raise ExportError(f"export path={path!r}: {f} holds {type(config).__name__}, not a JSON object")
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
    except Exception as e:   # noqa: BLE001 (orbax and TensorStore raise many types)
        raise ExportError(f"export path={path!r}: variables could not be restored for model "
                          f"{config['model']['name']!r}: {describe_damage(e)}") from None
    return classifier.Classifier(config, variables)


def describe_damage(e: BaseException, limit: int = 200) -> str:
    """One short line for an orbax/TensorStore restore error: the kind of damage and the
    innermost message's first line (TensorStore's own messages carry a ~60-line spec)."""
    chain, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    # first lines only: TensorStore's spec (later lines) mentions 'shape' for every array
    text = " ".join((str(x).strip().splitlines() or [""])[0] for x in chain)
    if any(k in text for k in ("OUT_OF_RANGE", "byte range", "Truncated", "truncated")):
        kind = "an array file is truncated"
    elif any(k in text for k in ("DATA_LOSS", "checksum", "corrupt", "Corrupt", "decompress", "Invalid")):
        kind = "an array file is corrupted"
    elif any(isinstance(x, FileNotFoundError) for x in chain) or "NOT_FOUND" in text or "No such file" in text:
        kind = "a file is missing"
    elif "shape" in text.lower():
        kind = "the stored arrays do not have the model's shapes (variables of another architecture?)"
    else:
        kind = "the variables are unreadable"
    inner = next((x for x in reversed(chain) if str(x).strip()), chain[-1])
    first = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    if len(first) > limit:
        first = first[:limit - 3] + "..."
    return f"{kind} ({type(inner).__name__}: {first})"
