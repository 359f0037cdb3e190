"""What every evaluator shares: input checks, example counts, progress bars, JSON.

An evaluator is a module with ``run(classifier, images, labels, cfg, *, workdir, mesh,
progress=True, **extra) -> dict``: it checks its inputs on the host, maps a jitted
per-example function over the test set with ``parallel.map_examples`` (keys from
(seed, global index), so results do not depend on batch size or device count), writes
its results through ``report`` and returns them.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from rsc_jax import config, data, validation

Array = jax.Array
LogitsFn = Callable[[Array, Array], Array]


def as_logits_fn(obj: Any) -> LogitsFn:
    """``obj.logits`` for a classifier, ``obj`` itself for a function ``(key, x) -> logits``."""
    return obj.logits if hasattr(obj, "logits") else obj


def test_set(classifier: Any, images: Any, labels: Any, num_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``num_examples`` (-1 = all) images as float32 in [0, 1] and int labels,
    checked: ``[N, H, W, C]`` float in [0, 1] or uint8 (divided by 255), ``[N]`` labels in
    ``[0, classifier.num_classes)``. Raises ``ValueError`` naming the problem."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    validation.check_images("images", images)
    images = images.astype(np.float32)
    labels = np.asarray(labels)
    k = getattr(classifier, "num_classes", None)
    validation.check_labels("labels", labels, len(images), k if isinstance(k, int) else None)
    n = len(images) if num_examples == -1 else min(num_examples, len(images))
    if n < 1:
        raise ValueError("got no images to evaluate")
    return images[:n], labels[:n].astype(np.int32)


def run_test_set(classifier: Any, config_path: str, num_examples: int
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The first ``num_examples`` (-1: all) test images a finished run was evaluated on.

    The data set is the run's ``config.json`` (``config_path``), or, where that file is
    absent, the export's data set name (its whole test split); the normalisation is the
    export's. Returns ``(images, labels, {"source", "dataset"})``; ValueError when the
    config names another data set than the export, or the split is shorter.
    """
    cfg = config.base()
    if os.path.isfile(config_path):
        with open(config_path) as f:
            ds_cfg = json.load(f).get("dataset", {})
        used = config_path
    else:
        ds_cfg, used = {"name": classifier.config["dataset"]["name"]}, "export config.json (whole test split)"
    for k, v in ds_cfg.items():
        if k in cfg.dataset:
            cfg.dataset[k] = tuple(v) if isinstance(v, list) else v
    if cfg.dataset.name != classifier.config["dataset"]["name"]:
        raise ValueError(f"{used} names data set {cfg.dataset.name!r}, the export "
                         f"{classifier.config['dataset']['name']!r}")
    # normalisation is the export's; stating it skips recomputing it from the training split
    cfg.dataset.mean = tuple(classifier.config["dataset"]["mean"])
    cfg.dataset.std = tuple(classifier.config["dataset"]["std"])
    images, labels = data.test_arrays(data.load(cfg))
    x, y = test_set(classifier, images, labels, num_examples)
    if num_examples != -1 and len(x) != num_examples:
        raise ValueError(f"the run evaluated {num_examples} examples; the test split has {len(x)}")
    return x, y, {"source": used, "dataset": dict(cfg.dataset.to_dict())}


def bar(progress: bool, total: int, desc: str, unit: str = "it", leave: bool = True) -> Any:
    """A progress display (``progress.bar``: a tqdm bar on a terminal, plain lines in a
    log file), or None when ``progress`` is off."""
    if not progress:
        return None
    from rsc_jax import progress as progress_lib
    return progress_lib.bar(total, desc=desc, unit=unit, leave=leave)


def batch_bar(progress: bool, total: int, desc: str) -> Callable[[Iterator], Iterator] | None:
    """A ``map_examples`` progress wrapper: a transient bar over ``total`` batches
    (``progress.wrap``: nothing when stderr is not a terminal)."""
    if not progress:
        return None
    from rsc_jax import progress as progress_lib
    return lambda it: progress_lib.wrap(it, total=total, desc=desc, unit="batch", leave=False)


def timed_batches(log: list[tuple[int, float]], pbar: Any) -> Callable[[Iterator], Iterator]:
    """A ``map_examples`` progress wrapper that records ``(valid, seconds)`` per batch
    (``map_examples`` finishes a batch before it asks for the next) and advances ``pbar``
    by the batch's examples."""
    def wrap(batches: Iterator[tuple[np.ndarray, int]]) -> Iterator[tuple[np.ndarray, int]]:
        t = time.perf_counter()
        for idx, valid in batches:
            yield idx, valid
            now = time.perf_counter()
            log.append((valid, now - t))
            t = now
            if pbar is not None:
                pbar.update(valid)
    return wrap


def jsonable(v: Any) -> Any:
    """``v`` with NumPy/JAX scalars and arrays turned into plain JSON values."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(v).tolist())
    if v is None or isinstance(v, (str, int)):
        return v
    return repr(v)
