"""Codings x sigma on the real CIFAR-10 subset (4,660 / 846 images) with VGG-11 at width
1/4 (ours: CPU-sized) and T = 4, 10 epochs, plus the ANN twin (RSC-I at sigma 0.1 and
0.3 only), and Poisson and RSC-II at sigma 0.2 at T = 8 (the rest of the T = 8 grid left
out to fit a 2-core CPU); the headline runs (direct, Poisson, RSC-II at sigma 0.2, ANN) with seeds 0, 1,
2, the rest with seed 0; attacks on the first 128 test images at the paper's eps grid, the
surrogate ensemble only for direct, Poisson, RSC-II at sigma 0.2 and the ANN; clean
accuracy on all 846. SPEC claim 4 (RSC-SNN vs ANN under PGD).

    python -m rsc_jax.sweep --sweep=configs/sweeps/cifar10_codings.py --workdir=runs/sweeps/cifar10
    python -m rsc_jax.sweep ... --only=_seed1     # one seed of the headline runs
"""

from rsc_jax.sweep import CPU_ATTACK, CPU_CERTIFY, NO_ENSEMBLE, coding_grid

HEADLINE = ("direct_T4", "poisson_T4", "rsc2_sigma0.2_T4", "ann")

# RSC-I at 0.05, 0.2 and 0.5 left out to fit the 2-core CPU (RSC-II keeps the whole grid).
CPU_SKIP = ("rsc1_sigma0.05_T4", "rsc1_sigma0.2_T4", "rsc1_sigma0.5_T4")
T8 = ("poisson_T8", "rsc2_sigma0.2_T8")


def get_sweep():
    return {"title": "CIFAR-10 subset, VGG-11/4: codings x sigma", "base": "cifar10_subset", "modes": "all",
            "seeds": [0],
            "overrides": {**CPU_ATTACK, **CPU_CERTIFY, "attack.num_examples": 128,
                          "train.epochs": 10, "certify.n": 1000},
            "runs": coding_grid(Ts=(4, 8), headline=HEADLINE, headline_seeds=(0, 1, 2), others=NO_ENSEMBLE,
                                skip=CPU_SKIP, only_at={8: T8})}
