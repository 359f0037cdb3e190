"""E-RSCT on CIFAR-10: RSC-II spiking VGG-11 (configs/cifar10_vgg11.py) distilled from its ANN twin.

Wu et al. (2024) E-RSCT: the ANN twin (ReLU, clean images) is trained first into
WORKDIR/teacher, or given with ``--config.distill.teacher=PATH``; alpha = 1, tau_kd = 4,
beta = 1 and the initialisation from the teacher are ours (not stated in the paper).
The student keeps the plain config's schedule; E-RSCT's point is that it needs fewer
epochs, so try e.g. ``--config.train.epochs=100``. Needs tfds cifar10 (see README).
"""

from rsc_jax import config


def get_config():
    c = config.from_file("cifar10_vgg11")
    c.distill.enabled = True          # alpha 1, tau_kd 4, beta 1, init from teacher: distill.default_config()
    c.distill.teacher_epochs = -1   # the teacher trains as long as the plain student would
    return c
