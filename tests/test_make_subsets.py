"""scripts/make_subsets.py: the real-data subsets' .npz format built from tfds (mock data;
no TensorFlow, no download), CIFAR-10's selection by original index, the error messages."""

import os
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rsc_jax import config, data
from tests.helpers import load_script



@pytest.fixture(scope="module")
def subsets():
    return load_script("make_subsets")


def test_mnist_subset_has_the_provided_format_and_loads(subsets, tmp_path):
    """Train = the first 8 records of tfds's mnist test split, test = the next 4, in the
    provided files' format (uint8 NHWC images, uint8 labels, compressed), read by the npz source."""
    out = str(tmp_path / "sub" / "mnist_subset.npz")
    with tfds.testing.mock_data(num_examples=12):
        src = tfds.data_source("mnist", split="test")
        want = np.stack([np.asarray(src[i]["image"]) for i in range(12)])
        want_labels = np.asarray([int(src[i]["label"]) for i in range(12)])
        assert subsets.main(["--dataset=mnist", "--num_train=8", "--num_test=4", f"--out={out}"]) == 0
    with np.load(out) as f:
        arrays = {k: f[k] for k in f.files}
    assert list(arrays) == list(data.NPZ_KEYS)
    assert arrays["train_images"].shape == (8, 28, 28, 1) and arrays["test_images"].shape == (4, 28, 28, 1)
    assert all(a.dtype == np.uint8 for a in arrays.values())
    np.testing.assert_array_equal(np.concatenate([arrays["train_images"], arrays["test_images"]]), want)
    np.testing.assert_array_equal(np.concatenate([arrays["train_labels"], arrays["test_labels"]]), want_labels)
    assert {i.compress_type for i in zipfile.ZipFile(out).infolist()} == {zipfile.ZIP_DEFLATED}
    assert sorted(os.listdir(tmp_path / "sub")) == ["mnist_subset.npz"]      # no temporary file left
    c = config.base()
    c.dataset.name, c.dataset.path = "npz", out
    ds = data.load(c)
    assert ds.image_shape == (28, 28, 1) and len(ds.train) == 8 and len(ds.test) == 4


def _fake_cifar10(per_batch_stored: int = 3, test_stored: int = 5):
    """tfds cifar10 as stored: shuffled, each record's original index in its id; the
    image's pixels hold a code of that index, so the test can tell which came out."""
    rng = np.random.default_rng(0)
    splits = {"train": [b * 10_000 + j for b in range(5) for j in range(per_batch_stored)],
              "test": list(range(test_stored))}
    records = {}
    for split, indices in splits.items():
        rows = [{"id": f"{split}_{i:05d}".encode(), "label": np.int64(i % 10),
                 "image": np.full((32, 32, 3), i // 10_000 * 10 + i % 10_000, np.uint8)} for i in indices]
        records[split] = [rows[k] for k in rng.permutation(len(rows))]

    def as_data_source(builder, split, **kwargs):
        return records[split]
    return as_data_source


def test_cifar10_selects_and_orders_by_original_index(subsets):
    """The first num_train/5 images of each original training batch and the first num_test test
    images, in the original order, whatever order tfds stored them in."""
    with tfds.testing.mock_data(as_data_source_fn=_fake_cifar10()):
        a = subsets.build("cifar10", num_train=10, num_test=3)
    assert a["train_images"].shape == (10, 32, 32, 3) and a["test_images"].shape == (3, 32, 32, 3)
    assert a["train_images"][:, 0, 0, 0].tolist() == [0, 1, 10, 11, 20, 21, 30, 31, 40, 41]
    assert a["train_labels"].tolist() == [0, 1] * 5 and a["train_labels"].dtype == np.uint8
    assert a["test_images"][:, 0, 0, 0].tolist() == [0, 1, 2] and a["test_labels"].tolist() == [0, 1, 2]
    with tfds.testing.mock_data(as_data_source_fn=_fake_cifar10()):
        with pytest.raises(subsets.SubsetError, match="15 of the 20 training images"):
            subsets.build("cifar10", num_train=20, num_test=3)        # 4 per batch; 3 exist
        with pytest.raises(subsets.SubsetError, match="must divide into the 5"):
            subsets.build("cifar10", num_train=11, num_test=3)


def test_stored_order_and_what_cannot_be_done(subsets, tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        a = subsets.build("cifar10", num_train=4, num_test=2, order="stored")
        assert a["train_images"].shape == (4, 32, 32, 3) and a["test_labels"].shape == (2,)
        with pytest.raises(subsets.SubsetError, match="use --order=stored"):     # mock ids are random text
            subsets.build("cifar10", num_train=5, num_test=2)
        with pytest.raises(subsets.SubsetError, match="keeps no original index"):
            subsets.build("mnist", order="original")
        with pytest.raises(subsets.SubsetError, match="split 'test' has 6 records; the subset needs 10000"):
            subsets.build("mnist")
    with pytest.raises(subsets.SubsetError, match="download_and_prepare"):
        subsets.build("mnist", str(tmp_path))
    assert subsets.main(["--dataset=mnist", f"--data_dir={tmp_path}", f"--out={tmp_path}/x.npz"]) == 1
    assert not os.path.exists(tmp_path / "x.npz")
