"""Everything that touches orbax: training checkpoints and exported variables.

Training checkpoints live in ``WORKDIR/checkpoints/<step>/`` (orbax
``CheckpointManager``, items ``state`` and ``meta``); damaged ones are moved to
``WORKDIR/checkpoints_damaged/``. An export's variables are one orbax
``StandardCheckpointer`` directory (``PATH/variables``).

orbax is imported on first use, so that importing the package stays light.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from typing import Any, Callable

from rsc_jax import parallel

PyTree = Any
_log = logging.getLogger(__name__)


@contextlib.contextmanager
def keep_root_logger():
    """Restores the root logger's handlers on exit (also usable as a decorator).

    orbax logs through absl, whose ``logging.log`` calls ``logging.basicConfig()`` when the
    root logger has no handler, as the standard library's module-level functions do:
    a training or export call from a notebook would leave a stderr handler on the root
    logger (and every later INFO/WARNING of any library printed). Handlers present
    before, e.g. the command line's (``terminal.setup``), are kept."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)


def manager(workdir: str, keep: int):
    """The ``CheckpointManager`` of ``WORKDIR/checkpoints`` keeping the newest ``keep``."""
    import orbax.checkpoint as ocp
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=True))   # leftovers of killed saves


def restore_latest(mngr, abstract_state: PyTree, log: Callable[[str], None] = _log.warning,
                   damaged: list[int] | None = None) -> tuple[PyTree, dict] | None:
    """The newest checkpoint that restores, trying older ones when the newest is damaged.

    Each damaged step is reported through ``log`` and appended to ``damaged``."""
    import orbax.checkpoint as ocp
    for s in sorted(mngr.all_steps(), reverse=True):
        try:
            r = mngr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                        meta=ocp.args.JsonRestore()))
            return r["state"], r["meta"]
        except Exception as e:  # orbax raises many types for damaged files
            log(f"checkpoint at step {s} in {mngr.directory} could not be restored ({type(e).__name__}: "
                f"{str(e)[:200]}); trying an older one")
            if damaged is not None:
                damaged.append(s)
    return None


def quarantine(mngr, steps: list[int], workdir: str) -> list[str]:
    """Moves damaged checkpoint steps to ``WORKDIR/checkpoints_damaged/`` (kept for
    inspection, never deleted), so that a fresh save of the same step can replace them."""
    moved = []
    for s in steps:
        src = os.path.join(str(mngr.directory), str(s))
        if os.path.isdir(src):
            dst = os.path.join(os.path.abspath(workdir), "checkpoints_damaged", f"{s}-{int(time.time())}")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.move(src, dst)
            _log.warning("damaged checkpoint of step %d moved to %s", s, dst)
            moved.append(dst)
    if moved:
        mngr.reload()
    return moved


def save_state(mngr, state: PyTree, meta: dict) -> None:
    """Saves the training ``state`` (with JSON ``meta``) at its step, unless that step is saved."""
    import orbax.checkpoint as ocp
    step = int(parallel.gather(state["step"]))
    if step in mngr.all_steps():
        return
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


@keep_root_logger()
def save_variables(path: str, variables: PyTree) -> None:
    """Writes ``variables`` (host arrays) as one orbax checkpoint directory ``path``.
    Multi-host: every process calls it (orbax writes from process 0 and synchronises)."""
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, variables)


@keep_root_logger()
def restore_variables(path: str, target: PyTree) -> PyTree:
    """Reads the checkpoint ``path`` into the shapes, dtypes and shardings of ``target``
    (a tree of ``jax.ShapeDtypeStruct``); orbax's errors pass through."""
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path, target)
