"""E-RSCT on CIFAR-10: RSC-II spiking VGG-11 (configs/cifar10_vgg11.py) distilled from its ANN twin.

Wu et al. (2024) E-RSCT: the ANN twin (ReLU, clean images) is trained first into
WORKDIR/teacher, or given with ``--config.distill.teacher=PATH``; alpha = 1, tau_kd = 4,
beta = 1 and the initialisation from the teacher are ours (not stated in the paper).
The student keeps the plain config's schedule; E-RSCT's point is that it needs fewer
epochs, so try e.g. ``--config.train.epochs=100``. Needs tfds cifar10 (see README).

One command (teacher, student, evaluate, attacks at the ``rand`` preset, certify, report):

    python -m rsc_jax.main --config=configs/cifar10_vgg11_erst.py --workdir=runs/cifar10_vgg11_erst

Expected run time (FLOP-based estimate, not measured; docs/GPU_RUNS.md): 4.9e17 FLOP
(the teacher's forward adds 8 % to a student step; the attacks are 92 %), ~2.2 h on one
A100-80GB (TF32), ~42 min on one H100 at an assumed 40 % utilisation. As for
cifar10_vgg11, the host input pipeline likely bounds training. Multi-GPU and bf16 as in cifar10_vgg11.
"""

from rsc_jax import config


def get_config():
    c = config.from_file("cifar10_vgg11")
    c.distill.enabled = True          # alpha 1, tau_kd 4, beta 1, init from teacher: config.distill()
    c.distill.teacher_epochs = -1   # the teacher trains as long as the plain student would
    return c
