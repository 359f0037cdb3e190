r"""Command line: train, evaluate, export, attack, certify and report RSC-SNNs.

    python -m rsc_jax.main --config=configs/digits.py --workdir=runs/digits \
        [--mode=all] [--config.coding.sigma=0.3] [--export=PATH]

Modes: ``train`` (resumes from WORKDIR/checkpoints, writes WORKDIR/export), ``evaluate``
(clean accuracy of the export), ``export`` (re-export the newest checkpoint), ``attack``,
``certify``, ``report`` (report.json and report.md from the results present), and
``all`` (everything, in that order).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/digits.py", "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, exports and reports.")
_MODE = flags.DEFINE_enum("mode", "all", ["train", "evaluate", "export", "attack", "certify", "report", "all"],
                          "What to run.")
_EXPORT = flags.DEFINE_string("export", None, "Export to evaluate/attack/certify (default WORKDIR/export).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show tqdm progress bars.")


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
    from rsc_jax import certify, coding, robustness
    from rsc_jax import config as cfglib
    cfglib.validate(cfg)
    try:
        certify.validate_config(cfg.certify)
        robustness.validate_config(cfg.attack)
    except ValueError as e:
        raise cfglib.ConfigError(str(e)) from e
    n = cfg.train.num_devices or jax.device_count()
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
    """The modes ``mode`` stands for; ``all`` certifies only Gaussian-coded spiking runs."""
    from rsc_jax import coding
    if mode != "all":
        return (mode,)
    modes = ["train"]
    if cfg.model.spiking and cfg.attack.transfer and not cfg.attack.transfer_from:
        modes.append("train_ann_twin")
    modes += ["evaluate", "attack"]
    if cfg.coding.method in coding.GAUSSIAN_METHODS:
        modes.append("certify")
    return (*modes, "report")


def run(cfg: Any, workdir: str, mode: str, *, export_path: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Runs ``mode`` (see the module docstring); returns the report when one is written."""
    import jax
    from rsc_jax import data, export, parallel, report, train

    modes = plan(cfg, mode)
    validate_all(cfg, modes)
    workdir = check_workdir(workdir)
    logging.info("process %d of %d, local devices %s", jax.process_index(), jax.process_count(),
                 jax.local_devices())
    mesh = parallel.make_mesh(cfg.train.num_devices or None)
    export_path = export_path or os.path.join(workdir, "export")
    run_config = cfg.to_dict()
    report.write_json(os.path.join(workdir, "config.json"), run_config)
    ds = None
    if any(m in ("train", "train_ann_twin", "evaluate", "export", "attack", "certify") for m in modes):
        ds = data.load(cfg)
    for m in modes:
        if m == "train":
            clf, summary = train.train(cfg, ds, workdir, mesh=mesh, progress=progress)
            export.save(export_path, clf)
            report.write_json(os.path.join(workdir, "train_summary.json"), summary)
        elif m == "train_ann_twin":
            twin_dir = os.path.join(workdir, ANN_TWIN_DIR)
            clf, summary = train.train(train.ann_twin_config(cfg), ds, twin_dir, mesh=mesh, progress=progress)
            export.save(os.path.join(twin_dir, "export"), clf)
        elif m == "export":
            clf, _ = train.train(cfg.copy_and_resolve_references(), ds, workdir, mesh=mesh, progress=progress)
            export.save(export_path, clf)
        elif m == "evaluate":
            clf = export.load(export_path)
            x, y = data.test_arrays(ds)
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
                if os.path.isdir(src):
                    transfer = export.load(src)
                else:
                    logging.warning("no transfer source at %s: the transfer attack is skipped", src)
            x, y = data.test_arrays(ds)
            robustness.run(clf, x, y, cfg.attack, workdir=workdir, mesh=mesh, transfer=transfer, progress=progress)
        elif m == "certify":
            from rsc_jax import certify
            clf = export.load(export_path)
            x, y = data.test_arrays(ds)
            r = certify.run(clf, x, y, cfg.certify, workdir=workdir, mesh=mesh, progress=progress)
            logging.info("certified accuracy %s at radii %s", r["certified_accuracy"], r["radii"])
        elif m == "report":
            from rsc_jax import certify, robustness
            return report.build(workdir, run_config, {"certification": certify.markdown,
                                                      "robustness": robustness.markdown})
        else:
            raise NotImplementedError(f"--mode={m} is not available yet")
    return {}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    from rsc_jax import config as cfglib
    from rsc_jax import data, export
    try:
        r = run(_CONFIG.value, _WORKDIR.value, _MODE.value, export_path=_EXPORT.value, progress=_PROGRESS.value)
    except (cfglib.ConfigError, data.DataError, export.ExportError, WorkdirError) as e:
        logging.error("%s", e)
        sys.exit(f"error: {e}")
    if r.get("evaluation"):
        print(f"clean test accuracy: {r['evaluation']['accuracy']:.4f}  (report: "
              f"{os.path.join(os.path.abspath(_WORKDIR.value), 'report.md')})")


if __name__ == "__main__":
    app.run(main)
