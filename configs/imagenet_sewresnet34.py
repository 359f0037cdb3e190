"""The paper's ImageNet setting: RSC-II SEW-ResNet-34 (Fang et al., 2021), T = 4.

Batch 256 with SGD 0.1 over 100 epochs is ours (SPEC §3 optimiser, the SEW-ResNet
paper's schedule length). remat on: BPTT over T = 4 at 224x224 needs it on 80 GB GPUs.
Needs tfds imagenet2012 prepared with manual downloads (see README).
"""

from rsc_jax import config


def get_config():
    c = config.base()
    c.dataset.name = "imagenet2012"
    c.dataset.image_size = 224
    c.model.name = "sew_resnet34"
    c.model.remat = True
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4
    c.train.epochs = 100
    c.train.batch_size = 256
    c.train.lr = 0.1
    c.train.weight_decay = 1e-4
    c.train.checkpoint_every = 2000
    c.train.log_every = 100
    c.eval.batch_size = 256
    return c
