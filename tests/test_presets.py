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
    """Input gradients per attacked example at the rand preset without the cascade, counted
    by hand from config.RAND_ATTACK and config.attack(): FGSM at the 4 non-zero eps of the
    grid (4), the paper's PGD-7 at those eps (28), PGD-50 (50), PGD-7 EOT-10 (70), APGD-CE,
    APGD-DLR and APGD on the margin at (100 + 1) evaluations x EOT-20 (3 x 2,020; the margin
    loss runs 2,020 forwards more), APGD-CE from the noise-free copy (101: one draw), the
    sanity PGD-20 with EOT-10 (200: the model is stochastic), l2 PGD-7 at 3 eps (21) and
    APGD-CE at those eps (3 x 2,020), the gradient check (1), and the ensemble's APGD-CE
    through the 9 surrogate variants other than BPTR (atan, triangle, rectangle, assg, pdsg
    and the four fixed ones with alpha x 4: 9 x 2,020; the model's own sigmoid at the
    default alpha is the model, whose APGD-CE is its own row). BPTR and the transfer
    from the ANN twin: 2,020 each. Square: 5,000 queries x 4 draws x 2 forward passes, plus
    M judge draws and M report draws (it is in the worst case)."""
    est = load_script("estimate_runtime")
    cfg = config.from_file(name)
    ac = est.attack_counts(cfg, train.classifier_config(cfg, est.dataset(cfg)))
    pe = ac["per_example"]
    apgd = 101 * 20
    assert pe["grad"] == 4 + 28 + 50 + 70 + 3 * apgd + 101 + 200 + 21 + 3 * apgd + 1 + 9 * apgd
    assert pe["grad_bptr"] == apgd and pe["grad_transfer"] == apgd
    jobs = {(j["job"], j.get("eps")): j for j in ac["jobs"]}
    assert jobs[("apgd-margin", round(8 / 255, 6))]["fwd"] == apgd + 2 * cfg.attack.judge_draws
    square = [j for j in ac["jobs"] if j["job"] == "square"]
    assert len(square) == 1 and square[0]["fwd"] == 5000 * 2 * 4 + 2 * cfg.attack.judge_draws
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
