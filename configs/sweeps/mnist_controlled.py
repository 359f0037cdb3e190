"""Controlled comparisons on the MNIST subset (as ``digits_controlled``): the runs of
``sweep.controlled_runs(0.2, 4)`` (with the ANN on the mean of 4 Poisson frames), the
``rand`` attack preset on all 2,000 test images with the strong attacks at 32/255,
certification with n = 100,000 on the first 500 test images, three seeds. Sized for a
GPU (docs/GPU_RUNS.md; on 2 CPU cores a run takes hours).

    python -m rsc_jax.sweep --sweep=configs/sweeps/mnist_controlled.py --workdir=runs/sweeps/mnist_controlled
"""

from rsc_jax.sweep import RAND, WIDE_LINF, controlled_runs


def get_sweep():
    return {"title": "MNIST subset: controlled comparisons (rand preset)", "base": "mnist_subset", "modes": "all",
            "seeds": [0, 1, 2],
            "overrides": {**RAND, **WIDE_LINF, "certify.num_examples": 500, "certify.n": 100_000,
                          "certify.batch": 1000, "certify.image_batch": 8,
                          "certify.radii": (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)},
            "runs": controlled_runs(0.2, 4)}
