"""E-RSCT on ImageNet: RSC-II SEW-ResNet-34 (configs/imagenet_sewresnet34.py) distilled
from its ANN twin (a ReLU ResNet-34 with the same layer names).

Training the teacher here costs a full ImageNet run; pass a trained ANN twin export with
``--config.distill.teacher=PATH`` when you have one. alpha = 1, tau_kd = 4, beta = 1 and
the initialisation from the teacher are ours (not stated in the paper). The teacher's
forward runs inside the same remat-ed, sharded step (inference mode, no gradient).
Needs tfds imagenet2012 prepared with manual downloads (see README).
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_imagenet_sewresnet34", os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_sewresnet34.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
    c = _base.get_config()
    c.distill.enabled = True
    c.distill.alpha = 1.0
    c.distill.tau_kd = 4.0
    c.distill.beta = 1.0
    c.distill.init_from_teacher = True
    c.distill.teacher_epochs = -1
    return c
