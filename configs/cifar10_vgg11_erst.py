"""E-RSCT on CIFAR-10: RSC-II spiking VGG-11 (configs/cifar10_vgg11.py) distilled from its ANN twin.

Wu et al. (2024) E-RSCT: the ANN twin (ReLU, clean images) is trained first into
WORKDIR/teacher, or given with ``--config.distill.teacher=PATH``; alpha = 1, tau_kd = 4,
beta = 1 and the initialisation from the teacher are ours (not stated in the paper).
The student keeps the plain config's schedule; E-RSCT's point is that it needs fewer
epochs, so try e.g. ``--config.train.epochs=100``. Needs tfds cifar10 (see README).
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_cifar10_vgg11", os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_vgg11.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
    c = _base.get_config()
    c.distill.enabled = True
    c.distill.alpha = 1.0
    c.distill.tau_kd = 4.0
    c.distill.beta = 1.0
    c.distill.init_from_teacher = True
    c.distill.teacher_epochs = -1   # the teacher trains as long as the plain student would
    return c
