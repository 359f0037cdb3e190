"""Controlled comparisons on the CIFAR-10 subset (as ``digits_controlled``): the runs of
``sweep.controlled_runs(0.2, 4)`` (with the ANN on the mean of 4 Poisson frames), the
``rand`` attack preset on all 846 test images at 8/255, certification with n = 100,000
on the first 500 test images, three seeds. Sized for a GPU (docs/GPU_RUNS.md; on 2 CPU
cores a run takes many hours).

    python -m rsc_jax.sweep --sweep=configs/sweeps/cifar10_controlled.py --workdir=runs/sweeps/cifar10_controlled
"""

from rsc_jax.sweep import RAND, controlled_runs


def get_sweep():
    return {"title": "CIFAR-10 subset: controlled comparisons (rand preset)", "base": "cifar10_subset",
            "modes": "all", "seeds": [0, 1, 2],
            "overrides": {**RAND, "certify.num_examples": 500, "certify.n": 100_000,
                          "certify.batch": 1000, "certify.image_batch": 8,
                          "certify.radii": (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)},
            "runs": controlled_runs(0.2, 4)}
