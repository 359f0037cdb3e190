"""Codings x sigma on the real MNIST subset (8,000 / 2,000 images) at T = 4, plus the
ANN twin, and Poisson and RSC-II at sigma 0.2 at T = 8 (the rest of the T = 8 grid left
out to fit a 2-core CPU); the headline runs (direct, Poisson, RSC-I/II at sigma 0.2, ANN) with seeds 0, 1,
2, the rest with seed 0; attacks on the first 256 test images with l_inf eps up to 32/255 and
strong attacks at 32/255 (sweep.WIDE_LINF), the surrogate ensemble only for direct,
Poisson, RSC-I/II at sigma 0.2 and the ANN; clean accuracy on all 2,000.

    python -m rsc_jax.sweep --sweep=configs/sweeps/mnist_codings.py --workdir=runs/sweeps/mnist
"""

from rsc_jax.sweep import CPU_ATTACK, CPU_CERTIFY, NO_ENSEMBLE, WIDE_LINF, coding_grid

HEADLINE = ("direct_T4", "poisson_T4", "rsc1_sigma0.2_T4", "rsc2_sigma0.2_T4", "ann")
T8 = ("poisson_T8", "rsc2_sigma0.2_T8")


def get_sweep():
    return {"title": "MNIST subset: codings x sigma", "base": "mnist_subset", "modes": "all", "seeds": [0],
            "overrides": {**CPU_ATTACK, **WIDE_LINF, **CPU_CERTIFY, "attack.num_examples": 256},
            "runs": coding_grid(Ts=(4, 8), headline=HEADLINE, headline_seeds=(0, 1, 2), others=NO_ENSEMBLE,
                                only_at={8: T8})}
