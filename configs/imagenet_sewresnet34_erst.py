"""E-RSCT on ImageNet: RSC-II SEW-ResNet-34 (configs/imagenet_sewresnet34.py) distilled
from its ANN twin (a ReLU ResNet-34 with the same layer names).

Training the teacher here costs a full ImageNet run; pass a trained ANN twin export with
``--config.distill.teacher=PATH`` when you have one. alpha = 1, tau_kd = 4, beta = 1 and
the initialisation from the teacher are ours (not stated in the paper). The teacher's
forward runs inside the same remat-ed, sharded step (inference mode, no gradient).
Needs tfds imagenet2012 prepared with manual downloads (see README).

One command (teacher, student, evaluate, attacks at the ``rand`` preset on the first
1,000 validation images, certify, report):

    python -m rsc_jax.main --config=configs/imagenet_sewresnet34_erst.py --workdir=runs/imagenet_sewresnet34_erst

Expected run time (FLOP-based estimate, not measured; docs/GPU_RUNS.md): 1.6e19 FLOP
(the teacher's forward adds 8 % to a student step; the teacher's own 100-epoch training
is 21 % of the total), i.e. ~72 h on one A100-80GB (TF32), ~23 h on one H100, ~2.8 h on
8 H100s (TF32) at an assumed 40 % utilisation; the host input pipeline may be the
bound on one host (docs/GPU_RUNS.md). Multi-GPU, multi-node and bf16 as in
imagenet_sewresnet34.
"""

from rsc_jax import config


def get_config():
    c = config.from_file("imagenet_sewresnet34")
    c.distill.enabled = True          # alpha 1, tau_kd 4, beta 1, init from teacher: config.distill()
    c.distill.teacher_epochs = -1
    return c
