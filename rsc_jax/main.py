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


def validate_all(cfg: Any) -> None:
    """Every section of the config, before anything is compiled."""
    from rsc_jax import config as cfglib
    cfglib.validate(cfg)


def run(cfg: Any, workdir: str, mode: str, *, export_path: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Runs ``mode`` (see the module docstring); returns the report when one is written."""
    import jax
    from rsc_jax import data, export, parallel, report, train

    validate_all(cfg)
    workdir = check_workdir(workdir)
    logging.info("process %d of %d, local devices %s", jax.process_index(), jax.process_count(),
                 jax.local_devices())
    mesh = parallel.make_mesh(cfg.train.num_devices or None)
    export_path = export_path or os.path.join(workdir, "export")
    run_config = cfg.to_dict()
    report.write_json(os.path.join(workdir, "config.json"), run_config)
    modes = ("train", "evaluate", "report") if mode == "all" else (mode,)
    ds = None
    if any(m in ("train", "evaluate", "export") for m in modes):
        ds = data.load(cfg)
    for m in modes:
        if m == "train":
            clf, summary = train.train(cfg, ds, workdir, mesh=mesh, progress=progress)
            export.save(export_path, clf)
            report.write_json(os.path.join(workdir, "train_summary.json"), summary)
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
        elif m == "report":
            return report.build(workdir, run_config)
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
