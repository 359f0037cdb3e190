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

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/digits.py", "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, exports and reports.")
_MODE = flags.DEFINE_list("mode", ["all"], "What to run: one of train, evaluate, export, attack, certify, "
                          "report, all, or several in order, comma-separated (e.g. train,evaluate).")
_EXPORT = flags.DEFINE_string("export", None, "Export to evaluate/attack/certify (default WORKDIR/export).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show tqdm progress bars.")
# Multi-host start-up (auto-detected on TPU pods and SLURM when these are not given).
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
_DIST_TIMEOUT = flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for the coordinator.")
_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", None,
                                    "CPU devices per process (testing multi-device code on one machine).")


EXIT_PREEMPTED = 143   # exit status after a graceful SIGTERM stop (checkpoint saved)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    import jax
    from rsc_jax import classifier, data, export, parallel, pipeline, train, validation
    if _CPU_DEVICES.value:
        jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)   # before any backend use
    try:
        parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                            timeout_s=_DIST_TIMEOUT.value)
    except parallel.DistributedError as e:
        sys.exit(f"error: {e}")
    logging.info("process %d of %d, local devices %s", jax.process_index(), jax.process_count(),
                 jax.local_devices())
    try:
        r = pipeline.run(_CONFIG.value, _WORKDIR.value, ",".join(_MODE.value), export_path=_EXPORT.value, progress=_PROGRESS.value)
    except (validation.ConfigError, data.DataError, export.ExportError, classifier.InputError,
            pipeline.WorkdirError, train.NonFiniteError, parallel.DistributedError) as e:
        logging.error("%s", e)
        sys.exit(f"error: {e}")
    except train.Preempted as e:   # SIGTERM: checkpoint saved; 128 + 15 like a SIGTERM exit
        logging.warning("%s", e)
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    if r.get("evaluation"):
        print(f"clean test accuracy: {r['evaluation']['accuracy']:.4f}  (report: "
              f"{os.path.join(os.path.abspath(_WORKDIR.value), 'report.md')})")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with an unknown ``--config.FIELD`` turned into one clear line.

    ml_collections raises a bare ``AttributeError``/``KeyError`` (a stack trace) for a
    misspelt field; absl's own flag errors (wrong types) already print one line."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:
        import re
        text = str(e)
        names = re.findall(r"\w+", text.split("Did you mean")[0])
        hint = re.search(r'Did you mean "([^"]+)"', text)
        bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        culprit = next((a for a in bad if names and a.split(".")[-1] == names[0]
                        or names and f".{names[0]}." in a), bad[0] if bad else "--config")
        sys.exit(f"error: unknown config field {culprit} ({names[0] if names else text!r} does not exist"
                 + (f"; did you mean {hint.group(1)!r}?)" if hint else ")"))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
