"""Numerics of the optimised paths against the plain ones (docs/PERFORMANCE.md).

- layers.conv_general_dilated (dense matmul on tiny maps) == lax.conv_general_dilated,
  values and gradients, for the shapes, strides and paddings the models use;
- the unrolled LIF the models run == the lax.scan reference (unroll=1), bit for bit;
- a model built with the fast conv == the same parameters through plain nn.Conv.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rsc_jax import models, neurons
from rsc_jax.models import layers

DN = ("NHWC", "HWIO", "NHWC")


def _both(x, k, stride, padding):
    dn = lax.conv_dimension_numbers(x.shape, k.shape, DN)
    fast = lambda x, k: layers.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=dn)
    ref = lambda x, k: lax.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=dn)
    return fast, ref


@pytest.mark.parametrize("hw,cin,cout,kernel,stride,padding", [
    (2, 32, 16, 3, 1, "SAME"),     # VGG-11's last stage / digits convnet's last stage (2x2)
    (2, 16, 8, 3, 2, "SAME"),      # strided
    (2, 16, 8, 1, 1, "SAME"),      # 1x1 (ResNet shortcut)
    (2, 16, 8, 1, 2, "VALID"),     # 1x1 strided shortcut
    (1, 16, 8, 3, 1, "SAME"),      # 1x1 map
    (2, 16, 8, 3, 1, ((1, 1), (1, 1))),
    (4, 8, 8, 3, 1, "SAME"),       # larger map: direct conv path
])
def test_fast_conv_matches_lax_values_and_grads(hw, cin, cout, kernel, stride, padding):
    x = jax.random.normal(jax.random.key(0), (5, hw, hw, cin))
    k = jax.random.normal(jax.random.key(1), (kernel, kernel, cin, cout)) / np.sqrt(kernel * kernel * cin)
    fast, ref = _both(x, k, stride, padding)
    yf, yr = fast(x, k), ref(x, k)
    assert yf.shape == yr.shape
    np.testing.assert_allclose(yf, yr, rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.key(2), yr.shape)
    gf = jax.grad(lambda x, k: jnp.sum(fast(x, k) * w), argnums=(0, 1))(x, k)
    gr = jax.grad(lambda x, k: jnp.sum(ref(x, k) * w), argnums=(0, 1))(x, k)
    for a, b in zip(gf, gr):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_fast_conv_under_vmap_and_bf16():
    x = jax.random.normal(jax.random.key(0), (3, 1, 2, 2, 8))
    k = jax.random.normal(jax.random.key(1), (3, 3, 8, 4)) / 8
    fast, ref = _both(x[0], k, 1, "SAME")
    np.testing.assert_allclose(jax.vmap(fast, (0, None))(x, k), jax.vmap(ref, (0, None))(x, k), rtol=1e-5, atol=1e-5)
    yb = fast(x[0].astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(yb.astype(jnp.float32), ref(x[0], k), rtol=5e-2, atol=5e-2)


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


def test_digits_model_fast_path_matches_plain_conv(monkeypatch):
    """The whole digits convnet (last stage on a 2x2 map): fast conv vs plain lax conv,
    logits and parameter gradients."""
    m = models.create("convnet", num_classes=10)
    x = (jax.random.uniform(jax.random.key(0), (2, 3, 8, 8, 1)) > 0.5).astype(jnp.float32)
    v = m.init(jax.random.key(1), x)

    def run():
        def loss(p):
            out = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])[0]
            return jnp.sum(out ** 2), out
        return jax.jit(jax.grad(loss, has_aux=True))(v["params"])
    g_fast, out_fast = run()
    monkeypatch.setattr(layers, "SMALL_MAP_PIXELS", 0)
    g_ref, out_ref = run()
    np.testing.assert_allclose(out_fast, out_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
