"""RSC-II(sigma) against RSC-I(sigma / sqrt(T)) on digits at T = 4, certified at size.

RSC-II draws fresh noise eps_t ~ N(0, sigma^2 I) at each of the T steps, so the time mean
of its input has variance sigma^2 / T, that of RSC-I at sigma / sqrt(T); and their radii
coincide for the same p_A: sigma Phi^-1(p_A) / sqrt(T) = (sigma / sqrt(T)) Phi^-1(p_A)
(``certify.radius``), so both have the same largest certifiable radius at a given n and
alpha. Each pair is trained and certified the same way (``configs/digits_certify.py``:
n = 100,000, n0 = 100, alpha = 0.001, all 360 test images), so the table compares the
codings' certified accuracy at equal time-averaged noise: sigma in {0.2, 0.4} for RSC-II
against RSC-I at {0.1, 0.2}.

    python -m rsc_jax.sweep --sweep=configs/sweeps/certify_pairs.py --workdir=runs/sweeps/certify_pairs

Each run trains (15 epochs, ~20 s), evaluates, certifies and writes its report.md, whose
certification table states the largest radius n and alpha allow and the l_inf
equivalents. Certification is the cost: 10^5 draws x 360 images, measured at 12
CPU-seconds per image on the 2-core CPU, so about one hour per run on the idle machine
and up to three when shared (projected from 64 images). ``--only=pair_sigma0.2`` runs
one pair; ``--config`` overrides do not apply to sweeps, so for a subset add
``"certify.num_examples": 64`` to ``overrides`` below.
"""

import math

T = 4
RSC2_SIGMAS = (0.2, 0.4)


def pairs(sigmas=RSC2_SIGMAS, T=T):
    """For each sigma: an RSC-II run at sigma and an RSC-I run at sigma / sqrt(T), both at T,
    named ``pair_sigma{sigma}_rsc2_sigma{sigma}_T{T}`` and ``pair_sigma{sigma}_rsc1_sigma{sigma/sqrt(T)}_T{T}``
    so that a pair sorts together."""
    runs = []
    for s in sigmas:
        s1 = round(s / math.sqrt(T), 10)
        runs += [{"name": f"pair_sigma{s}_rsc2_sigma{s}_T{T}",
                  "overrides": {"coding.method": "rsc2", "coding.sigma": s, "coding.T": T}},
                 {"name": f"pair_sigma{s}_rsc1_sigma{s1}_T{T}",
                  "overrides": {"coding.method": "rsc1", "coding.sigma": s1, "coding.T": T}}]
    return runs


# One grid for every run, so that pairs compare column by column: the largest certifiable
# radius at n = 100,000, alpha = 0.001 is 0.381 for the sigma 0.2 pair, 0.762 for 0.4.
RADII = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8)


def get_sweep():
    return {"title": "digits: RSC-II(sigma) vs RSC-I(sigma/sqrt(T)), certified at n = 100,000",
            "base": "digits_certify", "modes": "train,evaluate,certify,report", "seeds": [0],
            "overrides": {"certify.radii": RADII},
            "runs": pairs()}
