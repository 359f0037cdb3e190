"""Evaluators, one small module per metric, picked by name (as big_vision's
``evaluators/``): ``clean`` (accuracy), ``robustness`` (the attack suite of
``attack_suite`` with the gradient-masking checks of ``masking``), ``convergence``
(robust accuracy against the attack budget) and ``certification`` (randomized-smoothing
certificates).

Each has the same shape, ``run(classifier, images, labels, cfg, *, workdir, mesh,
progress=True, **extra) -> dict``, with ``cfg`` its config section; it writes its
results into ``workdir`` through ``report`` and returns them.
"""

from __future__ import annotations

import types
from typing import Callable

from rsc_jax.evaluators import certification, clean, convergence, robustness

EVALUATORS: dict[str, types.ModuleType] = {
    "clean": clean,
    "robustness": robustness,
    "convergence": convergence,
    "certification": certification,
}


def get(name: str) -> Callable[..., dict]:
    """The ``run`` of evaluator ``name`` (looked up at call time)."""
    if name not in EVALUATORS:
        raise ValueError(f"evaluator name={name!r} is not known; allowed: {sorted(EVALUATORS)}")
    return EVALUATORS[name].run
