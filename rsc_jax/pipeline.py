"""The run pipeline behind the command line: validate, then train, evaluate, export,
attack, certify and report, in order.

``run(cfg, workdir, mode)`` is what ``python -m rsc_jax.main`` calls after parsing
flags; the sweep tool and tests call it directly. Nothing here parses flags.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any


class WorkdirError(ValueError):
    """The workdir cannot be used."""


def check_workdir(workdir: str) -> str:
    """Creates ``workdir`` if needed; refuses a file or a directory we cannot write."""
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir!r} is a file, not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"--workdir={workdir!r} cannot be created: {e.strerror}") from e
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise WorkdirError(f"--workdir={workdir!r} is not writable")
    return workdir


ANN_TWIN_DIR = "ann_twin"


def validate_all(cfg: Any, modes: tuple[str, ...]) -> None:
    """Every section of the config that ``modes`` use, before anything is compiled."""
    import jax
    from rsc_jax import certify, coding, distill, robustness
    from rsc_jax import config as cfglib
    cfglib.validate(cfg)
    try:
        certify.validate_config(cfg.certify)
        robustness.validate_config(cfg.attack)
        distill.validate_config(cfg.distill)
    except ValueError as e:
        raise cfglib.ConfigError(str(e)) from e
    n = (cfg.train.num_devices or jax.device_count()) // cfg.train.model_axis
    for field, v in (("attack.batch_size", cfg.attack.batch_size), ("certify.image_batch", cfg.certify.image_batch)):
        if v % n:
            raise cfglib.ConfigError(f"config.{field}={v} is not allowed; it must be divisible by the device "
                                     f"count {n}")
    if cfg.attack.transfer_from and not os.path.isfile(os.path.join(cfg.attack.transfer_from, "config.json")):
        raise cfglib.ConfigError(f"config.attack.transfer_from={cfg.attack.transfer_from!r} is not allowed; "
                                 "it must be an export directory (with config.json)")
    if "certify" in modes and cfg.coding.method not in coding.GAUSSIAN_METHODS:
        raise cfglib.ConfigError(
            f"config.coding.method={cfg.coding.method!r} has no Gaussian certificate; --mode=certify needs "
            f"one of {list(coding.GAUSSIAN_METHODS)} (Poisson and direct coding cannot be certified)")


def plan(cfg: Any, mode: str) -> tuple[str, ...]:
    """The modes ``mode`` stands for; ``all`` certifies only Gaussian-coded spiking runs.

    E-RSCT runs (``distill.enabled``) train no separate ANN twin: the teacher (an ANN
    twin trained on clean data) is the transfer-attack source."""
    from rsc_jax import coding
    from rsc_jax import config as cfglib
    if mode != "all":
        modes = tuple(m.strip() for m in mode.split(",") if m.strip())
        bad = [m for m in modes if m not in cfglib.MODES or (m == "all" and len(modes) > 1)]
        if bad or not modes:
            raise cfglib.ConfigError(f"--mode={mode!r} is not allowed; give one of {list(cfglib.MODES)} "
                                     "or several of them (not 'all') separated by commas")
        return modes
    modes = ["train"]
    if cfg.model.spiking and cfg.attack.transfer and not cfg.attack.transfer_from and not cfg.distill.enabled:
        modes.append("train_ann_twin")
    modes += ["evaluate", "attack"]
    if cfg.coding.method in coding.GAUSSIAN_METHODS:
        modes.append("certify")
    return (*modes, "report")


def run(cfg: Any, workdir: str, mode: str, *, export_path: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Runs ``mode`` (see the module docstring); returns the report when one is written."""
    from rsc_jax import data, export, parallel, report, train

    modes = plan(cfg, mode)
    validate_all(cfg, modes)
    mode = ",".join(modes)
    workdir = check_workdir(workdir)
    mesh = parallel.make_mesh(cfg.train.num_devices or None, cfg.train.model_axis)
    export_path = export_path or os.path.join(workdir, "export")
    run_config = cfg.to_dict()
    # Processes launched with different flags would hang in the first collective.
    parallel.check_same(json.dumps({"config": run_config, "mode": mode, "workdir": workdir,
                                    "export": export_path}, sort_keys=True, default=str))
    ds = None
    if any(m in ("train", "train_ann_twin", "evaluate", "export", "attack", "certify") for m in modes):
        ds = data.load(cfg)          # data errors stop the run before anything is written
    test_split: list = []          # the test arrays, read once for every mode that needs them

    def test_arrays():
        if not test_split:
            test_split.extend(data.test_arrays(ds))
        return test_split

    if ds is not None and not {"train", "export"} & set(modes) and {"evaluate", "attack", "certify"} & set(modes):
        # An existing export must fit the data (image shape, label range) before compiling.
        export.check_inputs(export.load_config(export_path), *test_arrays(), where=export_path)
    report.write_json(os.path.join(workdir, "config.json"), run_config)
    for m in modes:
        if m == "train":
            if cfg.distill.enabled:   # E-RSCT: resolve/train the teacher, then distil (distill.py)
                from rsc_jax import distill
                clf, summary = distill.train_student(cfg, ds, workdir, mesh=mesh, progress=progress)
            else:
                clf, summary = train.train(cfg, ds, workdir, mesh=mesh, progress=progress)
            export.save(export_path, clf)
            report.write_json(os.path.join(workdir, "train_summary.json"), summary)
        elif m == "train_ann_twin":
            twin_dir = os.path.join(workdir, ANN_TWIN_DIR)
            clf, summary = train.train(train.ann_twin_config(cfg), ds, twin_dir, mesh=mesh, progress=progress)
            export.save(os.path.join(twin_dir, "export"), clf)
        elif m == "export":
            if cfg.distill.enabled:   # an unfinished E-RSCT run must go on with its own loss
                from rsc_jax import distill
                clf, _ = distill.train_student(cfg, ds, workdir, mesh=mesh, progress=progress)
            else:
                clf, _ = train.train(cfg.copy_and_resolve_references(), ds, workdir, mesh=mesh, progress=progress)
            export.save(export_path, clf)
        elif m == "evaluate":
            clf = export.load(export_path)
            x, y = test_arrays()
            r = train.evaluate(clf, x, y, batch_size=cfg.eval.batch_size, draws=cfg.eval.draws, seed=cfg.seed,
                               mesh=mesh, progress=progress)
            report.write_json(os.path.join(workdir, "evaluation.json"), r)
            logging.info("clean test accuracy %.4f (1 draw), %.4f (%d draws averaged)", r["accuracy"],
                         r[f"accuracy_avg{cfg.eval.draws}"], cfg.eval.draws)
        elif m == "attack":
            from rsc_jax import robustness
            clf = export.load(export_path)
            transfer = None
            if cfg.attack.transfer:
                src = cfg.attack.transfer_from or os.path.join(workdir, ANN_TWIN_DIR, "export")
                if cfg.distill.enabled and not cfg.attack.transfer_from:
                    from rsc_jax import distill
                    src = distill.teacher_export_path(cfg, workdir)   # the teacher is the ANN twin
                if os.path.isdir(src):
                    transfer = export.load(src)
                else:
                    logging.warning("no transfer source at %s: the transfer attack is skipped", src)
            x, y = test_arrays()
            robustness.run(clf, x, y, cfg.attack, workdir=workdir, mesh=mesh, transfer=transfer, progress=progress)
        elif m == "certify":
            from rsc_jax import certify
            clf = export.load(export_path)
            x, y = test_arrays()
            r = certify.run(clf, x, y, cfg.certify, workdir=workdir, mesh=mesh, progress=progress)
            logging.info("certified accuracy %s at radii %s", r["certified_accuracy"], r["radii"])
        elif m == "report":
            from rsc_jax import certify, robustness
            return report.build(workdir, run_config, {"certification": certify.markdown,
                                                      "robustness": robustness.markdown})
        else:
            raise NotImplementedError(f"--mode={m} is not available yet")
    return {}


