"""RSC-II spiking convnet on MNIST through tfds (prepare it first; see README)."""

from rsc_jax import config


def get_config():
    c = config.base()
    c.dataset.name = "mnist"
    c.model.name = "convnet"
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 10
    c.train.batch_size = 128
    c.train.checkpoint_every = 500
    c.eval.batch_size = 500
    return c
