"""The default demo: an RSC-II spiking convnet on scikit-learn's 8x8 digits (no download).

    python -m rsc_jax.main --config=configs/digits.py --workdir=runs/digits
"""

from rsc_jax import config


def get_config():
    c = config.base()
    c.dataset.name = "digits"
    c.model.name = "convnet"
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 15
    c.train.batch_size = 64
    c.train.lr = 0.1
    c.train.checkpoint_every = 100
    c.eval.batch_size = 120
    c.attack.quick = True            # the quick preset: config.QUICK_ATTACK's caps, 256 examples
    c.attack.apgd = True             # APGD-CE and APGD-DLR (20 steps, EOT 4 under the quick preset)
    c.attack.convergence = True      # APGD-CE accuracy over steps (5, 10, 20) x EOT (1, 4), 64 images
    c.attack.batch_size = 128
    # A small certification for the demo: 40 test images, n = 2,000 draws. With RSC-II
    # at T = 4 the largest radius n = 2,000 can certify is about 0.27 (alpha 0.001).
    c.certify.num_examples = 40
    c.certify.n = 2000
    c.certify.batch = 500
    c.certify.image_batch = 8
    c.certify.radii = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
    return c
