"""RSC-II spiking convnet on the real MNIST subset in ../shared/data (8,000 / 2,000)."""

import os

from rsc_jax import config

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def get_config():
    c = config.base()
    c.dataset.name = "npz"
    c.dataset.path = os.path.normpath(os.path.join(DATA, "mnist_subset.npz"))
    c.dataset.mean = (0.1307,)
    c.dataset.std = (0.3081,)
    c.model.name = "convnet"
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 5
    c.train.batch_size = 64
    c.train.checkpoint_every = 200
    c.eval.batch_size = 250
    return c
