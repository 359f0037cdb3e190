"""The paper's CIFAR-10 setting: RSC-II spiking VGG-11 (Wu et al., 2024, Table 1).

sigma = 0.2 and T = 4 are our defaults (the paper scans sigma; see SPEC §5); training
hyper-parameters follow SPEC §3. Needs tfds cifar10 prepared (see README).
"""

from rsc_jax import config


def get_config():
    c = config.base()
    c.dataset.name = "cifar10"
    c.dataset.augment = True
    c.model.name = "vgg11"
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 200
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 500
    return c
