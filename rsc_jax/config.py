"""The project's configuration: one base ConfigDict, and its validation.

Every experiment file in ``configs/`` starts from ``base()`` and changes a few fields;
``validate(cfg)`` checks the whole config before anything is compiled, raising
``ConfigError`` that names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from rsc_jax import coding, neurons

DATASETS: tuple[str, ...] = ("digits", "npz", "mnist", "cifar10", "cifar100", "imagenet2012")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
MODES: tuple[str, ...] = ("train", "evaluate", "export", "attack", "certify", "report", "all")


class ConfigError(ValueError):
    """A configuration field has a value that is not allowed."""


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def call_file(path: str, fn: str = "get_config") -> Any:
    """Imports the Python file ``path`` and returns ``fn()`` (configs, sweep files)."""
    import importlib.util
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r}: no such file")
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, fn)()


def from_file(name: str) -> ml_collections.ConfigDict:
    """``configs/NAME.py``'s ``get_config()``: lets one experiment start from another."""
    return call_file(os.path.join(CONFIG_DIR, f"{name}.py"))


def base() -> ml_collections.ConfigDict:
    """Defaults shared by all experiments (SPEC §1-3; ours where the paper is silent)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "digits"
    c.dataset.path = ""          # .npz file for name="npz" (keys of ../shared/data)
    c.dataset.data_dir = ""      # tfds data_dir ("" = tfds default)
    c.dataset.augment = False    # random crop (pad 4) + horizontal flip, CIFAR style
    c.dataset.image_size = 0     # ImageNet: side after resize/crop (0 = 224)
    c.dataset.num_train = -1     # first N training examples (-1 = all)
    c.dataset.num_test = -1      # first N test examples (-1 = all)
    c.dataset.mean = ()          # per-channel normalisation; () = the data set's own
    c.dataset.std = ()

    c.model = ml_collections.ConfigDict()
    c.model.name = "convnet"
    c.model.spiking = True
    c.model.remat = False
    c.model.width = 1.0
    c.model.dtype = "float32"

    c.neuron = ml_collections.ConfigDict()
    c.neuron.tau = 2.0
    c.neuron.v_th = 1.0
    c.neuron.reset = "hard"
    c.neuron.surrogate = "sigmoid"
    c.neuron.alpha = 0.0         # 0 = the surrogate's default (sigmoid 4, atan 2, ...)
    c.neuron.detach_reset = False
    c.neuron.grad_mode = "bptt"

    c.coding = ml_collections.ConfigDict()
    c.coding.method = "rsc2"
    c.coding.sigma = 0.2
    c.coding.T = 4

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 10
    c.train.batch_size = 64
    c.train.optimizer = "sgd"
    c.train.lr = 0.1
    c.train.momentum = 0.9
    c.train.weight_decay = 5e-4
    c.train.schedule = "cosine"
    c.train.warmup_steps = 0
    c.train.log_every = 10
    c.train.checkpoint_every = 100   # steps; also at every epoch end and at the end
    c.train.keep_checkpoints = 2
    c.train.num_devices = 0          # 0 = all devices (every device of every host when multi-host)
    c.train.model_axis = 1           # devices on the mesh's "model" axis (big kernels split); 1 = pure DP
    c.train.skip_nonfinite = False   # True: skip steps with a NaN/Inf loss or gradient (counted)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256
    c.eval.draws = 10                # M: accuracy of logits averaged over M coding draws

    # Sections owned by the modules that use them (imported here, not at module top,
    # so that reading a config does not pull in the attack and certification code).
    from rsc_jax import certify, distill, robustness
    c.attack = robustness.default_config()
    c.certify = certify.default_config()
    c.distill = distill.default_config()   # E-RSCT; enabled=False (the *_erst configs turn it on)
    return c


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"config.{field}={value!r} is not allowed; {allowed}")


def _choice(cfg: ml_collections.ConfigDict, field: str, options: tuple[str, ...]) -> None:
    value = _get(cfg, field)
    if value not in options:
        _fail(field, value, f"allowed: {list(options)}")


def _get(cfg: ml_collections.ConfigDict, field: str) -> Any:
    node: Any = cfg
    for part in field.split("."):
        node = node[part]
    return node


def _positive(cfg, field: str, *, integer: bool = False, allow_zero: bool = False) -> None:
    v = _get(cfg, field)
    if integer and (not isinstance(v, int) or isinstance(v, bool)):
        _fail(field, v, "must be an int")
    if not (v >= 0 if allow_zero else v > 0):
        _fail(field, v, "must be >= 0" if allow_zero else "must be > 0")


def validate(cfg: ml_collections.ConfigDict, *, device_count: int | None = None) -> None:
    """Checks every field this module defines; raises ``ConfigError`` on the first bad one.

    Sections added by other modules (``attack``, ``certify``, ``distill``) are checked
    by their own ``validate_config``; ``main`` calls them all.
    """
    _choice(cfg, "dataset.name", DATASETS)
    if cfg.dataset.name == "npz":
        if not cfg.dataset.path:
            _fail("dataset.path", cfg.dataset.path, "dataset.name='npz' needs the path of an .npz file")
        if not os.path.isfile(cfg.dataset.path):
            _fail("dataset.path", cfg.dataset.path, "the file does not exist")
    for f in ("dataset.num_train", "dataset.num_test"):
        v = _get(cfg, f)
        if not isinstance(v, int) or (v < 1 and v != -1):
            _fail(f, v, "must be -1 (all) or an int >= 1")
    if len(cfg.dataset.mean) != len(cfg.dataset.std):
        _fail("dataset.std", cfg.dataset.std, f"must have as many entries as dataset.mean={cfg.dataset.mean}")
    if any(s <= 0 for s in cfg.dataset.std):
        _fail("dataset.std", cfg.dataset.std, "every entry must be > 0")

    from rsc_jax import models  # models pull in flax; keep config import light
    _choice(cfg, "model.name", tuple(models.names()))
    _choice(cfg, "model.dtype", tuple(models.DTYPES))
    _positive(cfg, "model.width")

    _choice(cfg, "neuron.reset", neurons.RESETS)
    _choice(cfg, "neuron.surrogate", neurons.SURROGATES)
    _choice(cfg, "neuron.grad_mode", neurons.GRAD_MODES)
    if not cfg.neuron.tau >= 1.0:
        _fail("neuron.tau", cfg.neuron.tau, "must be >= 1")
    _positive(cfg, "neuron.v_th")
    _positive(cfg, "neuron.alpha", allow_zero=True)

    _choice(cfg, "coding.method", coding.METHODS)
    _positive(cfg, "coding.T", integer=True)
    if not cfg.coding.sigma >= 0:
        _fail("coding.sigma", cfg.coding.sigma, "must be >= 0")

    _positive(cfg, "train.epochs", integer=True, allow_zero=True)
    _positive(cfg, "train.batch_size", integer=True)
    _choice(cfg, "train.optimizer", OPTIMIZERS)
    _choice(cfg, "train.schedule", SCHEDULES)
    _positive(cfg, "train.lr")
    if not 0 <= cfg.train.momentum < 1:
        _fail("train.momentum", cfg.train.momentum, "must be in [0, 1)")
    _positive(cfg, "train.weight_decay", allow_zero=True)
    _positive(cfg, "train.warmup_steps", integer=True, allow_zero=True)
    _positive(cfg, "train.log_every", integer=True)
    _positive(cfg, "train.checkpoint_every", integer=True)
    _positive(cfg, "train.keep_checkpoints", integer=True)
    _positive(cfg, "train.num_devices", integer=True, allow_zero=True)
    if not isinstance(cfg.train.get("skip_nonfinite", False), bool):
        _fail("train.skip_nonfinite", cfg.train.skip_nonfinite, "must be True or False")
    _positive(cfg, "eval.batch_size", integer=True)
    _positive(cfg, "eval.draws", integer=True)

    n = device_count if device_count is not None else jax.device_count()
    if cfg.train.num_devices > n:
        _fail("train.num_devices", cfg.train.num_devices, f"this machine has {n} devices")
    n = cfg.train.num_devices or n
    _positive(cfg, "train.model_axis", integer=True)
    if n % cfg.train.model_axis:
        _fail("train.model_axis", cfg.train.model_axis, f"must divide the device count {n}")
    n //= cfg.train.model_axis        # batches split over the data axis only
    for f in ("train.batch_size", "eval.batch_size"):
        if _get(cfg, f) % n:
            _fail(f, _get(cfg, f), f"must be divisible by the device count {n}")
