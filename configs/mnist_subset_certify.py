"""Certification at size on the MNIST subset: CERTIFY (Cohen et al.) with n = 100,000 draws,
n0 = 100, alpha = 0.001 on the first 500 test images of the RSC-II (sigma 0.2, T 4)
convnet of ``configs/mnist_subset.py``. Mode ``certify`` needs a trained export, so train
with the base config first, then certify on the same workdir:

    python -m rsc_jax.main --config=configs/mnist_subset.py --workdir=runs/mnist_subset_certify --mode=train
    python -m rsc_jax.main --config=configs/mnist_subset_certify.py --workdir=runs/mnist_subset_certify \\
        --mode=certify,report

With n = 100,000 and alpha = 0.001 the largest radius any image can get is
0.2 * Phi^-1(0.001^(1/n)) / sqrt(4) = 0.381 (l_2), i.e. 0.381 / sqrt(784) = 0.0136 =
3.47/255 as an l_inf equivalent. Cost: 5 * 10^7 forward passes of a 28x28 convnet;
meant for an accelerator (``--config.certify.image_batch`` a multiple of the device count).
"""

from rsc_jax import config


def get_config():
    c = config.from_file("mnist_subset")
    c.certify.n0 = 100
    c.certify.n = 100_000
    c.certify.alpha = 0.001
    c.certify.num_examples = 500
    c.certify.batch = 1000               # draws per chunk per image (ours)
    c.certify.image_batch = 8            # images per step (divisible by the device count)
    c.certify.radii = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)   # 0.4 lies beyond 0.381
    c.eval.batch_size = 256              # the base's 250 does not divide over 4 or 8 devices
    return c
