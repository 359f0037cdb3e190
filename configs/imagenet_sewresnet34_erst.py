"""E-RSCT on ImageNet: RSC-II SEW-ResNet-34 (configs/imagenet_sewresnet34.py) distilled
from its ANN twin (a ReLU ResNet-34 with the same layer names).

Training the teacher here costs a full ImageNet run; pass a trained ANN twin export with
``--config.distill.teacher=PATH`` when you have one. alpha = 1, tau_kd = 4, beta = 1 and
the initialisation from the teacher are ours (not stated in the paper). The teacher's
forward runs inside the same remat-ed, sharded step (inference mode, no gradient).
Needs tfds imagenet2012 prepared with manual downloads (see README).
"""

from rsc_jax import config


def get_config():
    c = config.from_file("imagenet_sewresnet34")
    c.distill.enabled = True          # alpha 1, tau_kd 4, beta 1, init from teacher: distill.default_config()
    c.distill.teacher_epochs = -1
    return c
