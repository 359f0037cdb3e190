"""The project's configuration: plain ConfigDict builders, one per section.

Every experiment file in ``configs/`` starts from ``base()`` and changes a few fields.
This module imports only ``ml_collections`` (and the standard library), like
big_vision's configs: validation lives in ``config_checks`` (``config_checks.validate``
checks the whole config, each field against what is allowed, before anything is
compiled), defaults that are ours are marked so in each builder's docstring.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import ml_collections

DATASETS: tuple[str, ...] = ("digits", "npz", "mnist", "cifar10", "cifar100", "imagenet2012")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
MODES: tuple[str, ...] = ("train", "evaluate", "export", "attack", "certify", "report", "all")



def _config_dir() -> str:
    """Where the bundled experiment files live: ``rsc_jax/configs`` in an installed package
    (pyproject.toml maps the repo's top-level ``configs/`` there), the repo's ``configs/``
    in a checkout or an editable install."""
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "configs")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "configs")


CONFIG_DIR = _config_dir()


def config_names(subdir: str = "") -> list[str]:
    """Names of the bundled configs (``CONFIG_DIR/NAME.py`` that define ``get_config``; not
    e.g. the claims file), or of ``subdir``'s files (``"sweeps"``)."""
    d = os.path.join(CONFIG_DIR, subdir)
    if not os.path.isdir(d):
        return []

    def is_config(f: str) -> bool:
        with open(os.path.join(d, f)) as fh:
            return "def get_config(" in fh.read()

    return sorted(f[:-3] for f in os.listdir(d) if f.endswith(".py") and not f.startswith("_")
                  and (subdir or is_config(f)))


def resolve_file(value: str) -> str:
    """The experiment file ``--config=VALUE`` means, as an absolute path.

    An existing file is taken as given. Otherwise VALUE names a bundled file, so that
    the CLI works from any folder and after ``pip install``: ``digits``, ``digits.py``,
    ``configs/digits.py`` (the repo-relative path) and ``sweeps/digits_codings`` all
    mean ``CONFIG_DIR/...``. Anything else raises ``FileNotFoundError`` with one line
    naming VALUE and the bundled configs.
    """
    if os.path.isfile(value):
        return os.path.abspath(value)
    name = value.replace(os.sep, "/")
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("configs/"):
        name = name[len("configs/"):]
    if name.endswith(".py"):
        name = name[:-3]
    parts = name.split("/")
    if name and not os.path.isabs(value) and all(p and p not in (".", "..") and not p.startswith("_") for p in parts):
        path = os.path.join(CONFIG_DIR, *parts) + ".py"
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"config {value!r} is neither a file nor a bundled config; bundled configs: "
                            f"{', '.join(config_names())} (or give the path of a .py file with get_config())")


def call_file(path: str, fn: str = "get_config") -> Any:
    """Imports the Python file ``path`` and returns ``fn()`` (configs, sweep files)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r}: no such file")
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, fn)()


def from_file(name: str) -> ml_collections.ConfigDict:
    """``configs/NAME.py``'s ``get_config()``: lets one experiment start from another."""
    return call_file(os.path.join(CONFIG_DIR, f"{name}.py"))


def _dict(**fields: Any) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(fields)


def dataset() -> ml_collections.ConfigDict:
    """``config.dataset``: which data, how much of it, its normalisation."""
    return _dict(
        name="digits",
        path="",          # .npz file for name="npz" (keys of the real-data subsets)
        data_dir="",      # tfds data_dir ("" = tfds default)
        augment=False,    # random crop (pad 4) + horizontal flip, CIFAR style
        image_size=0,     # ImageNet: side after resize/crop (0 = 224)
        num_train=-1,     # first N training examples (-1 = all)
        num_test=-1,      # first N test examples (-1 = all)
        mean=(),          # per-channel normalisation; () = the data set's own
        std=())


def model() -> ml_collections.ConfigDict:
    """``config.model``: architecture (``models.names()``), spiking or ANN twin, options."""
    return _dict(name="convnet", spiking=True, remat=False, width=1.0, dtype="float32")


def neuron() -> ml_collections.ConfigDict:
    """``config.neuron``: LIF options (SPEC §2); alpha 0 = the surrogate's default."""
    return _dict(tau=2.0, v_th=1.0, reset="hard", surrogate="sigmoid", alpha=0.0, detach_reset=False,
                 grad_mode="bptt")


def coding() -> ml_collections.ConfigDict:
    """``config.coding``: the input coding (``coding.METHODS``); sigma 0.2, T 4 are ours."""
    return _dict(method="rsc2", sigma=0.2, T=4)


def train() -> ml_collections.ConfigDict:
    """``config.train``: SGD with momentum and cosine decay (SPEC §3); the rest ours."""
    return _dict(
        epochs=10, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
        schedule="cosine", warmup_steps=0, log_every=10,
        checkpoint_every=100,   # steps; also at every epoch end and at the end
        keep_checkpoints=2,
        num_devices=0,          # 0 = all devices (every device of every host when multi-host)
        model_axis=1,           # devices on the mesh's "model" axis (big kernels split); 1 = pure DP
        skip_nonfinite=False,   # True: skip steps with a NaN/Inf loss or gradient (counted)
        tensorboard=False)      # True: metrics also to WORKDIR/tensorboard/ (needs tensorboardX, optional)


def evaluation() -> ml_collections.ConfigDict:
    """``config.eval``: clean accuracy, single draw and logits averaged over ``draws``."""
    return _dict(batch_size=256, draws=10)


# The budget fields the doubled-budget convergence check can double (``doubled_fields``).
DOUBLEABLE: tuple[str, ...] = ("apgd_steps", "apgd_eot", "apgd_restarts", "strong_steps", "strong_eot",
                               "square_queries")


def attack() -> ml_collections.ConfigDict:
    """``config.attack``: the robustness evaluation (``evaluators/robustness.py``).

    Paper/SPEC values: l_inf eps grid {0, 1, 2, 4, 8}/255, step 2/255, PGD-7 and PGD-50,
    EOT K = 1 and 10. Everything else is our default: M = 10 judge draws, the l_2 grid
    (0, 0.25, 0.5, 1.0) with step 2.5 eps / steps (Madry et al.'s rule), the step
    ``strong_step_scale * eps / steps`` (2.5) of PGD at the strong eps (the paper's PGD-k
    with its fixed ``step_size`` stays as its own row), the ensemble's surrogates (the
    four fixed ones, each also with alpha x 4, and the input-adaptive ``assg`` and
    ``pdsg`` of ``neurons.py``), Square with 1000 queries and p_init 0.05 (the paper's p_init), sanity eps 64/255 with
    20 steps and, on stochastic models, EOT-10 per step, and the check tolerances; the
    huge-budget check judges the M-averaged accuracy. The surrogate ensemble and the
    transfer attacks run APGD-CE with the APGD budget (``apgd_steps`` x ``apgd_eot``,
    ``apgd_restarts``; AutoAttack's randomized-defence budget, Croce & Hein, 2020: 100
    steps, EOT-20); ``apgd`` (off by default) adds APGD with each of ``apgd_losses`` at
    every strong eps and, with ``l2_apgd``, APGD-CE on the l_2 grid. ``transfer_expectation`` (off by
    default) adds APGD crafted on the noise-free copy of the model (same weights, direct
    coding) at every strong eps. ``sapgd`` (off by default) adds SA-PGD (``sapgd.py``, Wang
    et al., arXiv 2512.22522) with the APGD budget at every strong eps: through the
    model's own gradient and, for spiking models, through the published ASSG (running
    statistics carried across the attack's passes) and PDSG surrogates
    (``neurons.LAYER_SURROGATES``).

    The worst case (ours; ``evaluators/robustness.py``): per strong eps, per example, the
    point of the first attack in cascade order that the judge stream's M-averaged logits
    misclassify (clean first), else the point of lowest margin, re-judged on a fresh
    stream of M draws; ``cascade`` runs each attack only on the examples no earlier one
    broke (the same worst case, bit for bit, at a fraction of the cost), every attack's
    own row on the first ``standalone_examples`` images. ``doubled_budget`` re-runs the
    worst case with each field of ``doubled_fields`` doubled (default: every field of
    ``DOUBLEABLE``, the steps, EOT draws, restarts and queries; APGD then costs 8 times
    as much) on the first ``doubled_examples`` images and flags it when the exact McNemar
    test says the doubled budget breaks more (``convergence_alpha``). ``convergence`` (on) measures APGD-CE's
    robust accuracy against gradient evaluations (steps x EOT draws) on the first
    ``convergence_examples`` test images.
    ``poisson_adaptive`` (on; only Poisson-coded models) adds, at every strong eps and each
    temperature of ``gumbel_temperatures`` (ours: 0.5), PGD with the strong budget through
    the straight-through Gumbel-sigmoid gradient (``coding "poisson_gumbel"``, the exact
    spikes forward), PGD crafted on the relaxed copy (``"poisson_relaxed"``) and, with
    ``apgd``, APGD-CE with EOT through each, and APGD-CE with the unbiased gradient of
    ``bernoulli.py`` (``poisson_exact_eot`` draws per step, ours: 2) where the coded input
    has at most ``poisson_exact_max`` entries T x H x W x C (ours: 1024: 8x8 digits at
    T = 4, not MNIST; each draw costs that many forward passes).
    ``quick`` applies ``QUICK_ATTACK``.
    """
    return _dict(
        eps_grid=tuple(e / 255 for e in (0.0, 1.0, 2.0, 4.0, 8.0)), strong_eps=(8 / 255,),
        steps=7, step_size=2 / 255, eot=1, random_start=True, common_random_numbers=False, fgsm=True,
        strong_steps=50, strong_eot=10, strong_step_scale=2.5, judge_draws=10, batch_size=64, seed=0,
        num_examples=-1, l2=True, l2_eps_grid=(0.0, 0.25, 0.5, 1.0), l2_step_scale=2.5, l2_apgd=True,
        ensemble=True, surrogates=("sigmoid", "atan", "triangle", "rectangle", "assg", "pdsg"), sharp_alpha_factor=4.0,
        bptr=True, select_draws=10,
        transfer=True,
        transfer_from="",       # export to craft transfer examples on ("" = WORKDIR/ann_twin/export)
        transfer_expectation=False,   # also transfer from the noise-free copy (direct coding, same weights)
        square=True, square_queries=1000, square_p_init=0.05, square_draws=1,
        sanity=True, sanity_eps=64 / 255, sanity_steps=20, sanity_eot=10,
        apgd=False, apgd_losses=("ce", "dlr"), apgd_steps=100, apgd_eot=20, apgd_restarts=1,
        sapgd=False,
        cascade=True, standalone_examples=500,
        doubled_budget=True, doubled_examples=500, doubled_fields=DOUBLEABLE, convergence_alpha=0.05,
        convergence=True, convergence_steps=(10, 50, 100, 200), convergence_eot=(1, 5, 20, 50),
        convergence_examples=64,
        poisson_adaptive=True, gumbel_temperatures=(0.5,), poisson_exact_max=1024, poisson_exact_eot=2,
        gradient_check=True, quick=False,
        tol_monotone=0.02, sanity_max_acc=0.05, tol_strong_gap=0.05, tol_blackbox=0.02, grad_min_frac=0.9)


# ``attack.quick`` (ours, for the digits demo, about 3 minutes on 2 CPU cores): at most
# these values (False turns a check off); num_examples replaces -1 (all); the tuples of
# QUICK_GRIDS replace the configured ones: the ensemble through the model, atan, the
# adaptive assg and BPTR (no sharp copies), no doubled-budget re-run (the grid stays), no
# APGD on the l_2 grid.
QUICK_ATTACK: dict[str, int | float | bool] = dict(
    strong_steps=20, strong_eot=4, judge_draws=4, select_draws=4, square_queries=100, sanity_steps=10,
    sanity_eot=4, num_examples=256, apgd_steps=10, apgd_eot=4, doubled_budget=False, doubled_examples=64,
    sharp_alpha_factor=0.0, l2_apgd=False)
QUICK_GRIDS: dict[str, tuple] = dict(convergence_steps=(5, 10, 20), convergence_eot=(1, 4),
                                     surrogates=("sigmoid", "atan", "assg"))

# ``attack`` preset "rand": the evaluation of randomized defences at the level of
# AutoAttack's "rand" version (Croce & Hein, ICML 2020: APGD-CE + APGD-DLR, 100 steps,
# EOT-20, Square with its p_init 0.8), plus what the paper configs add to it (ours): APGD
# on the margin of the averaged logits, Square with 5,000 queries and 4 coding draws per
# query, APGD-CE transferred from the ANN twin and from the noise-free copy, the
# surrogate ensemble with APGD-CE, the adaptive attacks on Poisson coding at three
# temperatures, the doubled-budget convergence check on 500 images, the convergence grid
# (10, 50, 100, 200) x (1, 5, 20, 50) and every test image. The headline robust accuracy
# is the per-example worst case over all of them. ``use_rand_preset`` applies it; the
# report names the preset that ran (``evaluators.robustness.preset``).
RAND_ATTACK: dict[str, object] = dict(
    apgd=True, apgd_losses=("ce", "dlr", "margin"), apgd_steps=100, apgd_eot=20, apgd_restarts=1,
    square=True, square_queries=5000, square_draws=4, square_p_init=0.8, transfer=True, transfer_expectation=True,
    ensemble=True, poisson_adaptive=True, gumbel_temperatures=(0.5, 0.25, 1.0), doubled_budget=True,
    doubled_examples=500, convergence=True, convergence_steps=(10, 50, 100, 200),
    convergence_eot=(1, 5, 20, 50), num_examples=-1, quick=False)


def use_rand_preset(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets ``RAND_ATTACK`` on ``c.attack`` (a full config) and returns ``c``."""
    c.attack.update(RAND_ATTACK)
    return c


def certify() -> ml_collections.ConfigDict:
    """``config.certify``: n0, n, alpha are SPEC §4's (after Cohen et al.); batch (draws
    per chunk per image), image_batch (images per step, divisible by the device count),
    num_examples (first N test images; -1 = all), seed and the radius grid are ours."""
    return _dict(n0=100, n=10_000, alpha=0.001, batch=100, image_batch=4, num_examples=32, seed=0,
                 radii=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0))


def distill() -> ml_collections.ConfigDict:
    """``config.distill``: E-RSCT (off unless ``enabled``; the ``*_erst`` configs turn it on).

    teacher: path of a teacher export; "" = train the ANN twin into WORKDIR/teacher
    (resumed if present). teacher_epochs: -1 = ``train.epochs``. ce: keep the CE term.
    alpha, tau_kd: weight and temperature of the KD term (ours: 1 and 4). beta: weight
    of the pre-synaptic alignment (ours: 1). init_from_teacher: start the student from
    the teacher's weights (ours: on).
    """
    return _dict(enabled=False, teacher="", teacher_epochs=-1, ce=True, alpha=1.0, tau_kd=4.0, beta=1.0,
                 init_from_teacher=True)


def base() -> ml_collections.ConfigDict:
    """Defaults shared by all experiments (SPEC §1-4; ours where the paper is silent)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # float32 matmul/conv precision on GPUs/TPUs: "default" (TF32 on A100/H100), "high",
    # "highest" (true float32); no effect on the CPU. Policy: backend.MATMUL_PRECISIONS.
    c.matmul_precision = "default"
    c.dataset = dataset()
    c.model = model()
    c.neuron = neuron()
    c.coding = coding()
    c.train = train()
    c.eval = evaluation()
    c.attack = attack()
    c.certify = certify()
    c.distill = distill()
    return c
