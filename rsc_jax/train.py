"""Training: the optax optimizer, the CE loss closure, one jitted data-parallel step, the
loop and its preemption handling (checkpoints: ``checkpoints``; pure losses: ``losses``).

Plain RSC training (SPEC §3): cross-entropy on logits averaged over T, with inputs
coded afresh at every step. The noise of example b at step s comes from
``fold_in(fold_in(key(seed), s), b)`` (b = its position in the global batch), so a
run gives the same parameters on 1 or N devices and after a resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rsc_jax import backend, checkpoints, classifier, data, losses, parallel, progress as progress_lib, validation

Array = jax.Array
PyTree = Any
# loss_fn(params, batch_stats, batch, keys) -> (loss, (new_batch_stats, metrics))
LossFn = Callable[[PyTree, PyTree, dict[str, Array], Array], tuple[Array, tuple[PyTree, dict[str, Array]]]]

NOISE_STREAM, INIT_STREAM = 1, 2   # fold_in tags that keep the key streams apart

log = logging.getLogger(__name__)   # a named logger: the library never configures the root logger


def make_schedule(tc: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Cosine decay to 0 over ``total_steps`` (SPEC §3), with optional linear warm-up."""
    total_steps = max(total_steps, 1)
    if tc.schedule == "constant":
        main = optax.constant_schedule(tc.lr)
    else:
        main = optax.cosine_decay_schedule(tc.lr, max(total_steps - tc.warmup_steps, 1))
    if tc.warmup_steps:
        return optax.join_schedules([optax.linear_schedule(0.0, tc.lr, tc.warmup_steps), main],
                                    [tc.warmup_steps])
    return main


def make_optimizer(tc: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """SGD with momentum and (coupled, PyTorch-style) weight decay, or AdamW."""
    lr = make_schedule(tc, total_steps)
    if tc.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=tc.weight_decay)
    return optax.chain(optax.add_decayed_weights(tc.weight_decay),
                       optax.sgd(lr, momentum=tc.momentum or None))


def classifier_config(cfg: ml_collections.ConfigDict, ds: data.Dataset) -> dict[str, Any]:
    """The export description of the model ``cfg`` trains on ``ds``."""
    n = cfg.neuron
    overrides = {"remat": cfg.model.remat, "width": cfg.model.width, "dtype": cfg.model.dtype,
                 "tau": n.tau, "v_th": n.v_th, "reset": n.reset, "surrogate": n.surrogate,
                 "alpha": n.alpha or None, "detach_reset": n.detach_reset, "grad_mode": n.grad_mode}
    return classifier.classifier_config(
        model={"name": cfg.model.name, "spiking": cfg.model.spiking, "overrides": overrides},
        coding_cfg={"method": cfg.coding.method, "sigma": cfg.coding.sigma, "T": cfg.coding.T},
        dataset=ds.info())


def ann_twin_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ANN twin of ``cfg``'s model trained on clean images: same layers and data,
    ReLU instead of LIF, direct coding with T = 1 (SPEC §2: baseline and teacher)."""
    twin = ml_collections.ConfigDict(cfg.to_dict())
    twin.model.spiking = False
    twin.coding.method = "direct"
    twin.coding.sigma = 0.0
    twin.coding.T = 1
    return twin


def cross_entropy_loss(clf: classifier.Classifier) -> LossFn:
    """CE (``losses.cross_entropy``) on the time-averaged logits of RSC-coded inputs
    (SPEC §3, plain RSC training)."""
    def loss_fn(params, batch_stats, batch, keys):
        x = clf.encode(keys, batch["image"])
        logits, updates = clf.model.apply({"params": params, "batch_stats": batch_stats}, x,
                                          train=True, mutable=["batch_stats"])
        loss = losses.cross_entropy(logits, batch["label"])
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, (updates["batch_stats"], {"ce": loss, "accuracy": acc})
    return loss_fn


def init_state(variables: PyTree, tx: optax.GradientTransformation) -> dict[str, Any]:
    """``{params, batch_stats, opt_state, step}``: the whole training state."""
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32)}


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, noise_key: Array,
                    *, skip_nonfinite: bool = False) -> Callable[..., tuple[dict, dict]]:
    """One jitted optimisation step ``(state, batch, *extra) -> (state, metrics)``.

    ``extra`` (optional, e.g. a frozen teacher's variables for E-RSCT, replicated) is
    passed on as ``loss_fn(params, batch_stats, batch, keys, *extra)``: a step input,
    not a constant baked into the compiled program, and never differentiated.

    ``batch`` holds ``image`` [B, H, W, C] in [0, 1], ``label`` [B] and ``index`` [B]
    (position in the global batch), sharded along the mesh's ``data`` axis; the state
    is replicated. With ``skip_nonfinite`` a step whose loss or gradient is not
    finite leaves the state unchanged (but for ``step``) and reports ``skipped=1``.
    """
    def step(state, batch, *extra):
        keys = parallel.example_keys(jax.random.fold_in(noise_key, state["step"]), batch["index"])
        (loss, (bstats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], batch, keys, *extra)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates), "batch_stats": bstats,
               "opt_state": opt_state, "step": state["step"] + 1}
        gnorm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        if skip_nonfinite:
            new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, dict(state, step=state["step"] + 1))
        metrics = dict(metrics, loss=loss, grad_norm=gnorm, finite=finite.astype(jnp.float32))
        return new, metrics
    return backend.jit(step, donate_argnums=(0,))


class NonFiniteError(FloatingPointError):
    """The training loss or gradient became NaN or Inf."""


class Preempted(RuntimeError):
    """SIGTERM or SIGINT (Ctrl-C) stopped training; a checkpoint was saved at ``step``
    (rerun to resume). ``exit_status`` is 128 + the signal's number (143, 130)."""

    def __init__(self, step: int, directory: str, signum: int = signal.SIGTERM) -> None:
        name = "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name
        super().__init__(f"stopped by {name} after step {step}: a checkpoint of step {step} is saved in "
                         f"{directory}; rerun the same command to resume from there")
        self.step, self.directory, self.signum = step, directory, int(signum)
        self.exit_status = 128 + int(signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_flag():
    """Yields an ``Event`` that SIGTERM or SIGINT sets (instead of ending the process);
    its ``signum`` attribute says which signal came first.

    TPU VMs and SLURM send SIGTERM some time before a preemption, and Ctrl-C sends
    SIGINT; the training loop checks the flag after every step, saves and stops. A
    second SIGINT raises ``KeyboardInterrupt`` (quit now; the last checkpoint is kept).
    Outside the main thread (where Python cannot install handlers) the flag is never
    set. The previous handlers are restored on exit.
    """
    flag = threading.Event()
    flag.signum = None
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not flag.is_set():
            flag.signum = signum
        flag.set()

    handler.graceful = True          # ``terminal.watch_ctrl_c`` tells the user what Ctrl-C does here
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


sigterm_flag = stop_flag   # the older name


def first_nonfinite(ms: list[dict[str, Any]], first_step: int) -> tuple[int, list[str]] | None:
    """``(step, terms)`` of the first metrics dict in ``ms`` flagged not finite, else None.

    ``ms[i]`` holds the host metrics of training step ``first_step + i`` (1-based, as in
    metrics.jsonl); ``terms`` are the metric names whose values are NaN or Inf.
    """
    for i, m in enumerate(ms):
        if not m["finite"]:
            bad = [k for k, v in m.items() if k != "finite" and not np.all(np.isfinite(v))]
            return first_step + i, bad or ["grad_norm"]
    return None


def trim_metrics(path: str, step: int) -> int:
    """Drops the lines of ``metrics.jsonl`` past ``step`` (the step training resumes
    from: a run killed after logging steps it had not checkpointed yet) and torn lines
    (a write cut short); returns how many lines were dropped."""
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
            pass
    if len(keep) != len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(path + ".tmp", path)
        log.info("metrics.jsonl: dropped %d line(s) past step %d (from an interrupted run)",
                     len(lines) - len(keep), step)
    return len(lines) - len(keep)


@contextlib.contextmanager
def tensorboard_writer(workdir: str, start: int, enabled: bool = True):
    """A tensorboardX ``SummaryWriter`` on ``WORKDIR/tensorboard`` (None unless ``enabled``),
    closed on exit. Events past ``start`` from an interrupted run are purged."""
    if not enabled:
        yield None
        return
    try:
        from tensorboardX import SummaryWriter
    except ImportError as e:
        raise validation.ConfigError(
            "config.train.tensorboard=True is not allowed here: tensorboardX is not installed "
            "(pip install tensorboardX), or pass --config.train.tensorboard=False") from e
    writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start + 1 if start else None)
    try:
        yield writer
    finally:
        writer.close()


@contextlib.contextmanager
def _saves_finished(mngr):
    """On any exit (an error, a signal, the end) waits for the checkpoint being written in
    the background and closes ``mngr``: no step that was saved is left half-written."""
    try:
        yield
    finally:
        try:
            mngr.wait_until_finished()
        finally:
            mngr.close()


def summarise(ms: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each metric over the finite steps of ``ms``, plus ``skipped`` (their count)."""
    good = [m for m in ms if m["finite"]] or ms
    rec = {k: float(np.mean([m[k] for m in good])) for k in ms[0]}
    rec["skipped"] = int(sum(1 for m in ms if not m["finite"]))
    return rec


@checkpoints.keep_root_logger()    # orbax (absl) would leave a stderr handler on the root logger
def train(cfg: ml_collections.ConfigDict, ds: data.Dataset, workdir: str, *, mesh: jax.sharding.Mesh,
          clf_config: dict[str, Any] | None = None, loss_factory: Callable[[classifier.Classifier], LossFn] | None = None,
          init_variables: PyTree | None = None, loss_inputs: PyTree | None = None, progress: bool = True,
          max_steps: int | None = None, desc: str = "train") -> tuple[classifier.Classifier, dict[str, Any]]:
    """Trains (or resumes training) and returns the classifier and a summary.

    Checkpoints go to ``WORKDIR/checkpoints`` every ``train.checkpoint_every`` steps,
    at every epoch end and at the end; metrics to ``WORKDIR/metrics.jsonl``. A run
    restarted with the same command resumes from the newest good checkpoint and
    ends with the same parameters as an uninterrupted run; the lines of
    ``metrics.jsonl`` past the restored step (logged by a run killed before its next
    checkpoint) are dropped then, so that every step appears once. SIGTERM or SIGINT
    (Ctrl-C) saves a checkpoint after the current step and raises ``Preempted``. With
    ``train.tensorboard`` the metrics also go to ``WORKDIR/tensorboard/`` (tensorboardX).

    Args:
      loss_factory: builds the loss from the classifier (default: cross-entropy);
        E-RSCT passes its distillation loss here.
      init_variables: initial ``{"params", "batch_stats"}`` (default: fresh init).
      loss_inputs: a pytree replicated over the mesh and passed to every step as the
        loss's fifth argument (E-RSCT: the frozen teacher's variables); default none.
      max_steps: stop after this many steps of this invocation (a checkpoint is
        saved there), as a preempted job would; the next call resumes.
      desc: the progress bar's label.

    Example (e.g. in a notebook; progress shows as a bar there, as lines in a log file)::

        cfg = config.from_file("digits")          # or config.base() with fields set
        cfg.train.epochs = 1
        ds = data.load(cfg)
        clf, summary = train.train(cfg, ds, "runs/nb", mesh=parallel.make_mesh())
        logits = clf.logits(jax.random.key(0), data.test_arrays(ds)[0][:8])

    The root logger is left as it was (``checkpoints.keep_root_logger``).
    """
    tc = cfg.train
    clf_config = clf_config or classifier_config(cfg, ds)
    clf = classifier.Classifier(clf_config, None)
    spe = data.steps_per_epoch(len(ds.train), tc.batch_size)
    total = tc.epochs * spe
    tx = make_optimizer(tc, total)
    root = jax.random.key(cfg.seed)
    noise_key = jax.random.fold_in(root, NOISE_STREAM)

    def fresh_state():
        v = init_variables if init_variables is not None else classifier.init_variables(
            clf_config, jax.random.fold_in(root, INIT_STREAM))
        return init_state(v, tx)

    abstract = jax.eval_shape(fresh_state)
    abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                            abstract, parallel.state_shardings(abstract, mesh))
    os.makedirs(workdir, exist_ok=True)
    mngr = checkpoints.manager(workdir, tc.keep_checkpoints)
    damaged: list[int] = []
    restored = checkpoints.restore_latest(mngr, abstract, damaged=damaged)
    checkpoints.quarantine(mngr, damaged, workdir)
    skipped_total = 0
    if restored is None:
        state, start = parallel.replicate(fresh_state(), mesh), 0
        if damaged:
            log.warning("no checkpoint in %s could be restored: training starts from scratch", mngr.directory)
    else:
        state, meta = restored
        start, skipped_total = int(meta["step"]), int(meta.get("skipped_steps", 0))
        log.info("resuming from step %d of %d", start, total)
    step_fn = make_train_step((loss_factory or cross_entropy_loss)(clf), tx, noise_key,
                              skip_nonfinite=bool(cfg.train.get("skip_nonfinite", False)))
    meta = {"model": clf_config["model"]["name"], "total_steps": total}
    rows = parallel.process_rows(tc.batch_size, mesh)          # this host's part of every batch
    index = np.arange(tc.batch_size, dtype=np.int32)[rows]
    extra = () if loss_inputs is None else (parallel.replicate(loss_inputs, mesh),)

    def make_batch(s: int) -> dict[str, np.ndarray]:
        b = data.train_batch(ds, step=s, batch_size=tc.batch_size, seed=cfg.seed, augment=cfg.dataset.augment,
                             rows=rows)
        b["index"] = index
        return b

    t0, history, pending = time.time(), [], []
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    stop = total if max_steps is None else min(total, start + max_steps)
    primary = parallel.is_primary()
    if primary:
        trim_metrics(metrics_path, start)
    bar = progress_lib.bar(total, initial=start, desc=desc, unit="step", enabled=progress and primary)
    skip = bool(cfg.train.get("skip_nonfinite", False))
    with open(metrics_path, "a") as mf, stop_flag() as stop_signal, _saves_finished(mngr), \
            tensorboard_writer(workdir, start, enabled=primary and bool(tc.get("tensorboard", False))) as tb:
        for s, batch in zip(range(start, stop), data.prefetch(make_batch, range(start, stop))):
            state, m = step_fn(state, parallel.global_batch(batch, mesh, tc.batch_size), *extra)
            pending.append(m)
            last = s + 1 == stop
            preempt = stop_signal.is_set()
            save = (s + 1) % tc.checkpoint_every == 0 or (s + 1) % spe == 0 or last or preempt
            # Metrics are checked before every save, so a NaN state is never checkpointed.
            if (s + 1) % tc.log_every == 0 or save:
                ms = parallel.gather(pending)
                pending = []
                bad = first_nonfinite(ms, s + 2 - len(ms))
                if bad and not skip:
                    mngr.wait_until_finished()
                    good = mngr.latest_step()
                    bar.close()
                    raise NonFiniteError(
                        f"non-finite training value at step {bad[0]}: term(s) {', '.join(bad[1])} became NaN or "
                        f"Inf; training stopped. The last good checkpoint (step {good}) is kept in "
                        f"{mngr.directory}. Lower config.train.lr, or pass --config.train.skip_nonfinite=True "
                        "to skip such steps")
                rec = summarise(ms)
                skipped_total += rec["skipped"]
                if rec["skipped"]:
                    log.warning("skipped %d non-finite step(s), first at step %d (terms: %s)",
                                rec["skipped"], bad[0], ", ".join(bad[1]))
                rec.update(step=s + 1, epoch=s // spe, lr=float(make_schedule(tc, total)(s)),
                           skipped_total=skipped_total, seconds=round(time.time() - t0, 3))
                if primary:
                    mf.write(json.dumps(rec) + "\n")
                    mf.flush()
                if tb is not None:
                    for k, v in rec.items():
                        tb.add_scalar(f"train/{k}", v, rec["step"])
                history.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['accuracy']:.3f}")
            bar.update(1)
            if save:
                checkpoints.save_state(mngr, state, dict(meta, step=s + 1, skipped_steps=skipped_total))
                if tb is not None:
                    tb.flush()
            if preempt:
                mngr.wait_until_finished()
                bar.close()
                raise Preempted(s + 1, str(mngr.directory), stop_signal.signum)
        bar.close()
        if total == 0 or start >= total:
            checkpoints.save_state(mngr, state, dict(meta, step=int(parallel.gather(state["step"]))))
        mngr.wait_until_finished()
        if stop_signal.is_set():   # the signal came after the last step's check: all is saved, stop all the same
            raise Preempted(int(parallel.gather(state["step"])), str(mngr.directory), stop_signal.signum)
    variables = parallel.gather({"params": state["params"], "batch_stats": state["batch_stats"]})
    summary = {"steps": int(parallel.gather(state["step"])), "total_steps": total, "resumed_from": start, "seconds": round(time.time() - t0, 2),
               "steps_per_epoch": spe, "skipped_steps": skipped_total, "final": history[-1] if history else None}
    return classifier.Classifier(clf_config, variables), summary
