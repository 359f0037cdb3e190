"""Shared fixtures. Tests run on the CPU; a few need 4 devices and run in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def pytest_configure(config: pytest.Config) -> None:
    """One persistent XLA compilation cache per test process, shared with its subprocesses.

    The CLI, multi-process and kill-and-resume tests compile the same digits programs
    again in fresh interpreters. The directory is new each session, so nothing carries
    over between CI runs, and one per pytest-xdist worker, not one for all: JAX writes
    cache entries in place (no lock unless eviction is on), so two workers compiling the
    same program could read each other's half-written files. Runs before collection,
    hence before any test module imports jax (which reads these variables at import).
    """
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return                    # xdist controller: runs no tests; each worker sets its own
    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""))
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rsc_jax_test_xla_cache_")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


# XLA:CPU's LLVM backend at -O0 in the tests and their subprocesses (ours). Most of the
# suite's time is XLA compiling small programs (a toy attack job: 3.4 s at the default level,
# 0.8 s at -O0); the optimisation level changes how fast the machine code runs, not the
# HLO, so every equality the tests assert is between programs compiled alike.
# ``tests/test_backend.py`` checks batch invariance of the attack and judge programs at
# the default level too. A level already in the user's XLA_FLAGS is kept.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(*flags: str) -> str:
    """``XLA_FLAGS`` for a test process: ``flags`` plus ``TEST_XLA_FLAGS`` unless they
    already set the optimisation level."""
    out = " ".join(f for f in flags if f)
    return out if "xla_backend_optimization_level" in out else f"{out} {TEST_XLA_FLAGS}".strip()


def run_python(code: str, *, devices: int = 1, timeout: int = 600) -> str:
    """Runs ``code`` in a fresh interpreter with ``devices`` CPU devices; returns stdout."""
    env = dict(os.environ, XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={devices}"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=ROOT)
    if p.returncode:
        raise AssertionError(f"subprocess failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p.stdout


def shared_file(name: str) -> str:
    path = os.path.join(SHARED_DATA, name)
    if not os.path.isfile(path):
        pytest.skip(f"{path} is absent (real data lives in ../shared/data beside the checkout)")
    return path
