"""Small builders shared by the tests."""

from __future__ import annotations

import importlib.util
import os
import types

from rsc_jax import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str) -> types.ModuleType:
    """``scripts/NAME.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_config(name: str):
    """``configs/NAME.py``'s ``get_config()``."""
    return config.from_file(name)


def tiny_digits_config(**train):
    """Digits, a width-1/4 convnet, T = 2: a few seconds per epoch."""
    c = config.base()
    c.model.width = 0.25
    c.coding.T = 2
    c.train.batch_size = 32
    c.train.epochs = 1
    c.train.log_every = 5
    c.train.checkpoint_every = 5
    c.eval.batch_size = 120
    c.eval.draws = 2
    for k, v in train.items():
        c.train[k] = v
    return c


def with_changes(arrays: dict, change: dict) -> dict:
    """A copy of ``arrays`` with ``change`` applied: a value replaces, ``None`` removes."""
    out = {**arrays, **{k: v for k, v in change.items() if v is not None}}
    for k in (k for k, v in change.items() if v is None):
        out.pop(k)
    return out


def tiny_spiking_classifier():
    """An untrained width-1/4 spiking convnet on 8x8x1 digits behind RSC-II at T = 2, with
    threshold 0.2 (at the default 1.0 no spike of the untrained net reaches the logits)."""
    import jax

    from rsc_jax import classifier
    cc = classifier.classifier_config(
        model={"name": "convnet", "spiking": True, "overrides": {"width": 0.25, "v_th": 0.2}},
        coding_cfg={"method": "rsc2", "sigma": 0.2, "T": 2},
        dataset={"name": "digits", "num_classes": 10, "image_shape": [8, 8, 1], "mean": [0.3], "std": [0.37]})
    return classifier.Classifier(cc, classifier.init_variables(cc, jax.random.key(0)))
