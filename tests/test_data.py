"""Data sources: digits, npz (good and malformed), tfds through mock_data, batch order."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rsc_jax import config, data
from tests.conftest import shared_file
from tests.helpers import load_config, with_changes


def test_digits_split_and_range():
    ds = data.load(config.base())
    assert (len(ds.train), len(ds.test)) == (1437, 360)
    assert ds.image_shape == (8, 8, 1) and ds.num_classes == 10
    x, y = data.test_arrays(ds)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_batch_order_is_a_function_of_seed_and_step():
    n, b = 100, 32
    a = data.batch_indices(n, b, step=4, seed=3)
    np.testing.assert_array_equal(a, data.batch_indices(n, b, step=4, seed=3))
    epoch = np.concatenate([data.batch_indices(n, b, step=s, seed=3) for s in range(3)])
    assert len(set(epoch.tolist())) == 96                      # no repeats within an epoch
    assert not np.array_equal(data.batch_indices(n, b, step=0, seed=3), data.batch_indices(n, b, step=3, seed=3))


def test_crop_flip_keeps_shape_and_content():
    img = np.arange(2 * 6 * 6 * 1, dtype=np.uint8).reshape(2, 6, 6, 1)
    out = data.crop_flip(img, np.arange(2), seed=0, step=0, pad=0)
    for i in range(2):   # with no padding the crop is the image, maybe flipped
        assert np.array_equal(out[i], img[i]) or np.array_equal(out[i], img[i][:, ::-1])
    # Each example's augmentation depends only on (seed, step, position): a host that
    # holds rows 1.. of the batch augments them exactly as the whole batch would.
    big = np.random.default_rng(0).integers(0, 255, (6, 6, 6, 3), dtype=np.uint8)
    whole = data.crop_flip(big, np.arange(6), seed=3, step=7)
    part = data.crop_flip(big[2:5], np.arange(2, 5), seed=3, step=7)
    np.testing.assert_array_equal(whole[2:5], part)
    assert not np.array_equal(whole, data.crop_flip(big, np.arange(6), seed=3, step=8))


def test_real_cifar_subset():
    shared_file("cifar10_subset.npz")
    ds = data.load(load_config("cifar10_subset"))
    assert (len(ds.train), len(ds.test)) == (4660, 846) and ds.image_shape == (32, 32, 3)


def _write(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    c = config.base()
    c.dataset.name = "npz"
    c.dataset.path = str(p)
    return c


GOOD = dict(train_images=np.zeros((4, 5, 5, 1), np.uint8), train_labels=np.array([0, 1, 2, 1]),
            test_images=np.zeros((2, 5, 5, 1), np.uint8), test_labels=np.array([1, 0]))


@pytest.mark.parametrize("change,match", [
    ({"train_labels": None}, r"lacks key\(s\) \['train_labels'\]"),
    ({"train_images": np.zeros((4, 5, 5, 1), np.float32)}, "dtype float32; uint8"),
    ({"test_images": np.zeros((2, 5), np.uint8)}, "shape"),
    ({"train_labels": np.array([0, 1, -2, 1])}, "non-negative"),
    ({"train_labels": np.array([0, 1])}, "one label per image"),
    ({"test_images": np.zeros((2, 6, 6, 1), np.uint8)}, "differ in shape"),
])
def test_malformed_npz(tmp_path, change, match):
    with pytest.raises(data.DataError, match=match):
        data.load(_write(tmp_path, **with_changes(GOOD, change)))


def test_good_npz(tmp_path):
    ds = data.load(_write(tmp_path, **GOOD))
    assert ds.num_classes == 3 and ds.image_shape == (5, 5, 1)


def test_tfds_pipeline_with_mock_data():
    c = config.base()
    c.dataset.name = "cifar10"
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load(c)
        assert ds.image_shape == (32, 32, 3) and ds.num_classes == 10 and len(ds.train) == 12
        b = data.train_batch(ds, step=1, batch_size=4, seed=0, augment=True)
        assert b["image"].shape == (4, 32, 32, 3) and b["image"].dtype == np.float32
        assert b["label"].dtype == np.int32 and 0 <= b["label"].min() and b["label"].max() < 10
        assert ds.mean == data.KNOWN_STATS["cifar10"][0]


def test_tfds_not_prepared_says_how(tmp_path):
    c = config.base()
    c.dataset.name = "cifar10"
    c.dataset.data_dir = str(tmp_path)
    with pytest.raises(data.DataError) as e:
        data.load(c)
    msg = str(e.value)
    assert "not prepared" in msg and str(tmp_path) in msg and "download_and_prepare" in msg
    c.dataset.name = "imagenet2012"
    with pytest.raises(data.DataError, match="downloads/manual"):
        data.load(c)
