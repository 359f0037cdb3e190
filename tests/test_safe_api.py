"""Safe from a notebook (issue 28): a Python API that cannot certify with the wrong coding,
clear lines for unbatched images, explicit settings that win over the quick preset,
model/input combinations refused before anything is written, and the command line's
recipe for evaluating an export elsewhere (fractions like 16/255, eps suggestions, the
ANN twin found beside the export)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import certify as C
from rsc_jax import classifier, config, train
from tests.test_certify import ToyClassifier, toy_data


# --------------------------------------------------------------------------- certify API

def test_certify_takes_the_coding_from_the_classifier_and_refuses_another():
    clf = ToyClassifier(method="rsc2", sigma=0.25, T=2)
    x = jnp.asarray(toy_data(4)[0])
    kw = dict(n0=20, n=200, alpha=0.01, batch=100)
    own = C.certify(clf, jax.random.key(0), x, **kw)
    # the radius is the classifier's coding's: rsc2 sigma 0.25, T 2 (certify.radius by hand)
    np.testing.assert_allclose(own.radius, C.radius(own.p_lower, sigma=0.25, coding="rsc2", T=2), rtol=1e-12)
    # the config's own naming (method, sigma, T) is accepted and checked, with the same result
    same = C.certify(clf.logits, jax.random.key(0), x, **clf.config["coding"], **kw)
    np.testing.assert_array_equal(same.radius, own.radius)
    traced = clf.calls
    for wrong, match in ((dict(sigma=0.5), "sigma=0.5 is not allowed"), (dict(T=4), "T=4 is not allowed"),
                         (dict(coding="rsc1"), "method='rsc1' is not allowed"),
                         (dict(method="rsc2", coding="rsc1"), "disagree")):
        with pytest.raises(ValueError, match=match) as e:
            C.certify(clf.logits, jax.random.key(0), x, **wrong, **kw)
        assert "\n" not in str(e.value) and (wrong.get("coding") == "rsc1" or "sigma=0.25" in str(e.value))
    assert clf.calls == traced, "a refused certificate must not run the classifier"


def test_certify_of_a_plain_function_needs_the_coding_and_an_ann_counts_one_frame():
    fn = ToyClassifier(method="rsc1", sigma=0.5, T=1)._fn
    x = jnp.asarray(toy_data(2)[0])
    with pytest.raises(ValueError, match="sigma, T missing: a plain logits function"):
        C.certify(fn, jax.random.key(0), x, method="rsc1")
    ann = ToyClassifier(method="rsc2", sigma=0.5, T=4)
    ann.config["model"] = {"spiking": False}     # an ANN sees one coded frame: T = 1 in the radius
    assert C.classifier_coding(ann.logits) == {"method": "rsc2", "sigma": 0.5, "T": 1}


def test_unbatched_images_are_one_clear_line():
    clf = ToyClassifier()
    one = jnp.asarray(toy_data(1)[0][0])          # [H, W, C]
    with pytest.raises(ValueError, match=r"x has shape \(2, 2, 1\); a batch of images \[B, H, W, C\] is "
                                         r"required \(one image: pass x\[None\]\)"):
        C.certify(clf, jax.random.key(0), one, n0=5, n=5)
    with pytest.raises(ValueError, match="one image: pass x"):
        C.predict(clf.logits, jax.random.key(0), one, n=5, alpha=0.01)
    c = config.base()
    c.model.width, c.coding.T = 0.25, 2
    cc = classifier.classifier_config(model={"name": "convnet", "spiking": True, "overrides": {"width": 0.25}},
                                      coding_cfg=dict(c.coding), dataset={"name": "digits", "num_classes": 10,
                                                                          "image_shape": (8, 8, 1),
                                                                          "mean": (0.5,), "std": (0.5,)})
    real = classifier.Classifier(cc, None)
    with pytest.raises(classifier.InputError, match=r"x has shape \(8, 8, 1\);.*pass x\[None\]"):
        real.logits(jax.random.key(0), np.zeros((8, 8, 1), np.float32))
    assert clf.calls == 0
