"""Controlled comparisons on digits, sized for 2 CPU cores: the runs of
``sweep.controlled_runs`` (direct, Poisson, RSC-I and RSC-II at sigma 0.2, RSC-I at
sigma / sqrt(T) = 0.1, the ANN twin; the ANN with Gaussian noise of sigma 0.1 and 0.2,
smoothed; the ANN on one Poisson frame, and on the mean of 4 Poisson frames, the
noise-matched control of the Poisson SNN), T = 4, three seeds, attacked on all 360 test
images with the strong attacks at 32/255 and certified with n = 10,000 on all of them.
Attacks: ``config.RAND_ATTACK`` (APGD-CE and APGD-DLR, 100 steps x EOT-20, transfer
from the ANN twin and the noise-free copy, the ensemble, the adaptive Poisson attacks)
with cuts for the CPU, so the reports name the preset ``custom``: Square with one
draw per query (5,000 queries), the convergence grid's EOT up to 20 (not 50), every
attack's own row on the first 120 images (the worst case's cascade on all 360), and the
doubled-budget check on those 120, doubling APGD's and PGD's steps and Square's queries
but not the EOT draws and restarts (twice the gradient evaluations, not eight times).
Measured cost and sizing: docs/EVALUATION.md.
Per-image results are paired across runs and seeds by the claims ledger
(``configs/claims.py``, scripts/controlled.py).

    python -m rsc_jax.sweep --sweep=configs/sweeps/digits_controlled.py --workdir=runs/sweeps/digits_controlled
"""

from rsc_jax.sweep import RAND, WIDE_LINF, controlled_runs

CPU_CUTS = {"attack.square_draws": 1, "attack.convergence_eot": (1, 5, 20), "attack.standalone_examples": 120,
            "attack.doubled_examples": 120, "attack.doubled_fields": ("apgd_steps", "strong_steps", "square_queries")}


def get_sweep():
    return {"title": "digits: controlled comparisons (rand preset, CPU cuts)", "base": "digits", "modes": "all",
            "seeds": [0, 1, 2],
            "overrides": {**RAND, **CPU_CUTS, **WIDE_LINF, "certify.num_examples": -1, "certify.n": 10_000,
                          "certify.batch": 1000, "certify.image_batch": 8,
                          "certify.radii": (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)},
            "runs": controlled_runs(0.2, 4)}
