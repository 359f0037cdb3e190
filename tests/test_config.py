"""Config validation: every bad value names its field, the value and what is allowed."""

import pytest

from rsc_jax import config
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
    ("coding.T", 0, "> 0"),
    ("coding.sigma", -0.1, ">= 0"),
    ("train.optimizer", "lamb", "allowed"),
    ("train.schedule", "step", "allowed"),
    ("train.batch_size", 0, "> 0"),
    ("train.lr", 0.0, "> 0"),
    ("train.momentum", 1.0, "[0, 1)"),
    ("train.weight_decay", -1e-4, ">= 0"),
    ("train.epochs", -1, ">= 0"),
    ("train.checkpoint_every", 0, "> 0"),
    ("eval.draws", 0, "> 0"),
]


@pytest.mark.parametrize("field,value,allowed", BAD)
def test_bad_value_names_field_value_and_rule(field, value, allowed):
    c = config.base()
    section, name = field.split(".")
    with c.unlocked():
        c[section][name] = value
    with pytest.raises(config.ConfigError) as e:
        config.validate(c, device_count=1)
    msg = str(e.value)
    assert f"config.{field}={value!r}" in msg and allowed in msg, msg


def test_batch_not_divisible_by_devices():
    c = config.base()
    c.train.batch_size = 30
    with pytest.raises(config.ConfigError, match=r"config.train.batch_size=30 .*divisible by the device count 4"):
        config.validate(c, device_count=4)


def test_npz_path_missing_file():
    c = config.base()
    c.dataset.name = "npz"
    c.dataset.path = "/nonexistent/x.npz"
    with pytest.raises(config.ConfigError, match="config.dataset.path='/nonexistent/x.npz'.*does not exist"):
        config.validate(c, device_count=1)


@pytest.mark.parametrize("name", ["digits", "mnist", "mnist_subset", "cifar10_vgg11", "cifar10_subset",
                                  "cifar100_resnet19", "imagenet_sewresnet34"])
def test_shipped_configs_validate(name):
    c = load_config(name)
    if c.dataset.name == "npz":
        import os
        if not os.path.isfile(c.dataset.path):
            pytest.skip(f"{c.dataset.path} absent")
    config.validate(c, device_count=1)


PAPER_CONFIGS = ["cifar10_vgg11", "cifar10_vgg11_erst", "cifar100_resnet19", "imagenet_sewresnet34",
                 "imagenet_sewresnet34_erst"]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_is_gpu_ready_and_names_its_command(name):
    """Every paper config validates on 1, 2, 4 and 8 devices (all batch sizes divide), and its
    docstring gives the one command and points to the run-time estimates (docs/GPU_RUNS.md)."""
    import ast
    import os

    from rsc_jax import certify, distill, robustness
    c = load_config(name)
    for n in (1, 2, 4, 8):
        config.validate(c, device_count=n)
        assert c.attack.batch_size % n == 0 and c.certify.image_batch % n == 0, (name, n)
    certify.validate_config(c.certify)
    robustness.validate_config(c.attack)
    distill.validate_config(c.distill)
    with open(os.path.join(config.CONFIG_DIR, f"{name}.py")) as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    assert f"python -m rsc_jax.main --config=configs/{name}.py --workdir=runs/{name}" in doc, doc
    assert "docs/GPU_RUNS.md" in doc and "Expected run time" in doc, doc
