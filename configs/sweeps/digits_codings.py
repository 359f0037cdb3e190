"""Codings x sigma on digits (SPEC claims 1-3): direct, Poisson, RSC-I and RSC-II at
sigma in {0.05, 0.1, 0.2, 0.3, 0.5}, T in {4, 8}, plus the ANN twin; 3 seeds.

    python -m rsc_jax.sweep --sweep=configs/sweeps/digits_codings.py --workdir=runs/sweeps/digits
"""

from rsc_jax.sweep import grid

SIGMAS = [0.05, 0.1, 0.2, 0.3, 0.5]


def get_sweep():
    runs = (grid("direct", **{"coding.method": ["direct"], "coding.T": [4, 8]})
            + grid("poisson", **{"coding.method": ["poisson"], "coding.T": [4, 8]})
            + grid("rsc1", **{"coding.method": ["rsc1"], "coding.sigma": SIGMAS, "coding.T": [4, 8]})
            + grid("rsc2", **{"coding.method": ["rsc2"], "coding.sigma": SIGMAS, "coding.T": [4, 8]})
            + [{"name": "ann", "overrides": {"model.spiking": False, "coding.method": "direct", "coding.T": 1}}])
    return {"title": "digits: codings x sigma", "base": "digits", "modes": "all", "seeds": [0, 1, 2], "runs": runs}
