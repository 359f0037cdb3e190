"""rsc_jax training steps and forward passes to time (the package's own code paths)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsc_jax import backend, train
from rsc_jax import classifier as rsc_classifier   # `classifier` below is this module's builder

CIFAR = {"name": "bench32", "num_classes": 10, "image_shape": [32, 32, 3],
         "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.243, 0.261]}
DIGITS = {"name": "bench_digits", "num_classes": 10, "image_shape": [8, 8, 1], "mean": [0.3], "std": [0.4]}


def classifier_config(name: str = "vgg11", *, spiking: bool = True, T: int = 4, remat: bool = False,
                      dataset: dict = CIFAR, method: str = "rsc2", sigma: float = 0.2,
                      dtype: str = "float32", **neuron: Any) -> dict[str, Any]:
    """The ``classifier.classifier_config`` of a benchmark model (ANN twins: direct coding, T = 1)."""
    return rsc_classifier.classifier_config(
        model={"name": name, "spiking": spiking, "overrides": {"remat": remat, "dtype": dtype, **neuron}},
        coding_cfg={"method": method if spiking else "direct", "sigma": sigma if spiking else 0.0,
                    "T": T if spiking else 1},
        dataset=dataset)


def classifier(name: str = "vgg11", *, spiking: bool = True, T: int = 4, remat: bool = False,
               dataset: dict = CIFAR, method: str = "rsc2", sigma: float = 0.2,
               dtype: str = "float32", seed: int = 0, **neuron: Any) -> rsc_classifier.Classifier:
    cfg = classifier_config(name, spiking=spiking, T=T, remat=remat, dataset=dataset, method=method, sigma=sigma,
                            dtype=dtype, **neuron)
    return rsc_classifier.Classifier(cfg, rsc_classifier.init_variables(cfg, jax.random.key(seed)))


def batch(clf: rsc_classifier.Classifier, B: int, seed: int = 0) -> dict[str, jax.Array]:
    shape = tuple(clf.config["dataset"]["image_shape"])
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.random((B, *shape), np.float32)),
            "label": jnp.asarray(rng.integers(0, clf.num_classes, B).astype(np.int32)),
            "index": jnp.arange(B, dtype=jnp.int32)}


def train_step(clf: rsc_classifier.Classifier, *, xla_defaults: bool = False) -> tuple[Callable, dict]:
    """(jitted step, initial state): SGD momentum 0.9, the package's make_train_step.

    ``xla_defaults``: the same step compiled by plain ``jax.jit``, without the package's
    CPU compiler options (``rsc_jax.backend``), to time what they buy side by side."""
    tx = optax.sgd(0.01, momentum=0.9)
    step = train.make_train_step(train.cross_entropy_loss(clf), tx, jax.random.key(1))
    if xla_defaults:
        step = jax.jit(step.__wrapped__, donate_argnums=(0,))
    state = train.init_state(jax.tree.map(jnp.copy, clf.params), tx)   # the step donates its state
    return step, state


def runner(step: Callable, state: dict, b: dict) -> Callable[[], None]:
    """A no-argument callable doing one blocking training step (state is donated)."""
    holder = {"s": state}

    def run():
        holder["s"], m = step(holder["s"], b)
        jax.block_until_ready(m["loss"])
    return run


def temp_bytes(clf: rsc_classifier.Classifier, B: int) -> int:
    step, state = train_step(clf)
    b = batch(clf, B)
    return int(step.lower(state, b).compile().memory_analysis().temp_size_in_bytes)


def inference(clf: rsc_classifier.Classifier, B: int, *, xla_defaults: bool = False) -> Callable[[], None]:
    """One blocking forward pass, jitted as evaluation and certification do
    (``rsc_jax.backend.jit``); ``xla_defaults``: by plain ``jax.jit`` instead."""
    f = (jax.jit if xla_defaults else backend.jit)(lambda k, x: clf.logits(k, x))
    x = batch(clf, B)["image"]
    k = jax.random.key(3)
    return lambda: jax.block_until_ready(f(k, x))
