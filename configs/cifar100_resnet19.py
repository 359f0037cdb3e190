"""The paper's CIFAR-100 setting: RSC-II spiking ResNet-19 (Zheng et al., 2021 backbone).

sigma = 0.2 and T = 4 are our defaults; training follows SPEC §3. Needs tfds cifar100.
"""

from rsc_jax import config


def get_config():
    c = config.base()
    c.dataset.name = "cifar100"
    c.dataset.augment = True
    c.model.name = "resnet19"
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 200
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 500
    return c
