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
