"""E-RSCT (rsc_jax/distill.py): KD term, pre-synaptic alignment, init from the teacher,
teacher/student compatibility errors, config, and a few distillation steps on digits."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rsc_jax import classifier, config_checks, data, distill, export, losses, parallel, pipeline, train
from rsc_jax import config as cfglib
from rsc_jax.validation import ConfigError
from tests.helpers import load_config, tiny_digits_config


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def cfg():
    c = tiny_digits_config(epochs=1, log_every=5)
    c.distill.enabled = True
    return c


@pytest.fixture(scope="module")
def digits(cfg):
    return data.load(cfg)


@pytest.fixture(scope="module")
def configs(cfg, digits):
    """(student export config, teacher export config): spiking convnet T = 2 and its ANN twin."""
    return train.classifier_config(cfg, digits), train.classifier_config(distill.teacher_config(cfg), digits)


@pytest.fixture(scope="module")
def teacher(cfg, digits, tmp_path_factory):
    """The ANN twin after 20 clean training steps."""
    clf, _ = train.train(distill.teacher_config(cfg), digits, str(tmp_path_factory.mktemp("teacher")),
                         mesh=parallel.make_mesh(), progress=False, max_steps=20)
    return clf


# --------------------------------------------------------------------------- KD term

def test_kd_zero_for_equal_logits_and_hand_computed_value():
    z = jax.random.normal(jax.random.key(0), (5, 10)) * 3
    assert abs(float(losses.kd_loss(z, z, 4.0))) < 1e-6
    # p_T = softmax([0, ln 3]) = (1/4, 3/4), p_S = softmax([0, 0]) = (1/2, 1/2):
    # KL(p_T || p_S) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.13081...
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    for tau in (1.0, 2.0, 4.0):
        zt = jnp.array([[0.0, math.log(3.0)]]) * tau    # z_T / tau = (0, ln 3)
        zs = jnp.zeros((1, 2))
        np.testing.assert_allclose(losses.kd_loss(zs, zt, tau), tau ** 2 * kl, rtol=1e-5)
    np.testing.assert_allclose(losses.kl_divergence(jnp.array([[0.0, math.log(3.0)]]), jnp.zeros((1, 2))),
                               [kl], rtol=1e-5)
    # Batch mean, and KL is not symmetric: the teacher is the target.
    zs = jnp.array([[0.0, 0.0], [1.0, -1.0]])
    zt = jnp.array([[0.0, math.log(3.0)], [1.0, -1.0]])
    np.testing.assert_allclose(losses.kd_loss(zs, zt, 1.0), kl / 2, rtol=1e-5)
    assert abs(float(losses.kd_loss(zt, zs, 1.0)) - kl / 2) > 1e-3


def test_kd_gradient_has_the_tau_squared_scaling():
    """tau^2 KL(tau) has gradient (p_S - p_T) tau for logits: x tau^2 of the unscaled term's /tau."""
    zs = jnp.array([[0.3, -1.0, 2.0]])
    zt = jnp.array([[1.0, 0.5, -0.5]])
    tau = 4.0
    g = jax.grad(lambda z: losses.kd_loss(z, zt, tau))(zs)
    expected = tau * (jax.nn.softmax(zs / tau) - jax.nn.softmax(zt / tau))
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- L_pre

def _pre(config, variables, x):
    model = classifier.build_model(config)

    @jax.jit
    def f(v, x):
        _, st = model.apply(v, x, train=False, mutable=["intermediates"])
        return losses.pre_activations(st["intermediates"])
    return f(variables, x)


def test_pre_alignment_uses_the_sown_currents(configs, digits):
    s_cfg, t_cfg = configs
    x = jnp.asarray(data.test_arrays(digits)[0][:4])
    tv = classifier.init_variables(t_cfg, jax.random.key(1))
    # The student with the teacher's weights and direct coding gets, at stage 0, the same
    # current bn(conv(x)) at every step: its time-mean equals the teacher's pre-ReLU.
    direct = json.loads(json.dumps(s_cfg))
    direct["coding"]["method"] = "direct"
    xs = classifier.Classifier(direct, None).encode(jax.random.key(0), x)        # [T, B, 8, 8, 1]
    sp, tp = _pre(direct, tv, xs), _pre(t_cfg, tv, x)
    assert sorted(sp) == sorted(tp) == ["stage0/act/pre_stage0", "stage1/act/pre_stage1",
                                        "stage2/act/pre_stage2"]
    assert [sp[k].shape for k in sorted(sp)] == [(4, 8, 8, 8), (4, 4, 4, 16), (4, 2, 2, 32)]
    np.testing.assert_allclose(sp["stage0/act/pre_stage0"], tp["stage0/act/pre_stage0"], rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(sp["stage1/act/pre_stage1"] - tp["stage1/act/pre_stage1"]).max()) > 1e-3
    total, per = losses.pre_alignment_loss(sp, tp)
    assert float(per["stage0/act/pre_stage0"]) < 1e-9
    manual = sum(float(jnp.mean((sp[k] - tp[k]) ** 2)) for k in sp)
    np.testing.assert_allclose(total, manual, rtol=1e-5)
    with pytest.raises(ValueError, match="different pre-synaptic stages"):
        losses.pre_alignment_loss({k: v for k, v in sp.items() if "stage2" not in k}, tp)


def test_pre_loss_has_gradient_in_early_student_layers(configs, digits):
    """Only beta * L_pre on: non-zero, finite gradients reach the first conv through the
    surrogate; the teacher's variables are a step input, not differentiated."""
    s_cfg, t_cfg = configs
    dc = cfglib.distill()
    dc.ce, dc.alpha, dc.beta = False, 0.0, 1.0
    student = classifier.Classifier(s_cfg, None)
    loss_fn = distill.distillation_loss(student, t_cfg, dc)
    sv = classifier.init_variables(s_cfg, jax.random.key(0))
    tv = classifier.init_variables(t_cfg, jax.random.key(1))
    x, y = data.test_arrays(digits)
    batch = {"image": jnp.asarray(x[:8]), "label": jnp.asarray(y[:8])}
    keys = parallel.example_keys(jax.random.key(2), jnp.arange(8))
    (loss, (_, m)), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        sv["params"], sv["batch_stats"], batch, keys, tv)
    assert set(m) >= {"ce", "kd", "pre", "accuracy", "teacher_accuracy", "pre/pre_stage0", "pre/pre_stage2"}
    np.testing.assert_allclose(loss, m["pre"], rtol=1e-6)
    np.testing.assert_allclose(m["pre"], sum(m[f"pre/pre_stage{k}"] for k in range(3)), rtol=1e-5)
    assert float(m["kd"]) == 0.0 and float(m["ce"]) > 0     # switched off: kd not computed, ce logged only
    for layer in ("stage0", "stage1"):
        k = g[layer]["conv"]["kernel"]
        assert np.all(np.isfinite(k)) and float(jnp.abs(k).max()) > 0, layer


# --------------------------------------------------------------------------- init and checks

def test_init_from_teacher_copies_every_shared_parameter(configs):
    s_cfg, t_cfg = configs
    sv = classifier.init_variables(s_cfg, jax.random.key(0))
    tv = jax.tree.map(lambda a: a + 1.0, classifier.init_variables(t_cfg, jax.random.key(1)))   # BN stats too
    out, copied = distill.init_from_teacher(sv, tv)
    leaves = jax.tree.leaves(sv)
    assert copied == len(leaves) == len(jax.tree.leaves(tv)) > 10
    assert jax.tree.structure(out) == jax.tree.structure(sv)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(tv)):
        np.testing.assert_array_equal(a, b)
    # A leaf only the student has keeps its fresh value.
    partial = {"params": {k: v for k, v in tv["params"].items() if k != "classifier"},
               "batch_stats": tv["batch_stats"]}
    out2, copied2 = distill.init_from_teacher(sv, partial)
    assert copied2 == copied - 2
    np.testing.assert_array_equal(out2["params"]["classifier"]["kernel"], sv["params"]["classifier"]["kernel"])


def _other(cfg, digits, **changes):
    c = distill.teacher_config(cfg)
    for k, v in changes.items():
        section, field = k.split("__")
        c[section][field] = v
    return train.classifier_config(c, digits)


def test_mismatched_teacher_names_the_first_mismatch(cfg, configs, digits):
    s_cfg, t_cfg = configs
    distill.check_compatible(s_cfg, t_cfg)      # the twin fits
    with pytest.raises(distill.TeacherMismatchError, match=r"architecture \(model.name\) is 'vgg11'"):
        distill.check_compatible(s_cfg, _other(cfg, digits, model__name="vgg11"), teacher_path="T")
    wrong = json.loads(json.dumps(t_cfg))
    wrong["dataset"]["num_classes"] = 100
    with pytest.raises(distill.TeacherMismatchError, match="number of classes.* is 100 in the teacher but 10"):
        distill.check_compatible(s_cfg, wrong)
    with pytest.raises(distill.TeacherMismatchError, match=r"shape of 'params/stage0/conv/kernel' is \(3, 3, 1, 16\)"):
        distill.check_compatible(s_cfg, _other(cfg, digits, model__width=0.5))
    tv = classifier.init_variables(t_cfg, jax.random.key(0))
    renamed = {"params": dict(tv["params"]), "batch_stats": tv["batch_stats"]}
    renamed["params"]["head"] = renamed["params"].pop("classifier")
    with pytest.raises(distill.TeacherMismatchError, match="layer variable 'params/classifier/kernel' is 'absent'"):
        distill.check_compatible(s_cfg, t_cfg, renamed, teacher_path="T")
    assert issubclass(distill.TeacherMismatchError, export.ExportError)   # main reports it as an error line


# --------------------------------------------------------------------------- config and CLI plan

def test_config_section_and_validation(tmp_path):
    c = cfglib.base()
    assert c.distill.enabled is False and (c.distill.alpha, c.distill.tau_kd, c.distill.beta) == (1.0, 4.0, 1.0)
    config_checks.check_distill(c.distill)
    for field, value, msg in [("alpha", -1.0, "config.distill.alpha=-1.0 is not allowed"),
                              ("tau_kd", 0.0, "config.distill.tau_kd=0.0 is not allowed"),
                              ("beta", float("nan"), "config.distill.beta=nan"),
                              ("teacher_epochs", -2, "config.distill.teacher_epochs=-2"),
                              ("ce", 1, "config.distill.ce=1 is not allowed; must be True or False")]:
            d = ml_collections.ConfigDict(cfglib.distill().to_dict(), type_safe=False)
            d[field] = value
            with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(".", r"\.")):
                config_checks.check_distill(d)
    d = cfglib.distill()
    d.enabled, d.teacher = True, str(tmp_path)
    with pytest.raises(ValueError, match="config.distill.teacher=.* must be an export directory"):
        config_checks.check_distill(d)
    d = cfglib.distill()
    d.enabled, d.ce, d.alpha, d.beta = True, False, 0.0, 0.0
    with pytest.raises(ValueError, match="at least one loss term"):
        config_checks.check_distill(d)
    c.distill.tau_kd = -1.0
    with pytest.raises(ConfigError, match="config.distill.tau_kd"):
        config_checks.validate(c, ("train",))


def test_erst_configs_and_plan():
    for name in ("digits_erst", "cifar10_vgg11_erst", "imagenet_sewresnet34_erst"):
        c = load_config(name)
        assert c.distill.enabled and c.distill.init_from_teacher, name
        config_checks.check_distill(c.distill)
        modes = pipeline.plan(c, "all")
        assert "train_ann_twin" not in modes and modes[0] == "train", (name, modes)   # the teacher is the twin
    assert "train_ann_twin" in pipeline.plan(load_config("digits"), "all")
    c = load_config("digits_erst")
    assert distill.teacher_export_path(c, "/w") == "/w/teacher/export"
    t = distill.teacher_config(c)
    assert (t.model.spiking, t.coding.method, t.coding.T, t.distill.enabled) == (False, "direct", 1, False)


# --------------------------------------------------------------------------- training

def test_teacher_is_a_step_input_not_a_constant(configs, digits):
    """Two different teachers, one compilation: the variables are an argument of the step."""
    s_cfg, t_cfg = configs
    tx = train.make_optimizer(tiny_digits_config().train, 10)
    loss = distill.distillation_loss(classifier.Classifier(s_cfg, None), t_cfg, cfglib.distill())
    step = train.make_train_step(loss, tx, jax.random.key(0))
    mesh = parallel.make_mesh()
    x, y = data.test_arrays(digits)
    batch = parallel.shard_batch({"image": x[:8], "label": y[:8], "index": np.arange(8, dtype=np.int32)}, mesh)
    kds = []
    for seed in (1, 2):
        state = parallel.replicate(train.init_state(classifier.init_variables(s_cfg, jax.random.key(0)), tx), mesh)
        tv = parallel.replicate(classifier.init_variables(t_cfg, jax.random.key(seed)), mesh)
        _, m = step(state, batch, tv)
        kds.append(float(m["kd"]))
    assert step._cache_size() == 1 and kds[0] != kds[1]


def test_a_few_erst_steps_lower_the_total_loss(cfg, digits, teacher, tmp_path):
    clf, summary = distill.train_student(cfg, digits, str(tmp_path), mesh=parallel.make_mesh(), progress=False,
                                         max_steps=30, teacher=teacher)
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert summary["steps"] == 30 and len(lines) == 6
    assert {"loss", "ce", "kd", "pre", "pre/pre_stage0", "teacher_accuracy", "accuracy"} <= set(lines[0])
    for r in lines:     # the logged total is CE + alpha KD + beta L_pre (alpha = beta = 1)
        np.testing.assert_allclose(r["loss"], r["ce"] + r["kd"] + r["pre"], rtol=1e-4)
    assert lines[-1]["loss"] < 0.8 * lines[0]["loss"], (lines[0]["loss"], lines[-1]["loss"])
    d = summary["distill"]
    assert d["leaves_copied"] == len(jax.tree.leaves(teacher.params)) and d["init_from_teacher"]
    assert clf.config["model"]["spiking"] and clf.config["coding"]["method"] == "rsc2"
