"""Config validation (rsc_jax.config_checks): every bad value names its field, the value
and what is allowed; one rule per quantity, shared with the public functions."""

import math

import jax.numpy as jnp
import pytest

from rsc_jax import certify, coding, config, config_checks
from rsc_jax.validation import ConfigError
from tests.helpers import load_config

BAD = [
    ("dataset.name", "svhn", "allowed"),
    ("dataset.num_train", 0, "-1"),
    ("model.name", "vgg12", "allowed"),
    ("model.dtype", "float16", "allowed"),
    ("model.width", 0.0, "> 0"),
    ("neuron.surrogate", "relu", "allowed"),
    ("neuron.reset", "zero", "allowed"),
    ("neuron.grad_mode", "rate", "allowed"),
    ("neuron.tau", 0.5, ">= 1"),
    ("neuron.v_th", 0.0, "> 0"),
    ("neuron.alpha", -1.0, ">= 0"),
    ("coding.method", "gauss", "allowed"),
    ("coding.T", 0, ">= 1"),
    ("coding.sigma", -0.1, "> 0"),
    ("coding.sigma", 0.0, "> 0"),
    ("coding.sigma", math.inf, "> 0"),
    ("train.optimizer", "lamb", "allowed"),
    ("train.schedule", "step", "allowed"),
    ("train.batch_size", 0, ">= 1"),
    ("train.lr", 0.0, "> 0"),
    ("train.momentum", 1.0, "[0, 1)"),
    ("train.weight_decay", -1e-4, ">= 0"),
    ("train.epochs", -1, ">= 0"),
    ("train.checkpoint_every", 0, ">= 1"),
    ("eval.draws", 0, ">= 1"),
]


@pytest.mark.parametrize("field,value,allowed", BAD)
def test_bad_value_names_field_value_and_rule(field, value, allowed):
    c = config.base()
    section, name = field.split(".")
    with c.unlocked():
        c[section][name] = value
    with pytest.raises(ConfigError) as e:
        config_checks.validate(c, device_count=1)
    msg = str(e.value)
    assert f"config.{field}={value!r}" in msg and allowed in msg, msg


def test_batch_not_divisible_by_devices():
    c = config.base()
    c.train.batch_size = 30
    with pytest.raises(ConfigError, match=r"config.train.batch_size=30 .*divisible by the device count 4"):
        config_checks.validate(c, device_count=4)


def test_npz_path_missing_file():
    c = config.base()
    c.dataset.name = "npz"
    c.dataset.path = "/nonexistent/x.npz"
    with pytest.raises(ConfigError, match="config.dataset.path: .*x.npz does not exist at '/nonexistent/x.npz'.*"
                                          "make_subsets.py.*--config.dataset.path="):
        config_checks.validate(c, device_count=1)


@pytest.mark.parametrize("name", ["digits", "mnist", "mnist_subset", "cifar10_vgg11", "cifar10_subset",
                                  "cifar100_resnet19", "imagenet_sewresnet34"])
def test_shipped_configs_validate(name):
    c = load_config(name)
    if c.dataset.name == "npz":
        import os
        if not os.path.isfile(c.dataset.path):
            pytest.skip(f"{c.dataset.path} absent")
    config_checks.validate(c, device_count=1)


PAPER_CONFIGS = ["cifar10_vgg11", "cifar10_vgg11_erst", "cifar100_resnet19", "imagenet_sewresnet34",
                 "imagenet_sewresnet34_erst"]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_is_gpu_ready_and_names_its_command(name):
    """Every paper config validates on 1, 2, 4 and 8 devices (all batch sizes divide), and its
    docstring gives the one command and points to the run-time estimates (docs/GPU_RUNS.md)."""
    import ast
    import os

    c = load_config(name)
    for n in (1, 2, 4, 8):
        config_checks.validate(c, ("all",), device_count=n)
        assert c.attack.batch_size % n == 0 and c.certify.image_batch % n == 0, (name, n)
    with open(os.path.join(config.CONFIG_DIR, f"{name}.py")) as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    assert f"python -m rsc_jax.main --config=configs/{name}.py --workdir=runs/{name}" in doc, doc
    assert "docs/GPU_RUNS.md" in doc and "Expected run time" in doc, doc


def test_sigma_has_one_rule_everywhere():
    """Config, encode and certify agree: sigma > 0 for Gaussian codings, >= 0 (ignored)
    for direct and Poisson, finite always."""
    x = jnp.zeros((1, 2, 2, 1))
    for method, sigma, ok in [("rsc1", 0.0, False), ("rsc2", 0.0, False), ("rsc2", -0.1, False),
                              ("rsc2", math.nan, False), ("rsc2", 0.3, True), ("direct", 0.0, True),
                              ("poisson", 0.0, True), ("direct", -0.1, False), ("poisson", math.inf, False)]:
        c = config.base()
        c.coding.method, c.coding.sigma = method, sigma
        outcomes = []
        for check in (lambda: config_checks.validate(c, device_count=1),
                      lambda: coding.encode(jnp.zeros((2,), jnp.uint32), x, method=method, T=2, sigma=sigma),
                      lambda: coding.moments(x, method=method, T=2, sigma=sigma)):
            try:
                check()
                outcomes.append(True)
            except ValueError as e:
                assert "sigma" in str(e), str(e)
                outcomes.append(False)
        assert outcomes == [ok] * 3, (method, sigma, outcomes)
        if method in coding.CERTIFIABLE_METHODS and not ok:
            with pytest.raises(ValueError, match="sigma"):
                certify.radius(0.9, sigma=sigma, coding=method, T=2)


def test_certify_mode_refuses_codings_without_certificate_before_anything_runs():
    c = config.base()
    c.coding.method = "poisson"
    config_checks.validate(c, ("attack",), device_count=1)        # attacking Poisson is fine
    with pytest.raises(ConfigError, match="config.coding.method='poisson' has no Gaussian certificate"):
        config_checks.validate(c, ("certify",), device_count=1)


def test_every_section_refuses_unknown_and_missing_fields():
    for section in ("attack", "certify", "distill", "train", "coding"):
        c = config.base()
        with c.unlocked():
            c[section]["typo_field"] = 1
        with pytest.raises(ConfigError, match=rf"config.{section}.typo_field=1 is not allowed; unknown field"):
            config_checks.validate(c, device_count=1)
    c = config.base()
    with c.unlocked():
        del c.certify["n0"]
    with pytest.raises(ConfigError, match=r"config.certify.n0 is missing"):
        config_checks.validate(c, device_count=1)


def test_config_files_import_only_ml_collections_and_the_config_module():
    """config.py is a leaf (big_vision style): it and every configs/*.py file import
    nothing from the package but rsc_jax.config."""
    import ast
    import glob
    import os
    files = [config.__file__] + sorted(glob.glob(os.path.join(config.CONFIG_DIR, "*.py")))
    for path in files:
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rsc_jax"):
                assert node.module == "rsc_jax" and [a.name for a in node.names] == ["config"], (path, node.module)
            if isinstance(node, ast.Import):
                for a in node.names:
                    assert not a.name.startswith("rsc_jax"), (path, a.name)
                    assert a.name.split(".")[0] in ("os", "importlib", "ml_collections", "typing"), (path, a.name)
