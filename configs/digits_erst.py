"""E-RSCT on digits: the RSC-II spiking convnet of configs/digits.py distilled from its ANN twin.

    python -m rsc_jax.main --config=configs/digits_erst.py --workdir=runs/digits_erst

With no ``--config.distill.teacher=PATH``, ``--mode=all`` first trains the ANN twin on
clean digits into WORKDIR/teacher (resumed if present), exports it to
WORKDIR/teacher/export, then trains the student with the E-RSCT loss (rsc_jax/distill.py);
the teacher is also the transfer-attack source. alpha = 1, tau_kd = 4, beta = 1 and the
initialisation from the teacher are our defaults (the paper does not state them).
"""

from rsc_jax import config


def get_config():
    c = config.from_file("digits")
    c.distill.enabled = True          # alpha 1, tau_kd 4, beta 1, init from teacher: config.distill()
    c.distill.teacher_epochs = 15
    return c
