"""Attack presets: the names reports give them, what the paper configs run, and the
attack budget the run-time estimator counts for the ``rand`` preset (by hand)."""

import pytest

from rsc_jax import config, train
from rsc_jax.evaluators import robustness
from tests.helpers import load_script


def test_preset_names():
    assert robustness.preset(config.attack()) == "default"
    more = config.attack()
    more.apgd, more.batch_size = True, 32          # an extra attack is not the default preset
    assert robustness.preset(more) == "custom"
    quick = config.attack()
    quick.quick = True
    assert robustness.preset(quick) == "quick"
    for name in ("cifar10_vgg11", "cifar10_vgg11_erst", "cifar100_resnet19", "imagenet_sewresnet34",
                 "imagenet_sewresnet34_erst"):
        assert robustness.preset(config.from_file(name).attack) == "rand", name
    c = config.from_file("cifar10_vgg11").attack
    c.num_examples = 500                 # fewer images: still the rand budget per example
    assert robustness.preset(c) == "rand"
    for field, value in (("apgd_eot", 10), ("square_draws", 1), ("transfer_expectation", False),
                         ("apgd_losses", ("ce",))):
        c = config.from_file("cifar10_vgg11").attack
        c[field] = value
        assert robustness.preset(c) == "custom", field
    assert robustness.preset(config.from_file("digits").attack) == "quick"


@pytest.mark.parametrize("name", ["cifar10_vgg11"])
def test_rand_preset_attack_budget_by_hand(name):
    """Input gradients per attacked example at the rand preset, counted by hand from
    config.RAND_ATTACK and config.attack(): FGSM at the 4 non-zero eps of the grid (4),
    PGD-7 at those eps (28), PGD-50 (50), PGD-7 EOT-10 (70), APGD-CE + APGD-DLR at 100
    steps x EOT-20 (4,000), PGD-7 from the noise-free copy (7), the sanity PGD-20 with EOT-10 (200: the model is
    stochastic),
    l2 PGD-7 at 3 eps (21), the gradient check (1), and the ensemble's 8 surrogate variants
    other than BPTR x 7 steps (56; the model's own sigmoid at the default alpha is
    "model"). Square: 5,000 queries x 4 draws x 2 forward passes."""
    est = load_script("estimate_runtime")
    cfg = config.from_file(name)
    ac = est.attack_counts(cfg, train.classifier_config(cfg, est.dataset(cfg)))
    pe = ac["per_example"]
    assert pe["grad"] == 4 + 28 + 50 + 70 + 4000 + 7 + 200 + 21 + 1 + 56
    assert pe["grad_bptr"] == 7 and pe["grad_transfer"] == 7
    square = [j for j in ac["jobs"] if j["job"] == "square"]
    assert len(square) == 1 and square[0]["fwd"] == 5000 * 2 * 4 + cfg.attack.judge_draws
    assert ac["convergence"] == {"examples": 64, "grad": 200 * (1 + 5 + 20 + 50),
                                 "fwd": 4 * 4 * cfg.attack.judge_draws}


def test_estimator_refuses_a_data_set_it_cannot_size_in_one_line(capsys):
    est = load_script("estimate_runtime")
    assert est.main(["--configs=digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--configs=digits: data set 'digits' is not one the estimator sizes" in err
    assert est.main(["--configs=nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--configs=nope:" in err and "no such file" in err and "cifar10_vgg11" in err
