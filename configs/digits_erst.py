"""E-RSCT on digits: the RSC-II spiking convnet of configs/digits.py distilled from its ANN twin.

    python -m rsc_jax.main --config=configs/digits_erst.py --workdir=runs/digits_erst

With no ``--config.distill.teacher=PATH``, ``--mode=all`` first trains the ANN twin on
clean digits into WORKDIR/teacher (resumed if present), exports it to
WORKDIR/teacher/export, then trains the student with the E-RSCT loss (rsc_jax/distill.py);
the teacher is also the transfer-attack source. alpha = 1, tau_kd = 4, beta = 1 and the
initialisation from the teacher are our defaults (the paper does not state them).
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("_digits", os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
    c = _base.get_config()
    c.distill.enabled = True
    c.distill.alpha = 1.0
    c.distill.tau_kd = 4.0
    c.distill.beta = 1.0
    c.distill.init_from_teacher = True
    c.distill.teacher_epochs = 15
    return c
