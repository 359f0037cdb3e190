r"""Command line: train, evaluate, export, attack, certify and report RSC-SNNs.

    python -m rsc_jax.main --config=configs/digits.py --workdir=runs/digits \
        [--mode=all] [--config.coding.sigma=0.3] [--export=PATH]

Modes: ``train`` (resumes from WORKDIR/checkpoints, writes WORKDIR/export), ``evaluate``
(clean accuracy of the export), ``export`` (re-export the newest checkpoint), ``attack``,
``certify``, ``report`` (report.json and report.md from the results present), and
``all`` (everything, in that order). ``--help`` lists them and every config field.

The terminal shows one header per stage (``[2/6] train ANN twin (transfer-attack
source)``), progress bars, one summary line per stage and a final ``done in ...`` line
naming the report; every library log line (absl, orbax, jax, ours) goes to
``WORKDIR/log.txt`` instead (``terminal``; absl's ``--verbosity=0`` or
``--alsologtostderr`` shows them again). Errors are one ``error: ...`` line (status 1);
SIGTERM / Ctrl-C during training save a checkpoint and exit 143 / 130; Ctrl-C anywhere
else exits 130 with one line.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from rsc_jax import config as rsc_config

# No default here: ml_collections parses a default (with the command line's overrides)
# while the flag is defined, at import, where a misspelt override cannot get its one-line
# error; ``parse_flags`` adds ``--config=digits`` when none is given.
DEFAULT_CONFIG = "digits"
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config (default: digits): a bundled one by name ("
    + ", ".join(rsc_config.config_names()) + ") or the path of a config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, exports and reports.")
_MODE = flags.DEFINE_list("mode", ["all"], "What to run: one of train, evaluate, export, attack, certify, "
                          "report, all, or several in order, comma-separated (e.g. train,evaluate).")
_EXPORT = flags.DEFINE_string("export", None, "Export to evaluate/attack/certify (default WORKDIR/export).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress: bars on a terminal, a plain line per 10 % "
                              "(step, loss, rate, ETA) when stderr is a file or pipe.")
# Multi-host start-up (auto-detected on TPU pods and SLURM when these are not given).
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
_DIST_TIMEOUT = flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for the coordinator.")
_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", None,
                                    "CPU devices per process (testing multi-device code on one machine).")


EXIT_PREEMPTED = 143   # exit status after a graceful SIGTERM stop (checkpoint saved)
EXIT_INTERRUPTED = 130   # after Ctrl-C (SIGINT): the checkpoint is saved when training


def _terminal_level() -> int | None:
    """The level absl's ``--verbosity`` / ``--alsologtostderr`` / ``--logtostderr`` ask
    the terminal to show (None: only this package's warnings, the default)."""
    f = flags.FLAGS
    if not (f["verbosity"].present or f.alsologtostderr or f.logtostderr):
        return None
    v = f.verbosity
    return {-3: logging.CRITICAL, -2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(
        v, logging.CRITICAL if v < -3 else logging.DEBUG - max(v - 1, 0))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    from rsc_jax import terminal
    terminal.setup(_terminal_level())   # every log line to WORKDIR/log.txt; the terminal shows stages
    terminal.watch_ctrl_c()
    try:
        _main(terminal)
    except KeyboardInterrupt:          # outside training (compiling, evaluating): one line, status 130
        terminal.exit_interrupted()


def _main(terminal) -> None:
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
    pid = jax.process_index()
    if jax.process_count() > 1:   # each host's terminal (or launcher log) says where it runs
        print(f"process {pid} of {jax.process_count()}, local devices {jax.local_devices()}", file=sys.stderr)
    header = (f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} python -m rsc_jax.main {' '.join(sys.argv[1:])}"
              f"  (pid {os.getpid()}, process {pid} of {jax.process_count()})")

    def started(workdir: str) -> None:
        name = terminal.LOG_FILE if pid == 0 else f"log.process{pid}.txt"
        terminal.open_log(workdir, header, name=name)

    try:
        pipeline.run(_CONFIG.value, _WORKDIR.value, ",".join(_MODE.value), export_path=_EXPORT.value,
                     progress=_PROGRESS.value, say=terminal.say if pid == 0 else None, started=started,
                     explicit=tuple(config_flags.get_override_values(flags.FLAGS["config"])))
    except (validation.ConfigError, data.DataError, export.ExportError, classifier.InputError,
            pipeline.WorkdirError, train.NonFiniteError, parallel.DistributedError) as e:
        logging.error("%s", e, extra=terminal.FILE_ONLY)   # in the log file; printed once, below
        sys.exit(f"error: {e}")
    except train.Preempted as e:   # SIGTERM / Ctrl-C in training: checkpoint saved; exit 128 + signal
        logging.warning("%s", e, extra=terminal.FILE_ONLY)
        kind = "interrupted" if e.exit_status == EXIT_INTERRUPTED else "preempted"
        print(f"{kind}: {e}", file=sys.stderr)
        sys.exit(e.exit_status)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, every error one ``error: ...`` line (status 1): an unknown
    ``--config.FIELD`` (ml_collections raises a bare ``AttributeError``/``KeyError``, a
    stack trace) names the fields it may mean; a value of the wrong type names the flag.
    ``--config.FIELD=16/255`` fractions are read as their float value (``_fractions``)."""
    if _HELP_FLAGS & set(argv[1:]):
        _help(argv)                   # prints the modes and the config fields, exits 0
    try:
        argv = _resolve_config_flag(argv)
        argv = [argv[0], *map(_fractions, argv[1:])]
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:         # a value of the wrong type: one line, not absl's "FATAL ... --helpfull"
        sys.exit(f"error: {e} (--help lists the flags and every config field with its value)")
    except (AttributeError, KeyError) as e:
        import re
        text = str(e)
        names = re.findall(r"\w+", text.split("Did you mean")[0])
        hint = re.search(r'Did you mean "([^"]+)"', text)
        bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        culprit = next((a for a in bad if names and a.split(".")[-1] == names[0]
                        or names and f".{names[0]}." in a), bad[0] if bad else "--config")
        near = _near_fields(culprit, names[0]) if names else []
        near = near or ([hint.group(1)] if hint else [])
        sys.exit(f"error: unknown config field {culprit} ({names[0] if names else text!r} does not exist"
                 + (f"; did you mean {_either(near)}?)" if near else ")"))


_NUMBERS = re.compile(r"[\s\d.eE+\-/(),\[\]]+")
_FRACTION = re.compile(r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*/\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)")


def _fractions(arg: str) -> str:
    """``--config.FIELD=16/255`` (or a tuple like ``(0,8/255,16/255)``): each fraction of
    plain numbers replaced by its float value, so eps values can be given as in the paper.
    Values with anything but numbers, ``/``, commas and brackets (paths) are left alone."""
    name, eq, value = arg.partition("=")
    if not (name.startswith("--config.") and eq and "/" in value and _NUMBERS.fullmatch(value)):
        return arg

    def div(m: re.Match) -> str:
        if float(m.group(2)) == 0:
            raise ValueError(f"{name}={value} divides by zero")
        return repr(float(m.group(1)) / float(m.group(2)))

    return f"{name}={_FRACTION.sub(div, value)}"


def _near_fields(flag: str, name: str) -> list[str]:
    """Fields of ``flag``'s section (``--config.SECTION.NAME``) that ``name`` is part of
    or close to (``eps`` -> eps_grid, strong_eps, sanity_eps, l2_eps_grid)."""
    import difflib
    parts = flag.split(".")
    base = rsc_config.base()
    section = parts[1] if len(parts) > 2 else None
    fields = list(base[section].keys()) if section in base and hasattr(base[section], "keys") else list(base.keys())
    if name not in parts[1:2] or section is None:
        parts_of = [f for f in fields if name in f.split("_") or (len(name) > 3 and name in f)]
    else:
        parts_of = []
    close = difflib.get_close_matches(name, fields, n=3)
    return list(dict.fromkeys(parts_of + close))[:5]


def _either(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _resolve_config_flag(argv: list[str]) -> list[str]:
    """``--config=NAME`` (a bundled config, from any folder) or ``--config=PATH``, turned into
    the file's absolute path for ml_collections (``config.resolve_file``); keeps its ``:ARG``.
    Without ``--config``, ``--config=digits`` (``DEFAULT_CONFIG``)."""
    out = list(argv)
    given = [a for a in out[1:out.index("--") if "--" in out else len(out)]
             if a in ("--config", "-config") or a.startswith(("--config=", "-config="))]
    if not given:
        out.insert(1, f"--config={DEFAULT_CONFIG}")
    for i in range(1, len(out)):
        a = out[i]
        if a == "--":
            break
        for flag in ("--config", "-config"):
            if a.startswith(flag + "="):
                value = a[len(flag) + 1:]
                name, sep, arg = ("", "", "") if os.path.isfile(value) else value.partition(":")
                out[i] = f"{flag}={rsc_config.resolve_file(name or value)}{sep}{arg}"
            elif a == flag and i + 1 < len(out):
                out[i + 1] = rsc_config.resolve_file(out[i + 1])
    return out


_HELP_FLAGS = {"--help", "-help", "-h", "-?", "--helpshort", "--helpfull"}

_MODES_HELP = (
    ("train", "train the model (resumes from WORKDIR/checkpoints), write WORKDIR/export"),
    ("evaluate", "clean test accuracy of the export (1 draw and averaged) -> evaluation.json"),
    ("export", "re-export the newest checkpoint -> WORKDIR/export"),
    ("attack", "PGD/EOT attack grid, transfer and black-box attacks, masking checks -> robustness.json"),
    ("certify", "randomized-smoothing certification (Gaussian codings) -> certified.json"),
    ("report", "report.json and report.md from the results present"),
    ("all", "train, the ANN twin (transfer source), evaluate, attack, certify, report (default)"),
)


def _help(argv: list[str]) -> None:
    """``--help``: usage, the modes, the main flags and every config field with its value
    in the chosen ``--config`` (default digits); exits 0. ``--helpfull`` adds absl's flags."""
    import textwrap
    value = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith(("--config=", "-config="))), "digits")
    note = ""
    try:
        path = rsc_config.resolve_file(value.partition(":")[0])
        cfg = rsc_config.call_file(path)
    except Exception as e:   # noqa: BLE001 (help must not fail on a bad --config)
        cfg, path, note = rsc_config.base(), "rsc_jax.config.base()", f"  ({e}; showing the defaults)"
    out = ["usage: python -m rsc_jax.main --config=NAME|PATH --workdir=DIR [--mode=MODE[,MODE...]] "
           "[--export=PATH] [--config.SECTION.FIELD=VALUE ...]", "",
           "Modes (--mode; several in order, comma-separated, e.g. --mode=evaluate,attack):"]
    out += [f"  {m:<9} {text}" for m, text in _MODES_HELP]
    out += ["", "Flags:"]
    for name in ("config", "workdir", "mode", "export", "progress"):
        f = flags.FLAGS[name]
        default = "" if name == "config" or f.default in (None, "") else f"  (default: {f.default_as_str})"
        out.append(f"  --{name:<9} {f.help}{default}")
    out += ["  --verbosity=0 or --alsologtostderr: show every log line (absl, orbax, jax) on the terminal; "
            "they always go to WORKDIR/log.txt",
            "  --helpfull  also list absl's and the multi-host flags", "",
            f"Config fields of {os.path.relpath(path) if os.path.isfile(path) else path}{note}",
            "(override any with --config.SECTION.FIELD=VALUE, e.g. --config.coding.sigma=0.3 "
            "--config.train.epochs=5):"]
    quick = bool(cfg.attack.get("quick", False)) if "attack" in cfg else False
    for key, section in cfg.items():
        if not hasattr(section, "items"):
            out.append(f"  {key}={section!r}")
            continue
        if key == "attack" and quick:     # the values that run: the quick preset applied
            from rsc_jax.evaluators import robustness
            section = robustness.effective_config(section)
            out.append("  (attack.quick=True: the quick preset's caps are applied below; a field given as "
                       "--config.attack.FIELD=VALUE is not capped)")
        fields = " ".join(f"{k}={_short(v)}" for k, v in section.items())
        out += textwrap.wrap(fields, 100, initial_indent=f"  {key}: ", subsequent_indent=" " * (len(key) + 4),
                             break_long_words=False, break_on_hyphens=False)
    if "--helpfull" in argv[1:]:
        out += ["", "All flags:", flags.FLAGS.get_help()]
    print("\n".join(out))
    sys.exit(0)


def _short(v) -> str:
    """A config value as in the help: floats to 4 significant digits, tuples without spaces."""
    if isinstance(v, float):
        r = f"{v:.4g}"
        return r if any(c in r for c in ".ena") else r + ".0"
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_short(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def cli() -> None:
    """The ``rsc-jax`` console script (pyproject.toml): ``python -m rsc_jax.main``.

    stdout and stderr are guarded first (``terminal.guard_streams``): a reader that went
    away (``| head``, a ``| tee`` killed with the job) ends no run and prints no traceback."""
    from rsc_jax import terminal
    terminal.guard_streams()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    cli()
