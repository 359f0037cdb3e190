"""Numerics of the optimised paths against the plain ones (docs/PERFORMANCE.md).

- conv_formulations.conv_general_dilated (tap by tap on small maps, custom VJPs) ==
  lax.conv_general_dilated, values and gradients, for the shapes, strides and paddings the
  models use;
- the unrolled LIF the models run == the lax.scan reference (unroll=1), bit for bit;
- a model built with the fast conv == the same model with lax's conv (its
  ``conv_general_dilated`` field), and == the same parameters through plain nn.Conv;
- the lean remat path (lean.bn_lif, lean.conv_spike_residual) == the plain path:
  same variables, forward bit for bit, gradients to float32 rounding.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rsc_jax import models, neurons
from rsc_jax.models import conv_formulations, layers, lean

DN = ("NHWC", "HWIO", "NHWC")


def _both(x, k, stride, padding):
    dn = lax.conv_dimension_numbers(x.shape, k.shape, DN)
    fast = lambda x, k: conv_formulations.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=dn)
    ref = lambda x, k: lax.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=dn)
    return fast, ref


@pytest.mark.parametrize("hw,cin,cout,kernel,stride,padding", [
    (2, 32, 16, 3, 1, "SAME"),     # VGG-11's last stage / digits convnet's last stage (2x2)
    (2, 16, 8, 3, 2, "SAME"),      # strided
    (2, 16, 8, 1, 1, "SAME"),      # 1x1 (ResNet shortcut)
    (2, 16, 8, 1, 2, "VALID"),     # 1x1 strided shortcut
    (1, 16, 8, 3, 1, "SAME"),      # 1x1 map
    (2, 16, 8, 3, 1, ((1, 1), (1, 1))),
    (2, 4, 4, 1, 1, ((1, 1), (1, 1))),   # outputs that read only padding (zeros)
    (4, 256, 8, 3, 1, "SAME"),     # 4x4, >= 256 channels: tap-wise forward, direct-conv backward
    (4, 256, 8, 3, 2, "SAME"),     # the same, strided
    (4, 8, 8, 3, 1, "SAME"),       # 4x4, few channels: direct conv
    (3, 4, 6, 3, 1, "VALID"),      # 3x3 map
    (8, 4, 6, 3, 1, "SAME"),       # 8x8: direct conv path (custom VJP)
    (8, 4, 6, 3, 2, "SAME"),       # direct, strided (dilated cotangent in the VJP)
    (9, 4, 6, 3, 2, "SAME"),       # odd map, strided: uneven SAME pads
    (8, 3, 4, 7, 2, ((3, 3), (3, 3))),   # ResNet stem
    (8, 4, 4, 3, 2, ((1, 0), (0, 1))),   # asymmetric explicit pads
    (11, 2, 3, 3, 3, ((0, 2), (1, 0))),  # stride 3: input rows no output reads
    (6, 4, 4, 3, 1, "VALID"),
    (8, 4, 6, 1, 2, "VALID"),      # strided 1x1 shortcut on a larger map
])
def test_fast_conv_matches_lax_values_and_grads(hw, cin, cout, kernel, stride, padding):
    x = jax.random.normal(jax.random.key(0), (5, hw, hw, cin))
    k = jax.random.normal(jax.random.key(1), (kernel, kernel, cin, cout)) / np.sqrt(kernel * kernel * cin)
    fast, ref = _both(x, k, stride, padding)
    yf, yr = jax.jit(fast)(x, k), jax.jit(ref)(x, k)     # jitted: op-by-op dispatch is slow
    assert yf.shape == yr.shape
    np.testing.assert_allclose(yf, yr, rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.key(2), yr.shape)
    gf = jax.jit(jax.grad(lambda x, k: jnp.sum(fast(x, k) * w), argnums=(0, 1)))(x, k)
    gr = jax.jit(jax.grad(lambda x, k: jnp.sum(ref(x, k) * w), argnums=(0, 1)))(x, k)
    for a, b in zip(gf, gr):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_direct_conv_input_gradient_in_a_loop_keeps_hwio_kernels():
    """The point of ``conv_formulations._direct_conv``: inside a ``while`` body (PGD, EOT) lax's
    input gradient compiled to a conv with ``01oi`` kernel labels, which XLA:CPU ran on
    its generic path ~3x slower; ours keeps every kernel HWIO (labels ``01io``)."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    k1 = jax.random.normal(jax.random.key(1), (3, 3, 4, 8)) / 6
    k2 = jax.random.normal(jax.random.key(2), (3, 3, 8, 8)) / 8
    dn = lax.conv_dimension_numbers(x.shape, k1.shape, DN)

    def hlo(conv):
        def loss(x):
            return jnp.sum(jnp.tanh(conv(jnp.tanh(conv(x, k1, (1, 1), "SAME", dimension_numbers=dn)), k2, (2, 2),
                                         "SAME", dimension_numbers=dn)))
        step = lambda i, x: x + 1e-3 * jnp.sign(jax.grad(loss)(x))
        f = jax.jit(lambda x: jax.lax.fori_loop(0, 3, step, x))
        return f(x), f.lower(x).compile().as_text()
    (y_ours, ours), (y_lax, plain) = hlo(conv_formulations.conv_general_dilated), hlo(lax.conv_general_dilated)
    np.testing.assert_allclose(y_ours, y_lax, rtol=1e-6, atol=1e-6)
    assert "01io->" in ours and "01oi->" not in ours
    if jax.default_backend() == "cpu":
        assert "01oi->" in plain      # what the custom VJP avoids (guards against a vacuous test)


@pytest.mark.parametrize("hw,cin", [(2, 8), (4, 256), (8, 8)])   # tap-wise, tap forward + direct backward, direct
def test_fast_conv_under_vmap_and_bf16(hw, cin):
    x = jax.random.normal(jax.random.key(0), (3, 1, hw, hw, cin))
    k = jax.random.normal(jax.random.key(1), (3, 3, cin, 4)) / np.sqrt(9 * cin)
    fast, ref = _both(x[0], k, 1, "SAME")
    np.testing.assert_allclose(jax.vmap(fast, (0, None))(x, k), jax.vmap(ref, (0, None))(x, k), rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.key(2), (3, 1, hw, hw, 4))
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(jax.vmap(f, (0, None))(x, k) * w), argnums=(0, 1))(x, k)
             for f in (fast, ref)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    yb = fast(x[0].astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(yb.astype(jnp.float32), ref(x[0], k), rtol=5e-2, atol=5e-2)
    gb = jax.grad(lambda x: jnp.sum(fast(x, k.astype(jnp.bfloat16)).astype(jnp.float32)))(x[0].astype(jnp.bfloat16))
    assert gb.dtype == jnp.bfloat16


def test_conv_module_keeps_param_tree_and_matches_plain_nn_conv():
    x = jax.random.normal(jax.random.key(0), (4, 2, 2, 16))
    fast = layers.conv(8, 3, name="conv")
    plain = nn.Conv(8, (3, 3), padding="SAME", use_bias=False, name="conv")
    v = fast.init(jax.random.key(1), x)
    vp = plain.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, vp) == {"params": {"kernel": (3, 3, 16, 8)}}
    np.testing.assert_array_equal(v["params"]["kernel"], vp["params"]["kernel"])   # same init
    np.testing.assert_allclose(fast.apply(v, x), plain.apply(v, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T", [1, 4, 12])
@pytest.mark.parametrize("reset,surrogate,detach", [("hard", "sigmoid", False), ("soft", "atan", True)])
def test_unrolled_lif_equals_scan_reference_bit_for_bit(T, reset, surrogate, detach):
    x = jax.random.normal(jax.random.key(T), (T, 3, 5)) * 1.5
    w = jax.random.normal(jax.random.key(9), (T, 3, 5))
    kw = dict(reset=reset, surrogate=surrogate, detach_reset=detach, tau=2.0, v_th=1.0)
    u = layers.lif_unroll(T)
    ref = jax.jit(lambda x: neurons.lif(x, unroll=1, **kw))(x)
    got = jax.jit(lambda x: neurons.lif(x, unroll=u, **kw))(x)
    np.testing.assert_array_equal(got, ref)
    g_ref = jax.jit(jax.grad(lambda x: jnp.sum(neurons.lif(x, unroll=1, **kw) * w)))(x)
    g_got = jax.jit(jax.grad(lambda x: jnp.sum(neurons.lif(x, unroll=u, **kw) * w)))(x)
    if T <= layers.MAX_LIF_UNROLL:      # fully unrolled: bit for bit
        np.testing.assert_array_equal(g_got, g_ref)
    else:                               # partial unroll: XLA may fuse differently (~1 ulp)
        np.testing.assert_allclose(g_got, g_ref, rtol=1e-5, atol=1e-6)


def test_digits_model_fast_path_matches_plain_conv():
    """The whole digits convnet (last stage on a 2x2 map): its default conv vs the same
    model with lax's conv (the ``conv_general_dilated`` field), logits and parameter
    gradients."""
    m = models.create("convnet", num_classes=10)
    plain = m.clone(conv_general_dilated=lax.conv_general_dilated)
    assert m.conv_general_dilated is conv_formulations.conv_general_dilated
    x = (jax.random.uniform(jax.random.key(0), (2, 3, 8, 8, 1)) > 0.5).astype(jnp.float32)
    v = m.init(jax.random.key(1), x)

    def run(m):
        def loss(p):
            out = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])[0]
            return jnp.sum(out ** 2), out
        return jax.jit(jax.grad(loss, has_aux=True))(v["params"])
    g_fast, out_fast = run(m)
    g_ref, out_ref = run(plain)
    np.testing.assert_allclose(out_fast, out_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- lean remat path
#
# Spiking models with remat=True run BN + LIF as one custom VJP (lean.bn_lif) and their
# spike-fed convs keep the input in one byte (lean.conv_spike_residual). The forward
# pass is the plain path's operations in their order, so the loss, the spikes, the sown
# currents and the batch statistics agree bit for bit; the backward pass sums in another
# order, so gradients agree up to float32 rounding. Tolerance: sums of ~1e4 float32 terms
# in another order differ by up to ~sqrt(1e4) * 2**-24 ~ 1e-5 of their magnitude
# relative to the largest entry of the same parameter (observed: <= 3e-6); plus 1e-6 of
# the largest gradient overall, for parameters whose true gradient is 0 and whose
# computed gradient is float noise (a dense bias in front of a BatchNorm).
GRAD_RTOL, GRAD_ATOL_GLOBAL = 2e-5, 1e-6


def _create(name, remat, **kw):
    if name == "mini_sew":      # sew_resnet18's blocks and stem, two one-block stages
        neuron = models.Neuron(**{k: kw.pop(k) for k in models.NEURON_FIELDS if k in kw}).validate()
        return models.resnet.ResNet(num_classes=10, stage_sizes=(1, 1), stage_channels=(8, 16), stem="imagenet",
                                    stem_channels=8, sew=True, neuron=neuron, remat=remat, **kw)
    return models.create(name, num_classes=10, remat=remat, **kw)


def _lean_and_plain(name, x, train=True, **kw):
    plain = _create(name, False, **kw)
    lean = _create(name, True, **kw)
    v = plain.init(jax.random.key(0), x)
    w = jax.random.normal(jax.random.key(5), (x.shape[1], 10))

    def loss(params, batch_stats, x, m):
        out, upd = m.apply({"params": params, "batch_stats": batch_stats}, x, train=train,
                           mutable=["batch_stats", "intermediates"])
        pre = [t[0] for t in jax.tree.leaves(upd["intermediates"], is_leaf=lambda t: isinstance(t, tuple))]
        # logits and the sown currents (as E-RSCT's L_pre uses them) both carry gradient
        return jnp.sum(out * w) + 0.1 * sum(jnp.mean(p ** 2) for p in pre), (upd, out)

    @jax.jit
    def both(params, batch_stats, x):    # parameter gradients, and input gradients if not train
        g = jax.value_and_grad(loss, argnums=0 if train else (0, 2), has_aux=True)
        return g(params, batch_stats, x, plain), g(params, batch_stats, x, lean)
    return plain, lean, v, both(v["params"], v["batch_stats"], x)


def _assert_grads_close(g_plain, g_lean):
    assert jax.tree.structure(g_plain) == jax.tree.structure(g_lean)
    big = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g_plain))
    assert big > 0
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g_plain)[0], jax.tree.leaves(g_lean)):
        tol = GRAD_RTOL * float(jnp.abs(a).max()) + GRAD_ATOL_GLOBAL * big
        err = float(jnp.abs(a - b).max())
        assert err <= tol, f"{jax.tree_util.keystr(path)}: max |diff| {err:.3g} > {tol:.3g}"


def _check_lean(name, x, train=True, **kw):
    _, lean, v, (((lp, (up, outp)), gp), ((ll, (ul, outl)), gl)) = _lean_and_plain(name, x, train, **kw)
    # the same variables, in the same order (checkpoints load across remat on/off)
    vl = lean.init(jax.random.key(0), x)
    paths = lambda t: [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(t)[0]]
    assert paths(v) == paths(vl) and list(v["params"]) == list(vl["params"])
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(vl)):
        np.testing.assert_array_equal(a, b)
    # forward: bit for bit (the scalar loss to rounding: XLA fuses its sums differently)
    np.testing.assert_array_equal(outp, outl)
    np.testing.assert_allclose(lp, ll, rtol=1e-6)
    assert jax.tree.structure(up) == jax.tree.structure(ul)
    for a, b in zip(jax.tree.leaves(up), jax.tree.leaves(ul)):      # batch stats and sown currents
        np.testing.assert_array_equal(a, b)
    if train:
        assert not all(np.array_equal(a, b) for a, b in
                       zip(jax.tree.leaves(up["batch_stats"]), jax.tree.leaves(v["batch_stats"])))
    assert len(jax.tree.leaves(up["intermediates"])) >= 2
    # backward
    _assert_grads_close(gp, gl)


VGG_X = (jax.random.uniform(jax.random.key(1), (2, 3, 32, 32, 3)) < 0.5).astype(jnp.float32)


# Every surrogate and both grad modes at least once, spread over the models (each case
# compiles two models' training gradients: ~5-25 s on 2 cores).
@pytest.mark.parametrize("neuron", [
    {"surrogate": "sigmoid", "grad_mode": "bptt"},
    {"surrogate": "rectangle", "grad_mode": "bptr", "reset": "soft", "detach_reset": True, "alpha": 2.0,
     "tau": 4.0, "v_th": 0.5},
])
def test_lean_vgg11_matches_plain(neuron):
    _check_lean("vgg11", VGG_X, width=0.125, **neuron)


def test_lean_vgg11_inference_mode_gradients_match_plain():
    """train=False (running statistics; what attacks differentiate): same logits and
    input gradients."""
    _check_lean("vgg11", VGG_X, train=False, width=0.125, surrogate="atan", reset="soft")


@pytest.mark.parametrize("name,neuron", [
    pytest.param("resnet19", {"surrogate": "atan", "grad_mode": "bptr", "detach_reset": True},
                 marks=pytest.mark.slow),
    ("mini_sew", {"surrogate": "triangle", "grad_mode": "bptt", "reset": "soft"}),
])
def test_lean_resnets_match_plain(name, neuron):
    """ResNet-19: BN + shortcut (identity and down-sampled BN) summed before the LIF, the
    256-unit BN + LIF head; SEW (sew_resnet18's blocks, fewer of them): spikes added
    after the LIF, sums of spikes into the next convs, a spiking down-sampling path."""
    hw = 8 if name == "resnet19" else 16
    x = (jax.random.uniform(jax.random.key(2), (2, 2, hw, hw, 3)) < 0.5).astype(jnp.float32)
    _check_lean(name, x, width=0.125 if name == "resnet19" else 1.0, **neuron)


@pytest.mark.parametrize("hw,cin,cout,kernel,stride,padding", [
    (2, 32, 16, 3, 1, "SAME"),     # small map: tap-wise forward and backward
    (2, 16, 8, 3, 2, "SAME"),
    (2, 16, 8, 1, 2, "VALID"),
    (1, 16, 8, 3, 1, "SAME"),
    (4, 256, 8, 3, 1, "SAME"),     # tap-wise forward (primal), direct-conv backward
    (5, 8, 8, 3, 2, ((1, 1), (1, 1))),   # direct conv
])
def test_conv_spike_residual_matches_conv(hw, cin, cout, kernel, stride, padding):
    """Spike-derived inputs (multiples of 1/4 below 64) are kept exactly in one byte:
    values equal, gradients equal up to float32 rounding (summation order)."""
    r = jax.random.randint(jax.random.key(0), (5, hw, hw, cin), 0, 256)
    x = r.astype(jnp.float32) / 4                              # {0, 1/4, ..., 63.75}
    k = jax.random.normal(jax.random.key(1), (kernel, kernel, cin, cout)) / np.sqrt(kernel * kernel * cin)
    dn = lax.conv_dimension_numbers(x.shape, k.shape, DN)
    ref = lambda x, k: conv_formulations.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=dn)
    got = lambda x, k: lean.conv_spike_residual(x, k, (stride, stride), padding, dimension_numbers=dn)
    np.testing.assert_array_equal(jax.jit(got)(x, k), jax.jit(ref)(x, k))
    w = jax.random.normal(jax.random.key(2), ref(x, k).shape)
    g_ref = jax.jit(jax.grad(lambda x, k: jnp.sum(ref(x, k) * w), argnums=(0, 1)))(x, k)
    g_got = jax.jit(jax.grad(lambda x, k: jnp.sum(got(x, k) * w), argnums=(0, 1)))(x, k)
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


def test_lean_path_is_pure_flax():
    """Lean modules under init/apply: immutable batch_stats in training mode fails as
    nn.BatchNorm does; init leaves the statistics at their initial values; sowing only
    when the intermediates are mutable."""
    m = models.create("convnet", num_classes=3, width=0.25, remat=True)
    x = jnp.ones((2, 2, 8, 8, 1))
    v = m.init(jax.random.key(0), x, train=True)
    np.testing.assert_array_equal(v["batch_stats"]["stage0"]["bn"]["var"], 1.0)
    with pytest.raises(Exception, match="batch_stats"):
        m.apply(v, x, train=True)
    _, st = m.apply(v, x, train=False, mutable=["intermediates"])
    assert sorted(st["intermediates"]) == ["stage0", "stage1", "stage2"]


@pytest.mark.slow
@pytest.mark.parametrize("T", [4, 8])
def test_lean_vgg11_halves_training_step_memory(T):
    """The target of benchmarks/run.py --suite=memory: VGG-11, batch 32, 32x32, the
    package's training step; remat=True needs at most half the temporary memory."""
    from benchmarks import jax_models as jm
    plain = jm.temp_bytes(jm.classifier(T=T), 32)
    lean = jm.temp_bytes(jm.classifier(T=T, remat=True), 32)
    assert lean <= 0.5 * plain, (T, plain / 2**20, lean / 2**20)
