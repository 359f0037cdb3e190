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
import time
from typing import Any, Callable

import jax

from rsc_jax import (backend, classifier, coding, config, config_checks, data, distill, evaluators, export,
                     parallel, report, train)
from rsc_jax.validation import ConfigError

ANN_TWIN_DIR = "ann_twin"
log = logging.getLogger(__name__)


class WorkdirError(ValueError):
    """The workdir cannot be used."""


def check_workdir(workdir: str) -> str:
    """``workdir`` as an absolute path, refused (one line) when it is a file, is not
    writable or cannot be created; creates nothing (``make_workdir`` does, once the run has
    passed every check, so that a refused run leaves no new folder)."""
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir):
        if not os.path.isdir(workdir):
            raise WorkdirError(f"--workdir={workdir!r} is a file, not a directory")
        if not os.access(workdir, os.W_OK | os.X_OK):
            raise WorkdirError(f"--workdir={workdir!r} is not writable")
        return workdir
    parent = os.path.dirname(workdir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise WorkdirError(f"--workdir={workdir!r} cannot be created: {parent!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WorkdirError(f"--workdir={workdir!r} cannot be created: {parent!r} is not writable")
    return workdir


def make_workdir(workdir: str) -> str:
    """Creates the (checked) ``workdir``."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"--workdir={workdir!r} cannot be created: {e.strerror}") from e
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
    _clf: list = dataclasses.field(default_factory=list)

    def test_arrays(self) -> tuple[Any, Any]:
        """The test images and labels, read once for every mode that needs them."""
        if not self._test:
            self._test.extend(data.test_arrays(self.ds))
        return self._test[0], self._test[1]

    def classifier(self) -> classifier.Classifier:
        """The export at ``export_path``, loaded once for every mode that uses it."""
        if not self._clf:
            self._clf.append(export.load(self.export_path))
        return self._clf[0]

    def train(self, cfg: Any, workdir: str) -> tuple[classifier.Classifier, dict[str, Any]]:
        if cfg.distill.enabled:    # E-RSCT: resolve/train the teacher, then distil
            return distill.train_student(cfg, self.ds, workdir, mesh=self.mesh, progress=self.progress)
        return train.train(cfg, self.ds, workdir, mesh=self.mesh, progress=self.progress)


# Each mode returns its one-line summary and the file it wrote: ``(text, path)``.
Summary = tuple[str, str]


def _trained(summary: dict[str, Any]) -> str:
    final = summary.get("final")
    if not final:
        return f"already trained ({summary['steps']} steps)"
    resumed = f", resumed from step {summary['resumed_from']}" if summary.get("resumed_from") else ""
    return (f"{summary['steps']} steps ({summary['seconds']:.0f} s{resumed}): loss {final['loss']:.3f}, "
            f"training accuracy {final['accuracy']:.3f}")


def _train(r: Run) -> Summary:
    clf, summary = r.train(r.cfg, r.workdir)
    export.save(r.export_path, clf)
    report.write_json(report.path(r.workdir, "train"), summary)
    return _trained(summary), r.export_path


def _train_ann_twin(r: Run) -> Summary:
    twin_dir = os.path.join(r.workdir, ANN_TWIN_DIR)
    clf, summary = train.train(train.ann_twin_config(r.cfg), r.ds, twin_dir, mesh=r.mesh, progress=r.progress,
                               desc="train ANN twin")
    export.save(os.path.join(twin_dir, "export"), clf)
    return _trained(summary), os.path.join(twin_dir, "export")


def _export(r: Run) -> Summary:
    # An unfinished run goes on with its own loss; a finished one only re-exports.
    clf, summary = r.train(r.cfg.copy_and_resolve_references(), r.workdir)
    export.save(r.export_path, clf)
    return f"exported step {summary['steps']} of {summary['total_steps']}", r.export_path


def _evaluate(r: Run) -> Summary:
    res = evaluators.get("clean")(r.classifier(), *r.test_arrays(), r.cfg.eval, workdir=r.workdir,
                                  mesh=r.mesh, progress=r.progress, seed=r.cfg.seed, source=r.export_path)
    log.info("clean test accuracy %.4f (1 draw), %.4f (%d draws averaged)", res["accuracy"],
                 res[f"accuracy_avg{r.cfg.eval.draws}"], r.cfg.eval.draws)
    return (f"clean accuracy {res['accuracy']:.4f} (1 draw) / {res[f'accuracy_avg{r.cfg.eval.draws}']:.4f} "
            f"({r.cfg.eval.draws} draws)", report.path(r.workdir, "evaluation"))


def transfer_source_path(cfg: Any, workdir: str, export_path: str) -> str:
    """Where the transfer attack's source export is: ``attack.transfer_from``; else the
    E-RSCT teacher; else the ANN twin of the run the export comes from
    (``RUN/ann_twin/export`` beside ``RUN/export``, so an export evaluated in another
    workdir keeps its twin), then ``WORKDIR/ann_twin/export``."""
    if cfg.attack.transfer_from:
        return cfg.attack.transfer_from
    if cfg.distill.enabled:                                 # the teacher is the ANN twin
        beside = os.path.join(os.path.dirname(os.path.abspath(export_path)), distill.TEACHER_DIR, "export")
        own = not cfg.distill.teacher and os.path.isdir(beside)
        return beside if own else distill.teacher_export_path(cfg, workdir)
    beside = os.path.join(os.path.dirname(os.path.abspath(export_path)), ANN_TWIN_DIR, "export")
    return beside if os.path.isdir(beside) else os.path.join(workdir, ANN_TWIN_DIR, "export")


def _transfer_source(r: Run) -> classifier.Classifier | None:
    if not r.cfg.attack.transfer:
        return None
    src = transfer_source_path(r.cfg, r.workdir, r.export_path)
    if os.path.isdir(src):
        log.info("transfer-attack source: %s", src)
        return export.load(src)
    log.warning("no transfer source at %s: the transfer attack is skipped (point "
                    "--config.attack.transfer_from=PATH at an export, e.g. an ANN twin's, or run --mode=all, which "
                    "trains one; --config.attack.transfer=False turns the attack off)", src)
    return None


def _attack(r: Run) -> Summary:
    transfer = _transfer_source(r)
    res = evaluators.get("robustness")(r.classifier(), *r.test_arrays(), r.cfg.attack, workdir=r.workdir,
                                       mesh=r.mesh, transfer=transfer, progress=r.progress,
                                       source=r.export_path)
    flagged = sum(c["status"] != "pass" for c in res["checks"])
    checks = f"{flagged} gradient-masking check(s) FLAGGED" if flagged else "gradient-masking checks pass"
    if res["worst_case"]:
        w = res["worst_case"][-1]
        text = (f"worst case of {len(w['attacks'])} l_inf attacks at {w['eps_255']:g}/255: accuracy "
                f"{w['acc_single']:.3f} (1 draw) / {w['acc_avg']:.3f} (averaged); {checks}")
    else:
        text = f"{len(res['results'])} attack settings on {res['n_examples']} images; {checks}"
    if r.cfg.attack.convergence or r.cfg.attack.doubled_budget:
        conv = evaluators.get("convergence")(r.classifier(), *r.test_arrays(), r.cfg.attack, workdir=r.workdir,
                                             mesh=r.mesh, progress=r.progress, source=r.export_path, baseline=res,
                                             transfer=transfer)
        flagged = [c["name"] for c in conv["checks"] if c["status"] != "pass"]
        text += f"; convergence {'FLAGGED: ' + ', '.join(flagged) if flagged else 'checks pass'}"
    return text, report.path(r.workdir, "robustness")


def _certify(r: Run) -> Summary:
    res = evaluators.get("certification")(r.classifier(), *r.test_arrays(), r.cfg.certify,
                                          workdir=r.workdir, mesh=r.mesh, progress=r.progress,
                                          source=r.export_path)
    log.info("certified accuracy %s at radii %s", res["certified_accuracy"], res["radii"])
    pairs = [(rad, a) for rad, a in zip(res["radii"], res["certified_accuracy"]) if rad > 0]
    at = ([p for p in pairs if p[0] in (0.1, 0.25, 0.5)] or pairs)[:2]
    text = (f"certified accuracy {' / '.join(f'{a:.3f}' for _, a in at)} at l_2 radius "
            f"{' / '.join(f'{rad:g}' for rad, _ in at)} ({res['num_examples']} images, n = {res['settings']['n']})"
            if at else f"{res['num_examples']} images certified (n = {res['settings']['n']})")
    return text, report.path(r.workdir, "certification")


def _report(workdir: str, run_config: dict[str, Any]) -> tuple[dict[str, Any], Summary]:
    rep = report.build(workdir, run_config)
    parts = [k for _, k, _ in report.SECTIONS if k in rep]
    return rep, (f"report of {', '.join(parts) or 'nothing yet'}", os.path.join(workdir, "report.md"))


def stage_title(cfg: Any, mode: str) -> str:
    """The header line of one stage, e.g. ``train ANN twin (transfer-attack source)``."""
    c = cfg.coding
    coded = c.method + (f" sigma {c.sigma:g}" if coding.get(c.method).gaussian else "") + f", T {c.T}"
    net = f"{'spiking' if cfg.model.spiking else 'ANN'} {cfg.model.name}"
    return {
        "train": f"train {net} ({coded}; {cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''}"
                 + ("; E-RSCT, teacher first" if cfg.distill.enabled else "") + ")",
        "train_ann_twin": "train ANN twin (transfer-attack source)",
        "export": "export the newest checkpoint",
        "evaluate": f"evaluate clean accuracy (1 draw and {cfg.eval.draws} averaged)",
        "attack": f"attack ({evaluators.robustness.preset(cfg.attack)} preset)",
        "certify": f"certify (randomized smoothing, n = {cfg.certify.n})",
        "report": "report",
    }[mode]


def shown(path: str) -> str:
    """``path`` relative to the current folder when inside it (as a user would type it)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def final_line(done: dict[str, Summary], seconds: float) -> str:
    """``done in T: <headline> -> <path>``: the clean accuracy (when evaluated) and the
    report (when written), else the last stage's summary and file."""
    t = f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"
    text, path = list(done.values())[-1]
    if "report" in done:
        text, path = done["evaluate"][0] if "evaluate" in done else text, done["report"][1]
    return f"done in {t}: {text} -> {shown(path)}"


MODES: dict[str, Callable[[Run], Summary]] = {
    "train": _train, "train_ann_twin": _train_ann_twin, "export": _export, "evaluate": _evaluate,
    "attack": _attack, "certify": _certify,
}


def recorded_config(cfg: Any) -> dict[str, Any]:
    """The config as it runs, for config.json and report.json: the attack section with its
    preset applied (``attack.quick``), so no configured value that did not run is shown."""
    out = cfg.to_dict()
    out["attack"] = evaluators.robustness.effective_config(cfg.attack).to_dict()
    return out


def check_matches_export(cfg: Any, exported: dict[str, Any], path: str) -> None:
    """The config must describe the model it evaluates: an export is coded as it was trained.

    Refuses (one line) a ``config.model``/``config.coding`` field that differs from the
    export's, so that the workdir never records one value while another is used
    (sigma only for the codings that draw Gaussian noise; the others ignore it)."""
    model, cod = exported["model"], exported["coding"]
    fields = [("model.name", cfg.model.name, model["name"]), ("model.spiking", cfg.model.spiking, model["spiking"]),
              ("coding.method", cfg.coding.method, cod["method"]), ("coding.T", cfg.coding.T, cod["T"])]
    if coding.get(cod["method"]).gaussian:
        fields.append(("coding.sigma", float(cfg.coding.sigma), float(cod["sigma"])))
    for field, ours, theirs in fields:
        if ours != theirs:
            raise ConfigError(
                f"config.{field}={ours!r} is not allowed; the export {path!r} was trained with {theirs!r} and is "
                f"evaluated as it was trained: pass --config.{field}={theirs!r} (every differing field: "
                + ", ".join(f"{f}={t!r}" for f, o, t in fields if o != t) + ")")


def _value(v: Any) -> str:
    return "(" + ",".join(_value(x) for x in v) + ")" if isinstance(v, (tuple, list)) else f"{v:g}" \
        if isinstance(v, float) else str(v)


NEEDS_DATA = ("train", "train_ann_twin", "evaluate", "export", "attack", "certify")


def apply_quick_preset(cfg: Any, explicit: Any = ()) -> tuple[Any, list[str]]:
    """``cfg`` with the quick attack preset resolved around the fields set explicitly
    (``explicit``: ``attack.FIELD`` names, the command line's overrides; explicit
    settings win, ``robustness.effective_config``), and the names of the fields it left;
    ``cfg`` itself when it leaves none."""
    kept = evaluators.robustness.quick_kept(cfg.attack, explicit)
    if not kept:
        return cfg, []
    out = cfg.copy_and_resolve_references()
    for k, v in evaluators.robustness.effective_config(cfg.attack, explicit).items():
        out.attack[k] = v
    return out, kept


def run(cfg: Any, workdir: str, mode: str, *, export_path: str | None = None, progress: bool = True,
        say: Callable[[str], None] | None = None, started: Callable[[str], None] | None = None,
        explicit: Any = ()) -> dict[str, Any]:
    """Runs ``mode`` (see the module docstring); returns the report when one is written.

    ``say`` gets each stage's header (``[i/n] title``), its one-line summary (when there
    are several stages) and a final ``done in ...`` line; ``started`` gets the workdir
    once the run has passed every check (and an existing export to be used has loaded),
    just before ``config.json`` is written: a refused or failed start changes nothing
    in the workdir (nor creates it). The command line prints the lines and opens its log
    file there. ``explicit`` names the config fields given explicitly (``attack.FIELD``,
    the command line's overrides): the quick attack preset does not cap them
    (``apply_quick_preset``; ``say`` gets one line naming them).
    """
    t_start = time.time()
    cfg, kept = apply_quick_preset(cfg, explicit)
    modes = plan(cfg, mode)
    config_checks.validate(cfg, modes)
    workdir = check_workdir(workdir)
    mesh = parallel.make_mesh(cfg.train.num_devices or None, cfg.train.model_axis)
    export_path = export_path or os.path.join(workdir, "export")
    run_config = recorded_config(cfg)
    # Processes launched with different flags would hang in the first collective.
    parallel.check_same(json.dumps({"config": run_config, "mode": ",".join(modes), "workdir": workdir,
                                    "export": export_path}, sort_keys=True, default=str))
    ds = data.load(cfg) if set(NEEDS_DATA) & set(modes) else None   # data errors stop the run first
    if ds is not None and {"train", "train_ann_twin", "export"} & set(modes):
        # the model must fit the images and a batch the training set, before anything is written
        config_checks.check_model_input(train.classifier_config(cfg, ds))
        config_checks.check_training_set(cfg, len(ds.train))
    r = Run(cfg, workdir, export_path, mesh, ds, progress)
    if ds is not None and not {"train", "export"} & set(modes) and {"evaluate", "attack", "certify"} & set(modes):
        # An existing export must fit the config and the data (image shape, label range)
        # before anything compiles.
        exported = export.load_config(export_path)
        check_matches_export(cfg, exported, export_path)
        classifier.check_inputs(exported, *r.test_arrays(), where=export_path)
        r.classifier()   # the variables load before config.json is written: a damaged export changes nothing
    make_workdir(workdir)
    if started is not None:
        started(workdir)
    report.write_json(os.path.join(workdir, "config.json"), run_config)
    say = say or (lambda text: None)
    if kept:
        say(f"quick preset: {', '.join(f'attack.{k}={_value(cfg.attack[k])}' for k in kept)} kept as given "
            "(explicit settings win); the preset caps the other attack budgets")
    done: dict[str, Summary] = {}
    built: dict[str, Any] = {}
    with backend.matmul_precision(cfg.matmul_precision):
        for i, m in enumerate(modes, 1):
            say(f"[{i}/{len(modes)}] {stage_title(cfg, m)}")
            if m == "report":
                built, done[m] = _report(workdir, run_config)
            else:
                done[m] = MODES[m](r)
            if len(modes) > 1:
                say(f"      {done[m][0]} -> {shown(done[m][1])}")
    say(final_line(done, time.time() - t_start))
    return built
