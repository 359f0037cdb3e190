"""Validation of a whole run config, before anything is compiled.

``validate(cfg, modes)`` checks every field of every section against what is allowed
(and the combinations the modes need: a Gaussian coding to certify, batch sizes that
divide over the devices, export directories that exist), raising
``validation.ConfigError`` with one line: ``config.FIELD=VALUE is not allowed; ...``.
The evaluators check their own section with ``check_attack`` / ``check_certify`` when
called directly. All checks use the helpers of ``validation``: one rule per quantity.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import jax
import ml_collections

from rsc_jax import apgd, backend, classifier, coding, config, data, models, neurons, validation
from rsc_jax.validation import ConfigError

E = ConfigError


def _get(cfg: Any, field: str) -> Any:
    node = cfg
    for part in field.split("."):
        node = node[part]
    return node


def _fields(c: Any, defaults: Callable[[], ml_collections.ConfigDict], prefix: str) -> None:
    """Exactly the fields of ``defaults()``: none unknown, none missing."""
    known = list(defaults().keys())
    for k in c.keys():
        if k not in known:
            validation.fail(prefix + k, c[k], f"unknown field; known fields: {sorted(known)}", E)
    for k in known:
        if k not in c:
            raise E(f"{prefix}{k} is missing (start from rsc_jax.config.{defaults.__name__}())")


def _ints(c: Any, prefix: str, minimum: int, *names: str, all_value: int | None = None) -> None:
    for k in names:
        validation.check_int(prefix + k, c[k], minimum, all_value=all_value, error=E)


def _bools(c: Any, prefix: str, *names: str) -> None:
    for k in names:
        validation.check_bool(prefix + k, c[k], E)


def _numbers(c: Any, prefix: str, *names: str, **bounds: Any) -> None:
    for k in names:
        validation.check_number(prefix + k, c[k], error=E, **bounds)


def _export_dir(field: str, path: Any, what: str) -> None:
    if not isinstance(path, str):
        validation.fail(field, path, f"must be a path string ({what})", E)
    if path and not os.path.isfile(os.path.join(path, "config.json")):
        validation.fail(field, path, "it must be an export directory (with config.json), e.g. WORKDIR/export "
                                     "or WORKDIR/teacher/export of an earlier run", E)


def check_dataset(c: Any, p: str = "config.dataset.") -> None:
    _fields(c, config.dataset, p)
    validation.check_choice(p + "name", c.name, config.DATASETS, E)
    if c.name == "npz":
        if not c.path:
            validation.fail(p + "path", c.path, "dataset.name='npz' needs the path of an .npz file", E)
        if not os.path.isfile(c.path):
            raise E(data.missing_file_message(c.path, p + "path"))
    _ints(c, p, 1, "num_train", "num_test", all_value=-1)
    _ints(c, p, 0, "image_size")
    _bools(c, p, "augment")
    if len(c.mean) != len(c.std):
        validation.fail(p + "std", c.std, f"must have as many entries as dataset.mean={c.mean}", E)
    for k in ("mean", "std"):
        validation.check_grid(p + k, c[k], min_len=0, positive=k == "std", increasing=False, error=E)


def check_model(c: Any, neuron: Any, p: str = "config.") -> None:
    _fields(c, config.model, p + "model.")
    _fields(neuron, config.neuron, p + "neuron.")
    validation.check_choice(p + "model.name", c.name, models.names(), E)
    validation.check_choice(p + "model.dtype", c.dtype, tuple(models.DTYPES), E)
    validation.check_number(p + "model.width", c.width, low=0.0, low_open=True, error=E)
    _bools(c, p + "model.", "spiking", "remat")
    validation.check_number(p + "neuron.alpha", neuron.alpha, low=0.0, error=E)   # 0 = the default
    neurons.check_options(tau=neuron.tau, v_th=neuron.v_th, reset=neuron.reset, surrogate=neuron.surrogate,
                          alpha=neuron.alpha or None, detach_reset=neuron.detach_reset,
                          grad_mode=neuron.grad_mode, prefix=p + "neuron.", error=E)


def check_coding(c: Any, p: str = "config.coding.") -> None:
    _fields(c, config.coding, p)
    validation.check_choice(p + "method", c.method, coding.METHODS, E)
    validation.check_int(p + "T", c.T, 1, error=E)
    rule = coding.get(c.method).sigma_rule
    validation.check_sigma(p + "sigma", c.sigma, positive=rule is not None, rule=rule, error=E)


def check_train(c: Any, ev: Any, p: str = "config.") -> None:
    t, q = p + "train.", p + "eval."
    _fields(c, config.train, t)
    _fields(ev, config.evaluation, q)
    _ints(c, t, 0, "epochs", "warmup_steps", "num_devices")
    _ints(c, t, 1, "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "model_axis")
    validation.check_choice(t + "optimizer", c.optimizer, config.OPTIMIZERS, E)
    validation.check_choice(t + "schedule", c.schedule, config.SCHEDULES, E)
    validation.check_number(t + "lr", c.lr, low=0.0, low_open=True, error=E)
    validation.check_number(t + "momentum", c.momentum, low=0.0, high=1.0, high_open=True, error=E)
    validation.check_number(t + "weight_decay", c.weight_decay, low=0.0, error=E)
    _bools(c, t, "skip_nonfinite", "tensorboard")
    if c.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        validation.fail(t + "tensorboard", True, "tensorboardX is not installed (pip install tensorboardX)", E)
    _ints(ev, q, 1, "batch_size", "draws")


def check_attack(c: Any, p: str = "config.attack.") -> None:
    """The ``config.attack`` section (``config.attack()``)."""
    _fields(c, config.attack, p)
    _bools(c, p, "random_start", "common_random_numbers", "fgsm", "l2", "ensemble", "bptr", "sapgd", "transfer",
           "square", "sanity", "gradient_check", "quick", "apgd", "transfer_expectation", "poisson_adaptive",
           "cascade", "doubled_budget", "l2_apgd")
    validation.check_grid(p + "gumbel_temperatures", c.gumbel_temperatures, min_len=1, positive=True,
                          increasing=False, error=E)
    if len(set(c.gumbel_temperatures)) != len(c.gumbel_temperatures):
        validation.fail(p + "gumbel_temperatures", c.gumbel_temperatures, "must not repeat a temperature", E)
    validation.check_int(p + "standalone_examples", c.standalone_examples, 1, all_value=-1, error=E)
    validation.check_int(p + "poisson_exact_max", c.poisson_exact_max, 0, error=E)
    validation.check_int(p + "poisson_exact_eot", c.poisson_exact_eot, 1, error=E)
    validation.check_int(p + "doubled_examples", c.doubled_examples, 1, all_value=-1, error=E)
    f = c.doubled_fields
    if (not isinstance(f, (tuple, list)) or not f or len(set(f)) != len(f)
            or not all(isinstance(n, str) and n in config.DOUBLEABLE for n in f)):
        validation.fail(p + "doubled_fields", f, f"must be a non-empty tuple of distinct names from "
                                                 f"{list(config.DOUBLEABLE)}", E)
    validation.check_number(p + "convergence_alpha", c.convergence_alpha, low=0.0, high=1.0, low_open=True,
                            error=E)
    _ints(c, p, 1, "steps", "eot", "strong_steps", "strong_eot", "judge_draws", "batch_size", "select_draws",
          "square_queries", "square_draws", "sanity_steps", "sanity_eot", "apgd_steps", "apgd_eot", "apgd_restarts")
    _bools(c, p, "convergence")
    validation.check_int(p + "convergence_examples", c.convergence_examples, 1, all_value=-1, error=E)
    for k in ("convergence_steps", "convergence_eot"):
        validation.check_grid(p + k, c[k], min_len=2, positive=True, error=E)
        if not all(validation.is_int(v) for v in c[k]):
            validation.fail(p + k, c[k], "must be a tuple of ints (a budget grid)", E)
    losses = c.apgd_losses
    if (not isinstance(losses, (tuple, list)) or not losses or len(set(losses)) != len(losses)
            or not all(isinstance(n, str) and n in apgd.LOSSES for n in losses)):
        validation.fail(p + "apgd_losses", losses, f"must be a non-empty tuple of distinct names from "
                                                   f"{list(apgd.LOSSES)}", E)
    validation.check_int(p + "seed", c.seed, error=E)
    validation.check_int(p + "num_examples", c.num_examples, 1, all_value=-1, error=E)
    _numbers(c, p, "step_size", "l2_step_scale", "strong_step_scale", "sanity_eps", low=0.0, low_open=True)
    validation.check_number(p + "square_p_init", c.square_p_init, low=0.0, high=1.0, low_open=True, error=E)
    _numbers(c, p, "tol_monotone", "sanity_max_acc", "tol_strong_gap", "tol_blackbox", "sharp_alpha_factor",
             low=0.0)
    validation.check_number(p + "grad_min_frac", c.grad_min_frac, low=0.0, high=1.0, error=E)
    for k in ("eps_grid", "l2_eps_grid"):     # QTE needs a curve
        if isinstance(c[k], (tuple, list)) and len(c[k]) == 1:
            validation.fail(p + k, c[k], "must hold >= 2 values: it is the curve whose area is the QTE (e.g. "
                                         f"(0, {c[k][0]!r})); a single eps to attack at goes in strong_eps", E)
        validation.check_grid(p + k, c[k], min_len=2, error=E)
    validation.check_grid(p + "strong_eps", c.strong_eps, min_len=0, positive=True, increasing=False, error=E)
    s = c.surrogates
    if not isinstance(s, (tuple, list)) or not all(isinstance(n, str) and n in neurons.SURROGATES for n in s):
        validation.fail(p + "surrogates", s, f"must be a tuple of names from {list(neurons.SURROGATES)}", E)
    _export_dir(p + "transfer_from", c.transfer_from, "'' for WORKDIR/ann_twin/export")


def check_certify(c: Any, p: str = "config.certify.") -> None:
    """The ``config.certify`` section (``config.certify()``)."""
    _fields(c, config.certify, p)
    _ints(c, p, 1, "n0", "n", "batch", "image_batch")
    validation.check_int(p + "num_examples", c.num_examples, 1, all_value=-1, error=E)
    validation.check_int(p + "seed", c.seed, 0, error=E)
    validation.check_number(p + "alpha", c.alpha, low=0.0, high=1.0, low_open=True, high_open=True, error=E)
    validation.check_grid(p + "radii", c.radii, min_len=1, error=E)


def check_distill(c: Any, p: str = "config.distill.") -> None:
    """The ``config.distill`` section (E-RSCT)."""
    _fields(c, config.distill, p)
    _bools(c, p, "enabled", "ce", "init_from_teacher")
    _numbers(c, p, "alpha", "beta", low=0.0)          # 0 switches the term off
    validation.check_number(p + "tau_kd", c.tau_kd, low=0.0, low_open=True, error=E)
    validation.check_int(p + "teacher_epochs", c.teacher_epochs, 0, all_value=-1, error=E)
    _export_dir(p + "teacher", c.teacher, "'' = train one")
    if c.enabled and not c.ce and c.alpha == 0 and c.beta == 0:
        raise E(f"{p}ce=False with alpha=0 and beta=0 is not allowed; at least one loss term must be on")


def check_devices(cfg: Any, device_count: int | None = None) -> None:
    """The mesh fits the machine and every batch divides over its data axis."""
    n = device_count if device_count is not None else jax.device_count()
    if cfg.train.num_devices > n:
        validation.fail("config.train.num_devices", cfg.train.num_devices, f"this machine has {n} devices", E)
    n = cfg.train.num_devices or n
    if n % cfg.train.model_axis:
        validation.fail("config.train.model_axis", cfg.train.model_axis, f"must divide the device count {n}", E)
    n //= cfg.train.model_axis        # batches split over the data axis only
    for f in ("train.batch_size", "eval.batch_size", "attack.batch_size", "certify.image_batch"):
        if _get(cfg, f) % n:
            validation.fail("config." + f, _get(cfg, f), f"must be divisible by the device count {n}", E)


def check_certifiable(method: str, field: str = "config.coding.method") -> None:
    """Certification needs a coding with a Gaussian certificate (``coding.CODINGS``)."""
    c = coding.get(method, field)
    if c.no_certificate:
        raise E(f"{field}={method!r} has no Gaussian certificate; --mode=certify needs one of "
                f"{list(coding.CERTIFIABLE_METHODS)}: {c.no_certificate}")


def validate(cfg: Any, modes: tuple[str, ...] = (), *, device_count: int | None = None) -> None:
    """Checks the whole config (every section, then what ``modes`` need); raises
    ``ConfigError`` on the first bad field."""
    _fields(cfg, config.base, "config.")
    validation.check_int("config.seed", cfg.seed, error=E)
    validation.check_choice("config.matmul_precision", cfg.matmul_precision, backend.MATMUL_PRECISIONS, E)
    check_dataset(cfg.dataset)
    check_model(cfg.model, cfg.neuron)
    check_coding(cfg.coding)
    check_train(cfg.train, cfg.eval)
    check_attack(cfg.attack)
    check_certify(cfg.certify)
    check_distill(cfg.distill)
    check_devices(cfg, device_count)
    if "certify" in modes:
        check_certifiable(cfg.coding.method)


def _builds(clf_config: dict[str, Any]) -> str | None:
    """None when the model of ``clf_config`` can be built on its images, else the error
    (``jax.eval_shape`` of ``init``: traced only, nothing compiled or allocated)."""
    try:
        jax.eval_shape(lambda: classifier.build_model(clf_config).init(
            jax.random.key(0), classifier.dummy_input(clf_config), train=False))
        return None
    except Exception as e:   # noqa: BLE001 (a layer that does not fit raises anything: ZeroDivisionError, ...)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}".rstrip(": ")


def check_model_input(clf_config: dict[str, Any], field: str = "config.model.name") -> None:
    """The model ``clf_config`` describes (``train.classifier_config``) can be built on its
    data's images; else one line naming the smallest square image size it builds on.

    E.g. vgg11's five 2 x 2 poolings leave nothing of an 8 x 8 digits image. The search
    traces ``init`` at growing sizes (only when the data's size fails)."""
    error = _builds(clf_config)
    if error is None:
        return
    h, w, c = (list(clf_config["dataset"]["image_shape"]) + [1, 1, 1])[:3]

    def at(side: int) -> dict[str, Any]:
        return dict(clf_config, dataset=dict(clf_config["dataset"], image_shape=[side, side, c]))

    lo, hi = max(h, w), max(h, w) * 2
    while hi <= 1024 and _builds(at(hi)) is not None:
        lo, hi = hi, hi * 2
    if hi > 1024:
        need = ""
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _builds(at(mid)) is None else (mid, hi)
        need = f"; it needs images of at least {hi}x{hi} (e.g. --config.dataset.name=mnist or cifar10)"
    name = clf_config["model"]["name"]
    raise E(f"{field}={name!r} is not allowed for the {h}x{w}x{c} images of "
            f"{clf_config['dataset'].get('name', 'this data set')}: the model cannot be built on them ({error})"
            f"{need}")


def check_training_set(cfg: Any, num_train: int) -> None:
    """A training batch fits in the training set (``data.steps_per_epoch`` drops the rest)."""
    if cfg.train.batch_size > num_train:
        validation.fail("config.train.batch_size", cfg.train.batch_size,
                        f"the training set has {num_train} examples (config.dataset.num_train and the data set); "
                        "use a batch size of at most that", E)
