r"""Builds the real-data subsets (docs/DATA.md) from a prepared tfds data set: .npz files in the
format of ``mnist_subset.npz`` and ``cifar10_subset.npz`` (keys train_images, train_labels,
test_images, test_labels; uint8 NHWC images, uint8 labels; compressed).

    python scripts/make_subsets.py --dataset=cifar10 --data_dir=DIR --out=data/cifar10_subset.npz
    python scripts/make_subsets.py --dataset=mnist --data_dir=DIR --out=data/mnist_subset.npz

then train on one with ``--config=configs/cifar10_subset.py --config.dataset.path=data/cifar10_subset.npz``
(or put the files where the configs look, ``../shared/data`` beside the checkout). DIR is a
tfds data_dir where the data set was prepared in the array_record format (the command is
printed when it is not); reading uses ``tfds.data_source``, no TensorFlow.

The recipes (``RECIPES``), those of the provided files:
- cifar10: train = the first ``num_train / 5`` images (932) of each of the five original
  training batches, test = the first ``num_test`` images (846) of the test batch. tfds stores
  CIFAR-10 shuffled but keeps each image's original index in its ``id`` feature
  (``train_12345``, ``test_00845``), so ``--order=original`` (the default) selects and orders
  by it: the provided file's selection and order.
- mnist: train = the first ``num_train`` (8,000), test = the next ``num_test`` (2,000) images
  of the official *test* split. tfds's mnist keeps no original index, so the images are taken
  in tfds's stored order (``--order=stored``): the same 10,000 images as the provided file when
  all are taken, but split differently into train and test.
``--order=stored`` takes the first records of a split as tfds stores them (cifar10 too).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rsc_jax import data  # noqa: E402

# name: (tfds split read for train, for test, default num_train, num_test, original batches)
RECIPES: dict[str, dict[str, Any]] = {
    "mnist": {"train_split": "test", "test_split": "test", "num_train": 8000, "num_test": 2000,
              "batches": 0, "batch_len": 0},
    "cifar10": {"train_split": "train", "test_split": "test", "num_train": 4660, "num_test": 846,
                "batches": 5, "batch_len": 10_000},
}
CHUNK = 1000   # records decoded at once while scanning by original index


class SubsetError(ValueError):
    """The tfds data set is missing, too small, or lacks what the recipe needs."""


def _source(name: str, split: str, data_dir: str) -> Sequence[Any]:
    import tensorflow_datasets as tfds
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # tfds raises several types for "not prepared"
        raise SubsetError(data.tfds_prepare_hint(name, data_dir)) from e


def _records(source: Sequence[Any], indices: Sequence[int]) -> list[dict[str, Any]]:
    return [source[int(i)] for i in indices]


def _arrays(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([np.asarray(r["image"]) for r in records]).astype(np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray([int(r["label"]) for r in records])
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise SubsetError(f"labels outside 0..255 ({labels.min()}..{labels.max()}) do not fit uint8")
    return images, labels.astype(np.uint8)


def _original_index(record: dict[str, Any], split: str) -> int:
    raw = np.asarray(record.get("id", "")).item()     # tfds gives Text features as bytes
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    m = re.fullmatch(rf"{split}_(\d+)", text)
    if not m:
        raise SubsetError(f"record id {text!r} of split {split!r} is not {split}_NNNNN: the original order is "
                          "unknown; use --order=stored")
    return int(m.group(1))


def _by_original_index(source: Sequence[Any], split: str, keep) -> list[dict[str, Any]]:
    """The records whose original index ``i`` satisfies ``keep(i)``, ordered by ``i``."""
    found: list[tuple[int, dict[str, Any]]] = []
    for s in range(0, len(source), CHUNK):
        for r in _records(source, range(s, min(s + CHUNK, len(source)))):
            i = _original_index(r, split)
            if keep(i):
                found.append((i, r))
    found.sort(key=lambda p: p[0])
    return [r for _, r in found]


def build(dataset: str, data_dir: str = "", *, num_train: int | None = None, num_test: int | None = None,
          order: str = "auto") -> dict[str, np.ndarray]:
    """The four arrays of ``dataset``'s subset (``RECIPES``)."""
    if dataset not in RECIPES:
        raise SubsetError(f"dataset={dataset!r}: one of {sorted(RECIPES)}")
    r = RECIPES[dataset]
    n_train = r["num_train"] if num_train is None else num_train
    n_test = r["num_test"] if num_test is None else num_test
    if n_train < 1 or n_test < 1:
        raise SubsetError(f"num_train={n_train} and num_test={n_test} must be positive")
    if order == "auto":
        order = "original" if r["batches"] else "stored"
    if order == "original" and not r["batches"]:
        raise SubsetError(f"tfds's {dataset} keeps no original index: only --order=stored is possible")
    if order not in ("original", "stored"):
        raise SubsetError(f"order={order!r}: one of auto, original, stored")
    train_src = _source(dataset, r["train_split"], data_dir)
    test_src = train_src if r["test_split"] == r["train_split"] else _source(dataset, r["test_split"], data_dir)
    if order == "stored":
        # Train and test from the same split (mnist): test follows train, no image in both.
        start = n_train if test_src is train_src else 0
        need = {r["train_split"]: (len(train_src), n_train + (n_test if start else 0)),
                r["test_split"]: (len(test_src), start + n_test)}
        for split, (have, want) in need.items():
            if have < want:
                raise SubsetError(f"tfds {dataset} split {split!r} has {have} records; the subset needs {want}")
        train = _records(train_src, range(n_train))
        test = _records(test_src, range(start, start + n_test))
    else:
        if n_train % r["batches"]:
            raise SubsetError(f"num_train={n_train} must divide into the {r['batches']} original training batches")
        per_batch, batch_len = n_train // r["batches"], r["batch_len"]
        train = _by_original_index(train_src, r["train_split"], lambda i: i % batch_len < per_batch)
        test = _by_original_index(test_src, r["test_split"], lambda i: i < n_test)
        if len(train) != n_train or len(test) != n_test:
            raise SubsetError(f"tfds {dataset} has {len(train)} of the {n_train} training images and {len(test)} "
                              f"of the {n_test} test images the recipe selects by original index")
    (tr_x, tr_y), (te_x, te_y) = _arrays(train), _arrays(test)
    return {"train_images": tr_x, "train_labels": tr_y, "test_images": te_x, "test_labels": te_y}


def write(arrays: dict[str, np.ndarray], out: str) -> str:
    """Writes the subset as a compressed .npz (complete or not at all); checks it reads back
    as the npz data source reads it. Returns the absolute path."""
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp.npz"
    np.savez_compressed(tmp, **{k: arrays[k] for k in data.NPZ_KEYS})
    data.load_npz_arrays(tmp)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=sorted(RECIPES))
    ap.add_argument("--data_dir", default="", help="tfds data_dir where the data set is prepared")
    ap.add_argument("--out", required=True, help="the .npz to write")
    ap.add_argument("--num_train", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--num_test", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--order", default="auto", choices=("auto", "original", "stored"))
    a = ap.parse_args(argv)
    try:
        arrays = build(a.dataset, a.data_dir, num_train=a.num_train, num_test=a.num_test, order=a.order)
        out = write(arrays, a.out)
    except (SubsetError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split in ("train", "test"):
        im, lb = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        print(f"{split}: images {im.shape} {im.dtype}, labels per class {np.bincount(lb).tolist()}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
