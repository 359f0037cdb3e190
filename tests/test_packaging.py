"""The installable package: version, pyproject.toml, bundled configs found from any folder,
``pip install .`` and ``pip install -e .`` into a venv, the version in exports and reports."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import jax
import numpy as np
import pytest

import rsc_jax
from rsc_jax import classifier, config, export, report
from tests.conftest import ROOT, xla_flags


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_version_prints_and_is_the_one_pyproject_reads():
    p = subprocess.run([sys.executable, "-c", "import rsc_jax; print(rsc_jax.__version__)"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == rsc_jax.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.+-]?\w+)*", rsc_jax.__version__), rsc_jax.__version__
    project = _pyproject()
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rsc_jax.__version__"}


def test_pyproject_ships_every_package_and_the_configs():
    """Every folder of rsc_jax/ and configs/ with Python files is a listed package, so that
    ``pip install .`` ships it (the configs as rsc_jax/configs); the console script exists;
    dependencies are ranges, requirements.txt the exact pins."""
    tool = _pyproject()["tool"]["setuptools"]
    assert tool["package-dir"] == {"rsc_jax.configs": "configs"}
    found = []
    for top, package in (("rsc_jax", "rsc_jax"), ("configs", "rsc_jax.configs")):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [x for x in dirs if not x.startswith((".", "__"))]
            if any(f.endswith(".py") for f in files):
                assert "__init__.py" in files, f"{d} has Python files but no __init__.py: pip install would drop it"
                rel = os.path.relpath(d, os.path.join(ROOT, top))
                found.append(package if rel == "." else package + "." + rel.replace(os.sep, "."))
    assert sorted(tool["packages"]) == sorted(found)
    project = _pyproject()["project"]
    assert project["scripts"]["rsc-jax"] == "rsc_jax.main:cli"
    assert all("==" not in d for d in project["dependencies"]), project["dependencies"]
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pins = [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    assert all("==" in p for p in pins), pins
    assert any(p.startswith("importlib_resources==") for p in pins)


def test_resolve_file_takes_names_and_paths():
    digits = os.path.join(config.CONFIG_DIR, "digits.py")
    assert "digits" in config.config_names() and "__init__" not in config.config_names()
    assert "digits_codings" in config.config_names("sweeps")
    for value in ("digits", "digits.py", "configs/digits.py", "./configs/digits.py", digits):
        assert config.resolve_file(value) == digits, value
    assert config.resolve_file("sweeps/digits_codings") == os.path.join(config.CONFIG_DIR, "sweeps",
                                                                        "digits_codings.py")
    for value in ("nosuch", "/nowhere/configs/digits.py", "../digits", "__init__", ""):
        with pytest.raises(FileNotFoundError) as e:
            config.resolve_file(value)
        assert repr(value) in str(e.value) and ", ".join(config.config_names()) in str(e.value)


# --------------------------------------------------------------------------- installed into a venv


def _can_build_without_isolation() -> bool:
    """``pip install --no-build-isolation`` needs setuptools >= 64 with bdist_wheel (>= 70.1,
    or the wheel package): requirements.txt pins one."""
    try:
        version = tuple(int(x) for x in importlib.metadata.version("setuptools").split(".")[:2])
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        importlib.metadata.version("wheel")
        has_wheel = True
    except importlib.metadata.PackageNotFoundError:
        has_wheel = False
    return version >= (70, 1) or (version >= (64, 0) and has_wheel)


def _install(tmp, editable: bool) -> dict[str, str]:
    """A copy of the package's sources (so that the build leaves nothing in the checkout),
    a venv that sees this environment's packages, and the package installed into it."""
    if not _can_build_without_isolation():
        pytest.skip("setuptools >= 70.1 is needed to build without isolation (pip install -r requirements.txt)")
    src, venv = tmp / "src", tmp / "venv"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for name in ("rsc_jax", "configs"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    python = str(venv / "bin" / "python")
    p = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        *(["-e"] if editable else []), str(src)], capture_output=True, text=True, timeout=300,
                       cwd=str(tmp))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["XLA_FLAGS"] = xla_flags()
    env["JAX_PLATFORMS"] = "cpu"
    return {"python": python, "script": str(venv / "bin" / "rsc-jax"), "src": str(src),
            "cwd": str(elsewhere), "env": env}


def _run(inst: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=inst["cwd"], env=inst["env"],
                          timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return _install(tmp_path_factory.mktemp("pip_install"), editable=False)


def test_installed_package_runs_from_another_folder(installed):
    """``pip install .``: the version through importlib.metadata, the bundled configs inside the
    package, and the CLI (console script and ``python -m``) finding them by name and by path."""
    py, cwd = installed["python"], installed["cwd"]
    p = _run(installed, py, "-c", "import importlib.metadata, rsc_jax, rsc_jax.config as c; "
             "print(rsc_jax.__version__, importlib.metadata.version('rsc-jax'), rsc_jax.__file__, c.CONFIG_DIR)")
    assert p.returncode == 0, p.stderr
    version, meta_version, init, config_dir = p.stdout.split()
    assert version == meta_version == rsc_jax.__version__
    assert not init.startswith(ROOT) and "site-packages" in init, init
    assert config_dir == os.path.join(os.path.dirname(init), "configs")
    bundled = [f for f in os.listdir(config_dir) if f.endswith(".py") and f != "__init__.py"]
    assert "claims.py" in bundled                             # the claims file ships too, but is no config
    assert sorted(f[:-3] for f in bundled if f != "claims.py") == config.config_names()
    with open(os.path.join(cwd, "mine.py"), "w") as f:       # a user's own config, built on a bundled one
        f.write("from rsc_jax import config\n\n\ndef get_config():\n"
                "    c = config.from_file('digits')\n    c.train.epochs = 3\n    return c\n")
    digits = config.from_file("digits")
    for i, (cmd, value, epochs) in enumerate([([installed["script"]], "digits", 15),
                                              ([py, "-m", "rsc_jax.main"], "configs/digits.py", 15),
                                              ([installed["script"]], os.path.join(cwd, "mine.py"), 3),
                                              ([installed["script"]], "mine.py", 3)]):
        wd = os.path.join(cwd, f"wd{i}")
        p = _run(installed, *cmd, f"--config={value}", f"--workdir={wd}", "--mode=report", "--progress=false")
        assert p.returncode == 0, (value, p.stderr[-3000:])
        with open(os.path.join(wd, "config.json")) as f:
            got = json.load(f)
        # digits' own values (the run may record presets it applied, e.g. attack.quick's)
        assert (got["dataset"]["name"], got["certify"]["num_examples"], got["certify"]["radii"],
                got["attack"]["quick"], got["train"]["epochs"]) == \
            ("digits", digits.certify.num_examples, list(digits.certify.radii), True, epochs), value
        assert digits.certify.num_examples != config.base().certify.num_examples
        with open(os.path.join(wd, "report.json")) as f:
            assert json.load(f)["package_version"] == rsc_jax.__version__


def test_installed_cli_names_the_bundled_configs_for_an_unknown_one(installed):
    for args in (["--config=nosuch"], ["--config", "nosuch"]):
        p = _run(installed, installed["script"], *args, "--workdir=wd")
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "'nosuch'" in lines[0], p.stderr
        assert all(name in lines[0] for name in config.config_names()), lines[0]
    assert not os.path.exists(os.path.join(installed["cwd"], "wd"))


def test_editable_install_uses_the_checkout_configs(tmp_path):
    inst = _install(tmp_path, editable=True)
    p = _run(inst, inst["python"], "-c", "import rsc_jax.config as c; print(c.CONFIG_DIR)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == os.path.join(inst["src"], "configs")
    p = _run(inst, inst["script"], "--config=nosuch", "--workdir=wd")
    assert p.returncode != 0 and "bundled configs: " in p.stderr and "Traceback" not in p.stderr, p.stderr


# --------------------------------------------------------------------------- the version in results


def test_export_records_the_version_and_exports_without_it_load(tmp_path):
    cc = classifier.classifier_config(
        model={"name": "convnet", "spiking": True, "overrides": {"width": 0.25}},
        coding_cfg={"method": "rsc2", "sigma": 0.2, "T": 2},
        dataset={"name": "npz", "num_classes": 3, "image_shape": [5, 5, 1], "mean": [0.5], "std": [0.25]})
    assert cc["package_version"] == rsc_jax.__version__
    path = export.save(str(tmp_path / "export"), classifier.Classifier(cc, classifier.init_variables(
        cc, jax.random.key(0))))
    with open(os.path.join(path, "config.json")) as f:
        stored = json.load(f)
    assert stored["package_version"] == rsc_jax.__version__
    new = export.load(path)
    del stored["package_version"]                  # as written before the field existed
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(stored, f)
    old = export.load(path)
    assert "package_version" not in old.config and old.config == {k: v for k, v in new.config.items()
                                                                  if k != "package_version"}
    jax.tree.map(np.testing.assert_array_equal, old.params, new.params)


def test_report_records_the_version(tmp_path):
    r = report.build(str(tmp_path), {"seed": 0})
    with open(tmp_path / "report.json") as f:
        assert json.load(f)["package_version"] == r["package_version"] == rsc_jax.__version__
