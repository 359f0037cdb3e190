"""Small builders shared by the tests."""

from __future__ import annotations

from rsc_jax import config


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
