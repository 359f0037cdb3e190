"""The noise-matched ANN control of a T-step Poisson SNN (issue 29): an ANN on Poisson
coding with T > 1 sees the mean of T Bernoulli frames (variance x(1-x)/T, the SNN's time
average); the Gaussian ANNs and T = 1 keep one frame."""

import jax
import numpy as np
import pytest

from rsc_jax import classifier, coding


def _clf(method, T, sigma=0.0, spiking=False):
    cfg = classifier.classifier_config(
        model={"name": "convnet", "spiking": spiking}, coding_cfg={"method": method, "sigma": sigma, "T": T},
        dataset={"name": "t", "num_classes": 3, "image_shape": (2, 2, 1), "mean": (0.5,), "std": (0.5,)})
    return classifier.Classifier(cfg, None)


def test_ann_on_poisson_sees_the_mean_of_T_frames():
    key = jax.random.key(0)
    x = np.full((4000, 2, 2, 1), 0.3, np.float32)
    got = np.asarray(_clf("poisson", 4).encode(key, x))
    frames = np.asarray(coding.encode(key, x, method="poisson", T=4))
    assert got.shape == x.shape
    np.testing.assert_allclose(got, frames.mean(0), atol=1e-7)
    assert set(np.unique(got).tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    # variance x(1-x)/T = 0.0525 (16,000 values: standard error of the variance about 0.0006)
    assert got.var() == pytest.approx(0.3 * 0.7 / 4, abs=0.003)
    one = np.asarray(_clf("poisson", 1).encode(key, x))
    assert one.var() == pytest.approx(0.3 * 0.7, abs=0.01)          # T = 1: one frame, as before
    np.testing.assert_array_equal(one, np.asarray(coding.encode(key, x, method="poisson", T=1))[0])


def test_gaussian_ann_and_snn_are_unchanged():
    key = jax.random.key(1)
    x = np.full((8, 2, 2, 1), 0.5, np.float32)
    ann = np.asarray(_clf("rsc2", 4, 0.2).encode(key, x))
    np.testing.assert_array_equal(ann, np.asarray(coding.encode(key, x, method="rsc2", T=1, sigma=0.2))[0])
    snn = np.asarray(_clf("poisson", 4, spiking=True).encode(key, x))
    assert snn.shape == (4, *x.shape)
