"""The run pipeline behind the command line: validate, then train, evaluate, export,
attack, certify and report, in order.

``run(cfg, workdir, mode)`` is what ``python -m rsc_jax.main`` calls after parsing
flags; the sweep tool and tests call it directly. Each mode is one function of a
``Run`` (``MODES`` maps the mode name to it); nothing here parses flags.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable

import jax

from rsc_jax import (classifier, coding, config, config_checks, data, distill, evaluators, export, parallel,
                     report, train)
from rsc_jax.validation import ConfigError

ANN_TWIN_DIR = "ann_twin"


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


def plan(cfg: Any, mode: str) -> tuple[str, ...]:
    """The modes ``mode`` stands for; ``all`` certifies only Gaussian-coded spiking runs.

    E-RSCT runs (``distill.enabled``) train no separate ANN twin: the teacher (an ANN
    twin trained on clean data) is the transfer-attack source."""
    if mode != "all":
        modes = tuple(m.strip() for m in mode.split(",") if m.strip())
        bad = [m for m in modes if m not in config.MODES or (m == "all" and len(modes) > 1)]
        if bad or not modes:
            raise ConfigError(f"--mode={mode!r} is not allowed; give one of {list(config.MODES)} "
                              "or several of them (not 'all') separated by commas")
        return modes
    modes = ["train"]
    if cfg.model.spiking and cfg.attack.transfer and not cfg.attack.transfer_from and not cfg.distill.enabled:
        modes.append("train_ann_twin")
    modes += ["evaluate", "attack"]
    if cfg.coding.method in coding.CERTIFIABLE_METHODS:
        modes.append("certify")
    return (*modes, "report")


@dataclasses.dataclass
class Run:
    """What every mode of one run works with."""
    cfg: Any
    workdir: str
    export_path: str
    mesh: jax.sharding.Mesh
    ds: data.Dataset | None
    progress: bool
    _test: list = dataclasses.field(default_factory=list)

    def test_arrays(self) -> tuple[Any, Any]:
        """The test images and labels, read once for every mode that needs them."""
        if not self._test:
            self._test.extend(data.test_arrays(self.ds))
        return self._test[0], self._test[1]

    def train(self, cfg: Any, workdir: str) -> tuple[classifier.Classifier, dict[str, Any]]:
        if cfg.distill.enabled:    # E-RSCT: resolve/train the teacher, then distil
            return distill.train_student(cfg, self.ds, workdir, mesh=self.mesh, progress=self.progress)
        return train.train(cfg, self.ds, workdir, mesh=self.mesh, progress=self.progress)


def _train(r: Run) -> None:
    clf, summary = r.train(r.cfg, r.workdir)
    export.save(r.export_path, clf)
    report.write_json(report.path(r.workdir, "train"), summary)


def _train_ann_twin(r: Run) -> None:
    twin_dir = os.path.join(r.workdir, ANN_TWIN_DIR)
    clf, _ = train.train(train.ann_twin_config(r.cfg), r.ds, twin_dir, mesh=r.mesh, progress=r.progress)
    export.save(os.path.join(twin_dir, "export"), clf)


def _export(r: Run) -> None:
    # An unfinished run goes on with its own loss; a finished one only re-exports.
    clf, _ = r.train(r.cfg.copy_and_resolve_references(), r.workdir)
    export.save(r.export_path, clf)


def _evaluate(r: Run) -> None:
    res = evaluators.get("clean")(export.load(r.export_path), *r.test_arrays(), r.cfg.eval, workdir=r.workdir,
                                  mesh=r.mesh, progress=r.progress, seed=r.cfg.seed)
    logging.info("clean test accuracy %.4f (1 draw), %.4f (%d draws averaged)", res["accuracy"],
                 res[f"accuracy_avg{r.cfg.eval.draws}"], r.cfg.eval.draws)


def _transfer_source(r: Run) -> classifier.Classifier | None:
    if not r.cfg.attack.transfer:
        return None
    src = r.cfg.attack.transfer_from or os.path.join(r.workdir, ANN_TWIN_DIR, "export")
    if r.cfg.distill.enabled and not r.cfg.attack.transfer_from:
        src = distill.teacher_export_path(r.cfg, r.workdir)   # the teacher is the ANN twin
    if os.path.isdir(src):
        return export.load(src)
    logging.warning("no transfer source at %s: the transfer attack is skipped", src)
    return None


def _attack(r: Run) -> None:
    evaluators.get("robustness")(export.load(r.export_path), *r.test_arrays(), r.cfg.attack, workdir=r.workdir,
                                 mesh=r.mesh, transfer=_transfer_source(r), progress=r.progress)


def _certify(r: Run) -> None:
    res = evaluators.get("certification")(export.load(r.export_path), *r.test_arrays(), r.cfg.certify,
                                          workdir=r.workdir, mesh=r.mesh, progress=r.progress)
    logging.info("certified accuracy %s at radii %s", res["certified_accuracy"], res["radii"])


MODES: dict[str, Callable[[Run], None]] = {
    "train": _train, "train_ann_twin": _train_ann_twin, "export": _export, "evaluate": _evaluate,
    "attack": _attack, "certify": _certify,
}
NEEDS_DATA = ("train", "train_ann_twin", "evaluate", "export", "attack", "certify")


def run(cfg: Any, workdir: str, mode: str, *, export_path: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Runs ``mode`` (see the module docstring); returns the report when one is written."""
    modes = plan(cfg, mode)
    config_checks.validate(cfg, modes)
    workdir = check_workdir(workdir)
    mesh = parallel.make_mesh(cfg.train.num_devices or None, cfg.train.model_axis)
    export_path = export_path or os.path.join(workdir, "export")
    run_config = cfg.to_dict()
    # Processes launched with different flags would hang in the first collective.
    parallel.check_same(json.dumps({"config": run_config, "mode": ",".join(modes), "workdir": workdir,
                                    "export": export_path}, sort_keys=True, default=str))
    ds = data.load(cfg) if set(NEEDS_DATA) & set(modes) else None   # data errors stop the run first
    r = Run(cfg, workdir, export_path, mesh, ds, progress)
    if ds is not None and not {"train", "export"} & set(modes) and {"evaluate", "attack", "certify"} & set(modes):
        # An existing export must fit the data (image shape, label range) before compiling.
        classifier.check_inputs(export.load_config(export_path), *r.test_arrays(), where=export_path)
    report.write_json(os.path.join(workdir, "config.json"), run_config)
    for m in modes:
        if m == "report":
            return report.build(workdir, run_config)
        MODES[m](r)
    return {}
