"""RSC-II spiking VGG-11 (width 1/4, ours: CPU-sized) on the real CIFAR-10 subset in
../shared/data (4,660 train / 846 test images)."""

import os

from rsc_jax import config

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def get_config():
    c = config.base()
    c.dataset.name = "npz"
    c.dataset.path = os.path.normpath(os.path.join(DATA, "cifar10_subset.npz"))
    c.dataset.augment = True
    c.dataset.mean = (0.4914, 0.4822, 0.4465)
    c.dataset.std = (0.2470, 0.2435, 0.2616)
    c.model.name = "vgg11"
    c.model.width = 0.25
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 30
    c.train.batch_size = 64
    c.train.checkpoint_every = 200
    c.eval.batch_size = 282
    return c
