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
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rsc_jax_test_xla_cache_")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def run_python(code: str, *, devices: int = 1, timeout: int = 600) -> str:
    """Runs ``code`` in a fresh interpreter with ``devices`` CPU devices; returns stdout."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
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
