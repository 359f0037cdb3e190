"""Data sets as random-access sources, and a deterministic batch order.

Sources: scikit-learn's 8x8 digits (embedded, the default), ``.npz`` files with the
keys ``train_images``/``train_labels``/``test_images``/``test_labels`` (uint8 NHWC
images, as in ``../shared/data``), and tfds (``mnist``, ``cifar10``, ``cifar100``,
``imagenet2012``) through ``tfds.data_source``, which needs no TensorFlow.

Determinism (for exact resumption): the order of epoch e is a permutation drawn from
``(seed, e)``, and the augmentation of step s from ``(seed, s)``; nothing depends on
how many batches were drawn before.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import re
import threading
from typing import Any, Callable, Iterator, Protocol

import numpy as np

# Per-channel statistics of the training sets, in [0, 1] pixel units.
KNOWN_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
NUM_CLASSES: dict[str, int] = {"mnist": 10, "cifar10": 10, "cifar100": 100, "imagenet2012": 1000}
NPZ_KEYS: tuple[str, ...] = ("train_images", "train_labels", "test_images", "test_labels")


class DataError(ValueError):
    """A data set is missing, not prepared, or malformed."""


class Source(Protocol):
    """Random access to (uint8 image [H, W, C], int label) records."""
    def __len__(self) -> int: ...
    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """In-memory uint8 images ``[N, H, W, C]`` and int32 labels ``[N]``."""
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[indices], self.labels[indices]


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A ``tfds.data_source`` split; ImageNet images are resized and cropped to ``size``."""
    source: Any
    size: int = 0

    def __len__(self) -> int:
        return len(self.source)

    def _read(self, i: int) -> tuple[np.ndarray, int]:
        r = self.source[i]
        image = np.asarray(r["image"])
        return (_resize_center_crop(image, self.size) if self.size else image), int(r["label"])

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # JPEG decoding and resizing release the GIL: threads decode a batch in parallel
        # (one thread took ~10 ms per ImageNet image, ~2.5 s per batch of 256).
        workers = min(len(indices), os.cpu_count() or 1, 32)
        if workers > 1:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                pairs = list(pool.map(self._read, (int(i) for i in indices)))
        else:
            pairs = [self._read(int(i)) for i in indices]
        return np.stack([p[0] for p in pairs]), np.asarray([p[1] for p in pairs], np.int32)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Source
    test: Source
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def info(self) -> dict[str, Any]:
        """What an export must remember about the data (no arrays)."""
        return {"name": self.name, "num_classes": self.num_classes,
                "image_shape": list(self.image_shape), "mean": list(self.mean), "std": list(self.std)}


def _resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size * 8/7`` (256 for 224), then the central ``size`` square."""
    from PIL import Image  # Pillow comes with matplotlib; only ImageNet needs it
    h, w = image.shape[:2]
    scale = size * 8 / 7 / min(h, w)
    im = Image.fromarray(image.squeeze()).resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                                  Image.BILINEAR)
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[..., None]
    top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
    return a[top:top + size, left:left + size]


def load_digits_arrays() -> dict[str, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as uint8 (0-16 scaled to 0-255), split 1,437/360.

    The split (ours) is a fixed permutation with seed 0, so every run sees the same
    test set.
    """
    from sklearn.datasets import load_digits
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))
    n_test = 360
    tr, te = order[:-n_test], order[-n_test:]
    return {"train_images": images[tr], "train_labels": labels[tr],
            "test_images": images[te], "test_labels": labels[te]}


def missing_file_message(path: str, field: str = "config.dataset.path") -> str:
    """The one line for an .npz data file that is not there: how to build it
    (``scripts/make_subsets.py``, docs/DATA.md) and how to point the run at it.

    A path inside an installed package (a bundled config's default, ``../shared/data``
    beside a source checkout) is not shown as a place to put the file."""
    name = os.path.basename(path) or "data.npz"
    m = re.fullmatch(r"(mnist|cifar10)_subset\.npz", name)
    dataset = m.group(1) if m else "mnist|cifar10"
    installed = any(part in ("site-packages", "dist-packages") for part in os.path.abspath(path).split(os.sep))
    where = (" (the bundled config looks beside a source checkout, in ../shared/data, which an installed "
             "package does not have)" if installed else f" at {path!r}")
    return (f"{field}: the data file {name} does not exist{where}; build it with `python scripts/make_subsets.py "
            f"--dataset={dataset} --data_dir=DIR --out={name}` (in a checkout; DIR: a tfds data_dir with the "
            f"data set prepared; docs/DATA.md) and pass --config.dataset.path=PATH/TO/{name}")


def load_npz_arrays(path: str) -> dict[str, np.ndarray]:
    """Reads and checks an .npz with ``NPZ_KEYS``; raises ``DataError`` naming the problem."""
    if not os.path.isfile(path):
        raise DataError(missing_file_message(path))
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zip or pickle errors from a damaged file
        raise DataError(f"dataset.path={path!r} is not a readable .npz file: {e}") from e
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DataError(f"dataset.path={path!r} lacks key(s) {missing}; an npz data set needs {list(NPZ_KEYS)}")
    for split in ("train", "test"):
        im, lb = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if im.dtype != np.uint8:
            raise DataError(f"dataset.path={path!r}: {split}_images has dtype {im.dtype}; uint8 (0-255) is required")
        if im.ndim == 3:
            im = arrays[f"{split}_images"] = im[..., None]
        if im.ndim != 4:
            raise DataError(f"dataset.path={path!r}: {split}_images has shape {im.shape}; "
                            "[N, H, W, C] or [N, H, W] is required")
        if lb.ndim != 1 or len(lb) != len(im):
            raise DataError(f"dataset.path={path!r}: {split}_labels has shape {lb.shape}; "
                            f"[{len(im)}] (one label per image) is required")
        if not np.issubdtype(lb.dtype, np.integer) or (len(lb) and lb.min() < 0):
            raise DataError(f"dataset.path={path!r}: {split}_labels must be non-negative integers")
        arrays[f"{split}_labels"] = lb.astype(np.int32)
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"dataset.path={path!r}: train images {arrays['train_images'].shape[1:]} and test images "
                        f"{arrays['test_images'].shape[1:]} differ in shape")
    return arrays


def tfds_prepare_hint(name: str, data_dir: str) -> str:
    """How to prepare a tfds data set for ``tfds.data_source`` (array_record format)."""
    d = data_dir or "~/tensorflow_datasets"
    manual = ""
    if name == "imagenet2012":
        manual = (f" ImageNet cannot be downloaded automatically: first place ILSVRC2012_img_train.tar and "
                  f"ILSVRC2012_img_val.tar in {d}/downloads/manual/.")
    return (f"tfds data set {name!r} is not prepared in data_dir={d!r}.{manual} Prepare it once, on a machine "
            f"with internet access, with:\n  pip install tensorflow-datasets importlib_resources\n"
            f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{d}', "
            f"file_format='array_record').download_and_prepare()\"\n"
            f"then pass --config.dataset.data_dir={d}")


def _tfds_split(name: str, split: str, data_dir: str) -> Any:
    import tensorflow_datasets as tfds
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # tfds raises several types for "not prepared"
        raise DataError(tfds_prepare_hint(name, data_dir)) from e


def _take(arrays: dict[str, np.ndarray], split: str, n: int) -> ArraySource:
    im, lb = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if n != -1:
        im, lb = im[:n], lb[:n]
    return ArraySource(im, lb)


def load(cfg: Any) -> Dataset:
    """The data set named by ``cfg.dataset`` (``name``, ``path``, ``data_dir``, ...)."""
    c = cfg.dataset
    if c.name in ("digits", "npz"):
        arrays = load_digits_arrays() if c.name == "digits" else load_npz_arrays(c.path)
        train, test = _take(arrays, "train", c.num_train), _take(arrays, "test", c.num_test)
        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        num_classes = max(num_classes, 2)
        image_shape = tuple(train.images.shape[1:])
        mean, std = _stats(c, train.images)
    else:
        size = (c.image_size or 224) if c.name == "imagenet2012" else 0
        split_test = "validation" if c.name == "imagenet2012" else "test"
        tr = _tfds_split(c.name, "train" if c.num_train == -1 else f"train[:{c.num_train}]", c.data_dir)
        te = _tfds_split(c.name, split_test if c.num_test == -1 else f"{split_test}[:{c.num_test}]", c.data_dir)
        train, test = TfdsSource(tr, size), TfdsSource(te, size)
        first, _ = train.get(np.array([0]))
        image_shape = tuple(first.shape[1:])
        num_classes = NUM_CLASSES[c.name]
        mean, std = (tuple(c.mean), tuple(c.std)) if len(c.mean) else KNOWN_STATS[c.name]
    if len(mean) not in (1, image_shape[-1]):
        raise DataError(f"config.dataset.mean={tuple(mean)} has {len(mean)} entries; the images have "
                        f"{image_shape[-1]} channels")
    return Dataset(c.name, train, test, num_classes, image_shape, tuple(map(float, mean)), tuple(map(float, std)))


def _stats(c: Any, images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if len(c.mean):
        return tuple(c.mean), tuple(c.std)
    x = images.astype(np.float64) / 255.0
    axes = tuple(range(x.ndim - 1))
    return tuple(x.mean(axis=axes)), tuple(np.maximum(x.std(axis=axes), 1e-3))


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 0-255 -> float32 in [0, 1]."""
    return images.astype(np.float32) / np.float32(255.0)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped; a new order every epoch)."""
    if n < batch_size:
        raise DataError(f"the training set has {n} examples, fewer than config.train.batch_size={batch_size}")
    return n // batch_size


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Example indices of global training step ``step``: a pure function of its arguments."""
    spe = steps_per_epoch(n, batch_size)
    epoch, pos = divmod(step, spe)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[pos * batch_size:(pos + 1) * batch_size]


def crop_flip(images: np.ndarray, positions: np.ndarray, *, seed: int, step: int, pad: int = 4) -> np.ndarray:
    """Random crop after zero padding by ``pad`` and random horizontal flip (CIFAR style).

    Example i's crop and flip come from ``(seed, step, positions[i])`` alone (its
    position in the global batch), so a host that loads only its rows augments them
    exactly as a single host would.
    """
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.empty_like(images)
    for i in range(n):
        rng = np.random.default_rng([seed, step, 1, int(positions[i])])
        dy, dx = rng.integers(0, 2 * pad + 1, 2)
        crop = padded[i, dy:dy + h, dx:dx + w]
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def train_batch(ds: Dataset, *, step: int, batch_size: int, seed: int, augment: bool,
                rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Rows ``rows`` of the global batch of ``step`` (default all): float images in
    [0, 1], int32 labels. Only those rows are read from the source."""
    positions = np.arange(batch_size)[rows]
    idx = batch_indices(len(ds.train), batch_size, step, seed)[rows]
    images, labels = ds.train.get(idx)
    if augment:
        images = crop_flip(images, positions, seed=seed, step=step)
    return {"image": to_float(images), "label": labels.astype(np.int32)}


def test_arrays(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The whole test split as float images in [0, 1] and int32 labels."""
    images, labels = ds.test.get(np.arange(len(ds.test)))
    return to_float(images), labels.astype(np.int32)


def prefetch(make: Callable[[int], Any], steps: range, depth: int = 2) -> Iterator[Any]:
    """Yields ``make(s)`` for ``s`` in ``steps``, computed ``depth`` ahead in a thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker() -> None:
        try:
            for s in steps:
                if stop.is_set():
                    return
                q.put((s, make(s), None))
        except Exception as e:  # surfaced in the consumer
            q.put((None, None, e))
        q.put((None, None, StopIteration()))

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while True:
            s, item, err = q.get()
            if isinstance(err, StopIteration):
                return
            if err is not None:
                raise err
            yield item
    finally:
        stop.set()
