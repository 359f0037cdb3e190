"""Every named model: output shapes, ANN twins, sown pre-synaptic currents, remat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsc_jax import models

CIFAR = (32, 32, 3)


def _shapes(name, spiking, shape, T=2, B=2, **kw):
    m = models.create(name, num_classes=7, spiking=spiking, **kw)
    x = jnp.zeros(((T,) if spiking else ()) + (B,) + shape)
    variables = jax.eval_shape(lambda: m.init(jax.random.key(0), x))
    out, state = jax.eval_shape(lambda: m.apply(m.init(jax.random.key(0), x), x, train=True,
                                               mutable=["batch_stats", "intermediates"]))
    return variables, out, state


@pytest.mark.parametrize("name,shape", [("convnet", (8, 8, 1)), ("convnet", (28, 28, 1)), ("vgg11", CIFAR),
                                        ("resnet19", CIFAR), ("sew_resnet18", (224, 224, 3)),
                                        ("sew_resnet34", (224, 224, 3))])
def test_output_shapes_and_twins_share_layers(name, shape):
    v_snn, out_snn, st_snn = _shapes(name, True, shape)
    v_ann, out_ann, st_ann = _shapes(name, False, shape)
    assert out_snn.shape == (2, 7) and out_ann.shape == (2, 7)
    # ANN twin: the same parameter tree, leaf for leaf.
    assert jax.tree.structure(v_snn) == jax.tree.structure(v_ann)
    assert jax.tree.map(lambda a: a.shape, v_snn) == jax.tree.map(lambda a: a.shape, v_ann)
    # Pre-synaptic currents sown per stage, time-averaged to [B, ...] for the SNN.
    pre_snn = jax.tree.leaves(st_snn["intermediates"])
    pre_ann = jax.tree.leaves(st_ann["intermediates"])
    assert len(pre_snn) == len(pre_ann) >= 3
    assert [a.shape for a in pre_snn] == [a.shape for a in pre_ann]
    assert all(a.shape[0] == 2 for a in pre_snn)


def test_expected_stage_counts_and_parameter_counts():
    counts = {}
    for name, shape, stages in [("vgg11", CIFAR, 5), ("resnet19", CIFAR, 3), ("sew_resnet34", (64, 64, 3), 4)]:
        v, _, st = _shapes(name, True, shape)
        assert len(jax.tree.leaves(st["intermediates"])) == stages
        counts[name] = sum(a.size for a in jax.tree.leaves(v["params"]))
    # VGG-11 convs (9.22M) + classifier; SEW-ResNet-34 with a 7-class head ~21.3M.
    assert 9.2e6 < counts["vgg11"] < 9.3e6
    assert 21.0e6 < counts["sew_resnet34"] < 21.4e6
    assert 12.0e6 < counts["resnet19"] < 13.0e6


def test_logits_are_time_averages():
    m = models.create("convnet", num_classes=3, width=0.25)
    x = jax.random.normal(jax.random.key(1), (3, 2, 8, 8, 1))
    v = m.init(jax.random.key(0), x)
    # train=True: BatchNorm normalises the currents, so neurons fire at init.
    logits, st = jax.jit(lambda v, x: m.apply(v, x, train=True, capture_intermediates=True,
                                              mutable=["intermediates", "batch_stats"]))(v, x)
    per_step = st["intermediates"]["classifier"]["__call__"][0]          # [T*B, classes]
    assert per_step.shape == (6, 3)
    np.testing.assert_allclose(logits, per_step.reshape(3, 2, 3).mean(0), rtol=1e-6)
    assert not np.allclose(per_step[:2], per_step[2:4])                  # steps differ
    ann = models.create("convnet", num_classes=3, width=0.25, spiking=False)
    out = jax.jit(ann.apply)(v, x[0])
    assert out.shape == (2, 3) and np.all(np.isfinite(out))


def test_remat_same_values_and_gradients():
    x = jax.random.uniform(jax.random.key(1), (3, 2, 8, 8, 1)) * 2
    plain = models.create("convnet", num_classes=10, width=0.25)
    remat = models.create("convnet", num_classes=10, width=0.25, remat=True)
    v = plain.init(jax.random.key(0), x)
    v_r = remat.init(jax.random.key(0), x)
    assert jax.tree.structure(v) == jax.tree.structure(v_r)   # explicit names survive nn.remat

    def loss(p, m):
        out, _ = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return (out ** 2).sum()
    g = jax.jit(jax.grad(loss), static_argnums=1)(v["params"], plain)
    g_r = jax.jit(jax.grad(loss), static_argnums=1)(v["params"], remat)
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g)) > 0
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_r)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bad_names_and_overrides():
    with pytest.raises(ValueError, match="name='vgg12'"):
        models.create("vgg12", num_classes=10)
    with pytest.raises(ValueError, match="depth"):
        models.create("vgg11", num_classes=10, depth=3)
    with pytest.raises(ValueError, match="surrogate='relu'"):
        models.create("vgg11", num_classes=10, surrogate="relu")
    with pytest.raises(ValueError, match="num_classes=1"):
        models.create("vgg11", num_classes=1)
    assert "sew_resnet34" in models.names() and "convnet" in models.names()


@pytest.mark.parametrize("name,shape,remat", [("convnet", (8, 8, 1), False), ("convnet", (8, 8, 1), True),
                                              ("resnet19", (8, 8, 3), True), ("sew_resnet18", (32, 32, 3), False)])
def test_every_conv_runs_the_models_conv_field(name, shape, remat):
    """The ``conv_general_dilated`` field reaches every conv (the lean path's spike-input
    convs included); its default is the formulation the models always used."""
    calls = []

    def counting(*args, **kw):
        calls.append(args[1].shape)
        return models.conv_formulations.conv_general_dilated(*args, **kw)
    m = models.create(name, num_classes=7, remat=remat, width=0.125)
    assert m.conv_general_dilated is models.conv_formulations.conv_general_dilated
    x = jnp.zeros((2, 2) + shape)
    v = jax.eval_shape(lambda: m.clone(conv_general_dilated=counting).init(jax.random.key(0), x))
    kernels = [a.shape for a in jax.tree.leaves(v["params"]) if a.ndim == 4]
    assert sorted(calls) == sorted(kernels) and len(kernels) >= 3
