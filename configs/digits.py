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
    return c
