"""rsc_jax.backend: per-backend compiler options, the lazy ``jit`` wrapper, and the
package's other CPU-only decisions (made there and nowhere else).

The options change which XLA:CPU kernels run the convolutions (Eigen's instead of
YNNPACK's); these tests check that they take effect, that the numbers stay those of
plain ``jax.jit`` to float32 summation-order noise, and that the wrapper behaves like
``jax.jit`` (static arguments, donation, ``lower``, decorator forms).
"""

import functools
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rsc_jax
from rsc_jax import backend, models, parallel
from rsc_jax.evaluators import cascade, robustness
from tests.conftest import ROOT
from tests.test_robustness import reduced_config, toy_setup

cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are XLA:CPU's")


def _ynn_conv_count(compiled_text: str) -> int:
    """Convolutions inside YNNPACK fusions of a compiled HLO module."""
    bodies = dict(re.findall(r"^%?(\S+) [^\n]*\{\n(.*?)\n\}", compiled_text, re.S | re.M))
    called = re.findall(r"calls=%?([\w.\-]+)[^\n]*__ynn_fusion", compiled_text)
    return sum(bodies.get(name, "").count("convolution(") for name in called)


def test_compiler_options_per_platform():
    assert backend.compiler_options("cpu") == backend.CPU_COMPILER_OPTIONS
    assert backend.compiler_options("gpu") == {}
    assert backend.compiler_options("tpu") == {}
    backend.compiler_options("cpu")["x"] = "1"          # a copy: the module constant is untouched
    assert "x" not in backend.CPU_COMPILER_OPTIONS


def _model_and_loss():
    m = models.create("convnet", num_classes=10, spiking=False)
    x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
    y = jnp.arange(16) % 10
    v = m.init(jax.random.key(1), x, train=False)

    def loss(params, x):
        logits = m.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=False)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), y])
    return jax.value_and_grad(loss), v["params"], x


@cpu_only
def test_options_move_convolutions_off_ynnpack_and_keep_the_numbers():
    f, params, x = _model_and_loss()
    ours, plain = backend.jit(f), jax.jit(f)
    assert _ynn_conv_count(plain.lower(params, x).compile().as_text()) > 0     # the default: non-vacuous
    assert _ynn_conv_count(ours.lower(params, x).compile().as_text()) == 0
    (l1, g1), (l2, g2) = ours(params, x), plain(params, x)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_jit_behaves_like_jax_jit():
    calls = []

    @backend.jit
    def plain(x):
        calls.append(1)
        return x * 2

    @functools.partial(backend.jit, static_argnames=("n",))
    def power(x, *, n):
        return x ** n

    donating = backend.jit(lambda s, d: s + d, donate_argnums=(0,))
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(plain(x), [0, 2, 4])
    plain(x + 1)
    assert len(calls) == 1                                 # traced once, then cached
    np.testing.assert_array_equal(power(x, n=3), [0, 1, 8])
    np.testing.assert_array_equal(donating(jnp.ones(3), x), [1, 2, 3])
    assert plain.__wrapped__(3) == 6 and plain.__name__ == "plain"
    assert "mul" in plain.lower(x).as_text()
    with pytest.raises(TypeError, match="compiler_options"):
        backend.jit(lambda x: x, compiler_options={})


def test_jit_defers_the_backend_choice_to_first_use(monkeypatch):
    seen = []
    monkeypatch.setattr(backend, "compiler_options", lambda platform=None: seen.append(platform) or {})
    f = backend.jit(lambda x: x + 1)
    assert seen == []                                      # decorating initialises nothing
    f(1.0)
    f(2.0)
    assert seen == [None]                                  # chosen once, on first use


def test_cpu_decisions_follow_the_backend():
    on_cpu = jax.default_backend() == "cpu"
    assert backend.on_cpu() == backend.widen_residual_in_cond() == on_cpu
    assert backend.should_unroll(None, backend.AUTO_UNROLL_MAX) == on_cpu


def test_backend_is_asked_in_backend_py_only():
    """Every "am I on the CPU" decision of the package goes through ``rsc_jax.backend``."""
    root = pathlib.Path(rsc_jax.__file__).parent
    asking = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "default_backend(" in p.read_text())
    assert asking == ["backend.py"], asking


def test_matmul_precision_policy():
    """config.matmul_precision: the backend's choice by default, checked before anything
    runs, and scoped to what is traced inside (nothing leaks to the caller)."""
    from rsc_jax import config, config_checks
    assert config.base().matmul_precision == "default"
    before = jax.config.jax_default_matmul_precision
    with backend.matmul_precision("highest"):
        assert jax.config.jax_default_matmul_precision == "highest"
    with backend.matmul_precision("default"):
        assert jax.config.jax_default_matmul_precision == before
    assert jax.config.jax_default_matmul_precision == before
    c = config.base()
    c.matmul_precision = "tf32"
    with pytest.raises(config_checks.ConfigError, match=r"config.matmul_precision.*'tf32'.*allowed"):
        config_checks.validate(c)


_DEFAULT_LEVEL = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from rsc_jax import parallel
from rsc_jax.evaluators import cascade, robustness
from tests.test_robustness import reduced_config, toy_setup
clf, _, _, x, y = toy_setup()
out = {{}}
for b in (8, 24):
    c = reduced_config(b)
    c.apgd, c.apgd_losses, c.apgd_steps = True, ("ce",), 3
    jobs = [j for j in robustness.build_jobs(clf, c, {{}}, None) if j.name in ("clean", "apgd-ce")]
    runner = cascade.Runner(clf.logits, x[:24], y[:24], c, parallel.make_mesh(1), False)
    out[b] = {{j.name: {{k: v.tolist() for k, v in runner.run(j, np.arange(24)).items()}} for j in jobs}}
print("RESULT" + json.dumps(out))
"""


@cpu_only
def test_default_optimisation_level_keeps_batch_invariance_and_the_numbers():
    """The suite compiles at -O0 (``tests/conftest.py``); here, in a process at XLA's
    default level, the clean judge and an APGD-CE job give bit-identical outputs at batch
    sizes 8 and 24, and the clean margins equal this process's (-O0) to float32 noise."""
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-c", _DEFAULT_LEVEL.format(root=ROOT)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT"))[len("RESULT"):])
    assert out["8"] == out["24"]
    clf, _, _, x, y = toy_setup()
    c = reduced_config(8)
    job = next(j for j in robustness.build_jobs(clf, c, {}, None) if j.name == "clean")
    here = cascade.Runner(clf.logits, x[:24], y[:24], c, parallel.make_mesh(1), False).run(job, np.arange(24))
    np.testing.assert_allclose(here["margin"], out["8"]["clean"]["margin"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(here["avg"], out["8"]["clean"]["avg"])
