"""benchmarks.gpu_aot (deviceless GPU compilation) and backend.target_platform.

The pure parts run everywhere: GpuTargetConfig parsing, kernel counting on XLA:CPU's
optimized HLO (the same text format as XLA:GPU's), the one-line skip without jax's CUDA
plugin, and the platform override the AOT compiles trace under. One compile for the
H100 target runs only where the plugin is installed (never in CI).
"""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import gpu_aot, run
from rsc_jax import backend


def test_targets_parse_to_published_figures():
    h = gpu_aot.read_target("h100")[1]
    a40 = gpu_aot.read_target("a100-40gb")[1]
    a80 = gpu_aot.read_target("a100-80gb")[1]
    assert (h["compute_capability"], h["sm_count"]) == ("9.0", 132)
    assert (a40["compute_capability"], a40["sm_count"]) == (a80["compute_capability"], a80["sm_count"]) == ("8.0", 108)
    assert a40["memory_bytes"] == 40536 * 2**20 and a80["memory_bytes"] == 81920 * 2**20
    # HBM bandwidth = memory clock x 2 (DDR) x 5120-bit bus / 8: 1215 MHz (40 GB), 1593 MHz (80 GB), 2619 MHz (H100)
    assert a40["bandwidth_bytes_per_s"] == 1215e6 * 2 * 640
    assert a80["bandwidth_bytes_per_s"] == 1593e6 * 2 * 640
    assert h["bandwidth_bytes_per_s"] == 2619e6 * 2 * 640
    assert a80["device"] == "NVIDIA A100-SXM4-80GB"


def test_text_proto_parser():
    d = gpu_aot.parse_text_proto('# c\na { b: 1\n c { d: 2.5 } }\ns: "x y"  # tail\nr: 1 r: 2\ne: CUDA\n')
    assert d == {"a": {"b": 1, "c": {"d": 2.5}}, "s": "x y", "r": [1, 2], "e": "CUDA"}
    for bad, msg in (("a { b: 1", "missing"), ("a: 1 }", "unbalanced"), ("a", "no value"), ("1: 2", "field name")):
        with pytest.raises(ValueError, match=msg):
            gpu_aot.parse_text_proto(bad)
    with pytest.raises(ValueError, match="core_count"):
        gpu_aot.target_summary({"gpu_device_info": {"cuda_compute_capability": {"major": 9}}})
    with pytest.raises(ValueError, match="--target='v100' is not allowed"):
        gpu_aot.read_target("v100")


def test_count_kernels_on_compiled_hlo():
    """XLA:CPU's optimized HLO of a loop: ENTRY holds 4 fusions (cos, two reduce-window
    partial sums, the final add) and 2 copies; the while body 2 fusions (the loop
    update, the counter add), the condition 1; instructions inside fused computations
    and reducers do not count."""
    def f(x, n):
        y = jax.lax.fori_loop(0, n, lambda i, c: jnp.sin(c) * 2 + 1, x)
        return y.sum() + jnp.cos(x).max()
    text = jax.jit(f).lower(jnp.ones(1000), 5).compile().as_text()
    assert gpu_aot.count_kernels(text) == {"fusion": 7, "custom_call": 0, "other": 2, "kernels": 9}
    one = jax.jit(lambda x: jnp.sin(x) * 2 + 1).lower(jnp.ones(1000)).compile().as_text()
    assert gpu_aot.count_kernels(one) == {"fusion": 1, "custom_call": 0, "other": 0, "kernels": 1}


def test_count_kernels_hand_written():
    text = """HloModule m

%fused (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %e = f32[4]{0} exponential(%p)
}

%b0 (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %f = f32[4]{0} fusion(%p), kind=kLoop, calls=%fused
}

%b1 (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %c = f32[4]{0} copy(%p)
}

ENTRY %main (x: f32[4], i: s32[]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  %i = s32[] parameter(1)
  %g = (f32[4]{0}, s8[0]{0}) custom-call(%x), custom_call_target="__cublas$gemm"
  %h = f32[4]{0} get-tuple-element(%g), index=0
  ROOT %k = f32[4]{0} conditional(%i, %h, %h), branch_computations={%b0, %b1}
}
"""
    assert gpu_aot.count_kernels(text) == {"fusion": 1, "custom_call": 1, "other": 1, "kernels": 3}
    with pytest.raises(ValueError, match="ENTRY"):
        gpu_aot.count_kernels("HloModule m\n")


def test_target_platform_override():
    default = jax.default_backend()
    with backend.target_platform("cuda"):
        assert backend.current_platform() == "gpu" and not backend.on_cpu()
        assert backend.compiler_options() == {} and not backend.widen_residual_in_cond()
        assert backend.should_unroll(None, 4) is False
        with backend.target_platform("cpu"):
            assert backend.on_cpu() and backend.should_unroll(None, 4)
            assert backend.compiler_options() == backend.CPU_COMPILER_OPTIONS
        assert backend.current_platform() == "gpu"
    assert backend.current_platform() == default
    with pytest.raises(ValueError, match="target platform 'metal' is not allowed"):
        with backend.target_platform("metal"):
            pass
    assert backend.current_platform() == default


def test_suite_skips_in_one_line_without_the_plugin(monkeypatch, capsys):
    monkeypatch.setattr(gpu_aot, "cuda_plugin_missing", lambda: gpu_aot.NOT_INSTALLED)
    res = run.main(["--suite=gpu-aot", "--target=a100-40gb"])
    assert res == {"skipped": gpu_aot.NOT_INSTALLED}
    assert capsys.readouterr().out == gpu_aot.NOT_INSTALLED + "\n"


def test_suite_refuses_bad_target_before_anything(capsys):
    with pytest.raises(SystemExit):
        run.main(["--suite=gpu-aot", "--target=v100"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("--target='v100' is not allowed; allowed: h100, a100-40gb, a100-80gb or a .txtpb file")


@pytest.mark.skipif(gpu_aot.cuda_plugin_missing() is not None, reason="jax's CUDA plugin is not installed")
def test_h100_compile_of_the_digits_train_step():
    from benchmarks import jax_models as jm
    text, _ = gpu_aot.read_target("h100")
    mesh = gpu_aot.gpu_mesh(text, 1)
    with backend.target_platform("gpu"):
        rec = gpu_aot.train_program(jm.classifier_config("convnet", dataset=jm.DIGITS, T=2), 16, mesh)
    assert rec["temp"] > 0 and rec["fusion"] > 0 and rec["kernels"] >= rec["fusion"]
    assert rec["argument"] >= rec["alias"] > 0          # the donated state aliases its output


def test_estimator_gpu_memory_refusals_in_one_line(monkeypatch, capsys):
    from tests.helpers import load_script
    est = load_script("estimate_runtime")
    assert est.main(["--gpu-memory=v100", "--configs=cifar10_vgg11"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --gpu-memory: target 'v100' is not allowed; allowed: a100-40gb, a100-80gb, h100 or all\n"
    monkeypatch.setattr(gpu_aot, "cuda_plugin_missing", lambda: gpu_aot.NOT_INSTALLED)
    assert est.main(["--gpu-memory=h100", "--configs=cifar10_vgg11"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --gpu-memory needs jax's CUDA plugin")


def test_estimator_gpu_memory_table():
    """Fit = program bytes <= 75 % of the device's memory, per target and device count."""
    from tests.helpers import load_script
    est = load_script("estimate_runtime")
    gib = 2**30

    def prog(b1, b8, limit):
        return {f"{n}gpu": {"global_batch": 128, "gib": b / gib, "fits": b <= limit} for n, b in ((1, b1), (8, b8))}
    res = [{"config": "c", "gpu_memory": {
        "a100-40gb": {"device": "A40", "programs": {"train": prog(35 * gib, 5 * gib, 0.75 * 40 * gib)}},
        "h100": {"device": "H", "programs": {"train": prog(35 * gib, 5 * gib, 0.75 * 80 * gib)}}}}]
    table = est.gpu_memory_markdown(res, ["a100-40gb", "h100"])
    assert "| `c` | train (128) | 35.00 **no** / 5.00 | 35.00 / 5.00 |" in table


def test_lean_remat_policy_per_platform_and_T():
    """remat=True spiking models take the lean BN + LIF path (a custom VJP) on the CPU at
    every T, elsewhere only for T > 1; the plain path otherwise (same variables)."""
    from benchmarks import jax_models as jm
    from rsc_jax import classifier as rc
    assert backend.lean_remat(1) is (jax.default_backend() == "cpu") and backend.lean_remat(2)

    def traced(T, platform):
        cfg = jm.classifier_config("convnet", dataset=jm.DIGITS, T=T, remat=True)
        clf = rc.Classifier(cfg, None)
        v = jax.eval_shape(lambda: rc.init_variables(cfg, jax.random.key(0)))
        x = jax.ShapeDtypeStruct((T, 2, 8, 8, 1), jnp.float32)
        with backend.target_platform(platform):
            f = lambda v, x: clf.model.apply(v, x, train=True, mutable=["batch_stats"])[0].sum()
            return str(jax.make_jaxpr(f)(v, x))
    assert "name=_bn_lif" in traced(1, "cpu") and "name=_bn_lif" in traced(2, "gpu")
    assert "name=_bn_lif" not in traced(1, "gpu")
