"""Codings x sigma on digits (SPEC claims 1-3): direct, Poisson, RSC-I and RSC-II at
sigma in {0.05, 0.1, 0.2, 0.3, 0.5} at T = 4, plus the ANN twin, and direct, Poisson,
RSC-I/II at sigma 0.2 at T = 8 (the rest of the T = 8 grid left out to fit a 2-core CPU);
the headline runs (T = 4: direct, Poisson, RSC-I and RSC-II at sigma 0.2, ANN) with
seeds 0, 1, 2, the rest with seed 0 and no surrogate ensemble; l_inf eps up to 32/255,
strong attacks at 32/255 (sweep.WIDE_LINF).

    python -m rsc_jax.sweep --sweep=configs/sweeps/digits_codings.py --workdir=runs/sweeps/digits
"""

from rsc_jax.sweep import CPU_ATTACK, CPU_CERTIFY, NO_ENSEMBLE, WIDE_LINF, coding_grid

HEADLINE = ("direct_T4", "poisson_T4", "rsc1_sigma0.2_T4", "rsc2_sigma0.2_T4", "ann")
T8 = ("direct_T8", "poisson_T8", "rsc1_sigma0.2_T8", "rsc2_sigma0.2_T8")


def get_sweep():
    return {"title": "digits: codings x sigma", "base": "digits", "modes": "all", "seeds": [0],
            "overrides": {**CPU_ATTACK, **WIDE_LINF, **CPU_CERTIFY},
            "runs": coding_grid(Ts=(4, 8), headline=HEADLINE, others=NO_ENSEMBLE, only_at={8: T8})}
