"""The clean evaluator: accuracy on fresh coding draws, one draw and logits averaged
over M draws; writes ``evaluation.json``.

Example i is coded with keys split from ``fold_in(fold_in(key(seed), 3), i)``, so the
numbers do not depend on batch size or device count.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rsc_jax import backend, parallel, report
from rsc_jax.evaluators import common

CLEAN_STREAM = 3   # fold_in tag of the evaluation keys


def accuracy(clf: Any, images: np.ndarray, labels: np.ndarray, *, batch_size: int, draws: int, seed: int,
             mesh: jax.sharding.Mesh, progress: bool = True) -> dict[str, Any]:
    """Clean accuracy on fresh coding draws, per example keys from (seed, index).

    Returns ``accuracy`` (one draw per example), ``accuracy_avg{M}`` (logits averaged
    over M = ``draws`` draws) and per-example ``correct`` lists.
    """
    key = jax.random.fold_in(jax.random.key(seed), CLEAN_STREAM)

    @backend.jit
    def fn(idx, x, y):
        keys = parallel.example_keys(key, idx)
        draw_keys = jax.vmap(lambda k: jax.random.split(k, draws))(keys)   # [B, M]
        logits = jax.vmap(lambda ks: clf.logits(ks, x), in_axes=1)(draw_keys)  # [M, B, C]
        one = jnp.argmax(logits[0], -1) == y
        avg = jnp.argmax(logits.mean(0), -1) == y
        return {"correct": one, "correct_avg": avg}

    nb = -(-len(labels) // batch_size)
    out = parallel.map_examples(fn, [images, labels], batch_size=batch_size, mesh=mesh,
                                progress=common.batch_bar(progress, nb, "evaluate"))
    return {"num_examples": int(len(labels)), "draws": draws, "seed": seed,
            "accuracy": float(out["correct"].mean()), f"accuracy_avg{draws}": float(out["correct_avg"].mean()),
            "correct": out["correct"].astype(int).tolist()}


def run(classifier: Any, images: np.ndarray, labels: np.ndarray, cfg: Any, *, workdir: str,
        mesh: jax.sharding.Mesh, progress: bool = True, seed: int = 0, source: str | None = None
        ) -> dict[str, Any]:
    """``accuracy`` with the ``config.eval`` section (batch_size, draws) on every test
    image; writes ``evaluation.json`` (``source``: the export evaluated, recorded)."""
    images, labels = common.test_set(classifier, images, labels, -1)
    r = accuracy(classifier, images, labels, batch_size=cfg.batch_size, draws=cfg.draws, seed=seed, mesh=mesh,
                 progress=progress)
    r["export"] = source
    report.write_json(report.path(workdir, "evaluation"), r)
    return r
