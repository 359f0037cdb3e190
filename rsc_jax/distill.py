r"""E-RSCT: efficient RSC training by distilling a frozen ANN teacher into the RSC-SNN.

Wu et al. (ACM MM 2024, arXiv 2407.20099, "E-RSCT"; SPEC §3) train the RSC-coded
spiking student with a pre-trained ANN teacher that sees clean images:

    L = CE(z_S, y)
        + alpha * tau_kd^2 * KL(softmax(z_T / tau_kd) || softmax(z_S / tau_kd))   (Hinton et al., 2015)
        + beta * L_pre,
    L_pre = sum_k MSE( mean_t I^S_k(t),  h^T_k ),

with z_S the student's logits averaged over T on the RSC-coded batch, z_T the teacher's
logits on the clean batch, I^S_k(t) the student's pre-synaptic input current at stage k
(the BN output that feeds the k-th sown LIF layer, ``pre_stage{k}``) and h^T_k the
teacher's pre-ReLU output at the same module path. The defaults alpha = 1, tau_kd = 4,
beta = 1 and the student's initialisation from the teacher's weights are **ours**: the
paper does not state them. Each term can be switched off (``ce=False``, ``alpha=0``,
``beta=0``); a switched-off term is not computed.

The teacher is the ANN twin of the student's architecture (``train.ann_twin_config``:
same layer names, ReLU, direct coding, T = 1) trained on clean data with the same loop
and exported, or any compatible export given by ``config.distill.teacher``. Its
variables are a replicated *input* of the jitted, sharded training step (not constants
closed over), it runs frozen in inference mode (BN running statistics, no gradient),
and it is evaluated in the same step as the student: no second pass over the data.

The loss terms are pure functions in ``losses`` (``cross_entropy``, ``kd_loss``,
``pre_activations``, ``pre_alignment_loss``); this module orchestrates the teacher.

The ``config.distill`` section is built by ``config.distill`` and checked by
``config_checks.check_distill``. Public API: ``check_compatible``, ``init_from_teacher``, ``distillation_loss``, ``teacher_config``,
``resolve_teacher``, ``train_student``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Mapping

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rsc_jax import classifier, data, export, losses, report, train
from rsc_jax.evaluators import clean

Array = jax.Array
PyTree = Any
# loss(params, batch_stats, batch, keys, teacher_variables) -> (loss, (batch_stats, metrics))
DistillLossFn = Callable[[PyTree, PyTree, dict[str, Array], Array, PyTree],
                         tuple[Array, tuple[PyTree, dict[str, Array]]]]

TEACHER_DIR = "teacher"          # WORKDIR/teacher: the teacher trained by --mode=all/train
TEACHER_KEY_TAG = 7              # fold_in tag: the teacher's coding keys (direct coding ignores them)


class TeacherMismatchError(export.ExportError):
    """The teacher export does not fit the student (architecture, classes, layer names)."""


# --------------------------------------------------------------------------- compatibility

def _shapes(tree: PyTree, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """``{"params/stage0/conv/kernel": shape, ...}`` in the model's layer order (dict
    insertion order, as flax creates the variables), not sorted."""
    out: dict[str, tuple[int, ...]] = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            out.update(_shapes(v, f"{prefix}{k}/"))
    else:
        out[prefix[:-1]] = tuple(np.shape(tree))
    return out


def _abstract_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """``_shapes`` of a fresh init, without computing it, in flax's creation order
    (read while tracing: ``eval_shape``'s output would have sorted keys)."""
    order: list[tuple[str, tuple[int, ...]]] = []

    def f():
        v = classifier.init_variables(config, jax.random.key(0))
        order.extend(_shapes(v).items())
        return v
    jax.eval_shape(f)
    return dict(order)


def _intermediate_shapes(config: dict[str, Any], batch: int = 2) -> dict[str, tuple[int, ...]]:
    """Shapes of the sown pre-activations of the model ``config`` describes (abstract)."""
    model = classifier.build_model(config)
    x = classifier.dummy_input(config, batch)

    def f():
        v = model.init(jax.random.key(0), x, train=False)
        _, st = model.apply(v, x, train=False, mutable=["intermediates"])
        return losses.pre_activations(st["intermediates"])
    return {k: tuple(v.shape) for k, v in jax.eval_shape(f).items()}


def check_compatible(student_config: dict[str, Any], teacher_config: dict[str, Any],
                     teacher_variables: PyTree | None = None, *, teacher_path: str = "teacher",
                     check_pre: bool = True) -> None:
    """Raises ``TeacherMismatchError`` naming the first mismatch between teacher and student.

    Checked in order: architecture (``model.name``), number of classes, image shape,
    then every parameter and BN statistic by layer name and shape (the teacher must
    hold exactly the student's layers), then (``check_pre``) the sown pre-activation
    paths and shapes L_pre compares.
    """
    def fail(what: str, t: Any, s: Any) -> None:
        raise TeacherMismatchError(f"teacher export {teacher_path!r} does not match the student: {what} is "
                                   f"{t!r} in the teacher but {s!r} in the student")

    tm, sm = teacher_config["model"], student_config["model"]
    if tm["name"] != sm["name"]:
        fail("the architecture (model.name)", tm["name"], sm["name"])
    td, sd = teacher_config["dataset"], student_config["dataset"]
    if int(td["num_classes"]) != int(sd["num_classes"]):
        fail("the number of classes (dataset.num_classes)", int(td["num_classes"]), int(sd["num_classes"]))
    if list(td["image_shape"]) != list(sd["image_shape"]):
        fail("the image shape (dataset.image_shape)", list(td["image_shape"]), list(sd["image_shape"]))
    s_shapes = _abstract_shapes(student_config)
    t_shapes = _shapes(teacher_variables) if teacher_variables is not None else _abstract_shapes(teacher_config)
    names = list(s_shapes) + [n for n in t_shapes if n not in s_shapes]
    for name in sorted(names, key=lambda n: not n.startswith("params/")):   # stable: layer order kept
        if name not in t_shapes:
            fail(f"layer variable {name!r}", "absent", f"shape {s_shapes[name]}")
        if name not in s_shapes:
            fail(f"layer variable {name!r}", f"shape {t_shapes[name]}", "absent")
        if t_shapes[name] != s_shapes[name]:
            fail(f"the shape of {name!r}", t_shapes[name], s_shapes[name])
    if check_pre:
        sp, tp = _intermediate_shapes(student_config), _intermediate_shapes(teacher_config)
        for name in sorted(set(sp) | set(tp)):
            if sp.get(name) != tp.get(name):
                fail(f"the sown pre-activation {name!r}", tp.get(name, "absent"), sp.get(name, "absent"))
        if not sp:
            raise TeacherMismatchError(f"model {sm['name']!r} sows no pre_stage* intermediates; "
                                       "set config.distill.beta=0 to distil logits only")


def init_from_teacher(student_variables: PyTree, teacher_variables: PyTree) -> tuple[PyTree, int]:
    """Student variables with every parameter/BN statistic the teacher shares copied.

    A leaf is shared when the same path (collection/module/.../name) exists in both with
    the same shape; it is copied in the student's dtype. Leaves only the student has keep
    their fresh values. Returns ``(variables, number_of_leaves_copied)``.
    """
    flat_t = {losses.path_str(p): l for p, l in jax.tree_util.tree_flatten_with_path(teacher_variables)[0]}
    copied = 0

    def pick(path, leaf):
        nonlocal copied
        t = flat_t.get(losses.path_str(path))
        if t is None or tuple(np.shape(t)) != tuple(np.shape(leaf)):
            return leaf
        copied += 1
        return jnp.asarray(t, dtype=jnp.asarray(leaf).dtype)

    out = jax.tree_util.tree_map_with_path(pick, dict(student_variables))
    return out, copied


def teacher_variables(teacher: classifier.Classifier) -> PyTree:
    """``{"params", "batch_stats"}`` of a teacher classifier (what the step receives)."""
    return {"params": teacher.params["params"], "batch_stats": teacher.params.get("batch_stats", {})}


# --------------------------------------------------------------------------- the loss

def distillation_loss(student: classifier.Classifier, teacher_config: dict[str, Any],
                      dc: ml_collections.ConfigDict) -> DistillLossFn:
    """The E-RSCT loss for ``train.train(loss_factory=..., loss_inputs=teacher_variables)``.

    ``loss_fn(params, batch_stats, batch, keys, teacher_vars) -> (L, (batch_stats, metrics))``,
    pure: the student sees ``student.encode(keys, image)`` (RSC-coded, ``[T, B, ...]``),
    the teacher the clean images through its own coding (direct, T = 1), in inference
    mode and under ``stop_gradient``. Metrics: ``ce``, ``kd`` (the unweighted
    tau^2 KL), ``pre`` (L_pre) and ``pre/<path>`` per stage, ``accuracy``,
    and ``teacher_accuracy`` (``train`` adds the total as ``loss``).
    """
    teacher = classifier.Classifier(teacher_config, None)
    use_ce, alpha, tau, beta = bool(dc.ce), float(dc.alpha), float(dc.tau_kd), float(dc.beta)
    use_pre = beta > 0

    def loss_fn(params, batch_stats, batch, keys, teacher_vars):
        x, y = batch["image"], batch["label"]
        chex.assert_rank(x, 4)
        tkeys = jax.vmap(lambda k: jax.random.fold_in(k, TEACHER_KEY_TAG))(keys)
        tin = teacher.encode(tkeys, x)
        if use_pre:
            zt, tstate = teacher.model.apply(teacher_vars, tin, train=False, mutable=["intermediates"])
            t_pre = losses.pre_activations(tstate["intermediates"])
        else:
            zt = teacher.model.apply(teacher_vars, tin, train=False)
        zt = jax.lax.stop_gradient(zt)
        sx = student.encode(keys, x)
        mutable = ["batch_stats", "intermediates"] if use_pre else ["batch_stats"]
        zs, upd = student.model.apply({"params": params, "batch_stats": batch_stats}, sx, train=True,
                                      mutable=mutable)
        chex.assert_equal_shape((zs, zt))
        ce = losses.cross_entropy(zs, y)
        kd = losses.kd_loss(zs, zt, tau) if alpha > 0 else jnp.zeros((), jnp.float32)
        metrics = {"ce": ce, "kd": kd, "accuracy": jnp.mean(jnp.argmax(zs, -1) == y),
                   "teacher_accuracy": jnp.mean(jnp.argmax(zt, -1) == y)}
        total = (ce if use_ce else 0.0) + alpha * kd
        if use_pre:
            t_pre = jax.tree.map(jax.lax.stop_gradient, t_pre)
            l_pre, per = losses.pre_alignment_loss(losses.pre_activations(upd["intermediates"]), t_pre)
            total = total + beta * l_pre
            metrics["pre"] = l_pre
            metrics.update({f"pre/{k.rsplit('/', 1)[-1]}": v for k, v in per.items()})
        else:
            metrics["pre"] = jnp.zeros((), jnp.float32)
        return total, (upd["batch_stats"], metrics)
    return loss_fn


# --------------------------------------------------------------------------- orchestration

def teacher_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config the teacher is trained with: ``train.ann_twin_config(cfg)`` (clean data,
    ReLU, T = 1, same loop), ``teacher_epochs`` epochs, distillation off."""
    t = train.ann_twin_config(cfg)
    t.distill.enabled = False
    if cfg.distill.teacher_epochs >= 0:
        t.train.epochs = int(cfg.distill.teacher_epochs)
    return t


def teacher_export_path(cfg: ml_collections.ConfigDict, workdir: str) -> str:
    """Where the teacher export is: ``config.distill.teacher`` or WORKDIR/teacher/export."""
    return os.path.abspath(cfg.distill.teacher or os.path.join(workdir, TEACHER_DIR, "export"))


def resolve_teacher(cfg: ml_collections.ConfigDict, ds: data.Dataset, workdir: str, *,
                    mesh: jax.sharding.Mesh, progress: bool = True) -> tuple[classifier.Classifier, dict[str, Any]]:
    """Loads ``config.distill.teacher``, or trains (resuming) the ANN twin into
    WORKDIR/teacher and exports it to WORKDIR/teacher/export. Returns the teacher and
    ``{path, trained_here, seconds, clean_accuracy}`` (test accuracy, direct coding)."""
    t0 = time.time()
    if cfg.distill.teacher:
        teacher = export.load(cfg.distill.teacher)
        info: dict[str, Any] = {"path": teacher_export_path(cfg, workdir), "trained_here": False}
    else:
        tdir = os.path.join(os.path.abspath(workdir), TEACHER_DIR)
        tcfg = teacher_config(cfg)
        teacher, summary = train.train(tcfg, ds, tdir, mesh=mesh, progress=progress, desc="train teacher")
        path = export.save(os.path.join(tdir, "export"), teacher)
        report.write_json(os.path.join(tdir, "train_summary.json"), summary)
        info = {"path": path, "trained_here": True, "steps": summary["steps"],
                "resumed_from": summary["resumed_from"]}
    x, y = data.test_arrays(ds)
    ev = clean.accuracy(teacher, x, y, batch_size=cfg.eval.batch_size, draws=1, seed=cfg.seed, mesh=mesh,
                        progress=False)
    info.update(seconds=round(time.time() - t0, 2), clean_accuracy=ev["accuracy"])
    logging.getLogger(__name__).info("E-RSCT teacher %s: clean test accuracy %.4f", info["path"], ev["accuracy"])
    return teacher, info


def student_init(cfg: ml_collections.ConfigDict, student_config: dict[str, Any],
                 teacher: classifier.Classifier) -> tuple[PyTree | None, int]:
    """Initial student variables: fresh (as ``train.train`` would draw them) with the
    teacher's shared layers copied when ``init_from_teacher``; ``(None, 0)`` otherwise."""
    if not cfg.distill.init_from_teacher:
        return None, 0
    key = jax.random.fold_in(jax.random.key(cfg.seed), train.INIT_STREAM)
    fresh = classifier.init_variables(student_config, key)
    return init_from_teacher(fresh, teacher_variables(teacher))


def train_student(cfg: ml_collections.ConfigDict, ds: data.Dataset, workdir: str, *, mesh: jax.sharding.Mesh,
                  progress: bool = True, max_steps: int | None = None,
                  teacher: classifier.Classifier | None = None) -> tuple[classifier.Classifier, dict[str, Any]]:
    """E-RSCT end to end: resolve the teacher, check it, initialise and train the student.

    The student trains in ``workdir`` exactly like plain training (checkpoints,
    resume, ``metrics.jsonl`` with the loss terms logged separately), with the
    distillation loss and the teacher's variables as a replicated step input.
    Returns the student classifier and ``train.train``'s summary plus ``distill``
    (teacher path and accuracy, loss weights, leaves copied at init).
    """
    dc = cfg.distill
    if teacher is None:
        teacher, tinfo = resolve_teacher(cfg, ds, workdir, mesh=mesh, progress=progress)
    else:
        tinfo = {"path": "<given>", "trained_here": False}
    student_config = train.classifier_config(cfg, ds)
    check_compatible(student_config, teacher.config, teacher.params, teacher_path=tinfo["path"],
                     check_pre=dc.beta > 0)
    init, copied = student_init(cfg, student_config, teacher)
    tvars = teacher_variables(teacher)
    clf, summary = train.train(cfg, ds, workdir, mesh=mesh, clf_config=student_config,
                               loss_factory=lambda s: distillation_loss(s, teacher.config, dc),
                               init_variables=init, loss_inputs=tvars, progress=progress, max_steps=max_steps)
    summary["distill"] = {"teacher": tinfo, "ce": bool(dc.ce), "alpha": float(dc.alpha),
                          "tau_kd": float(dc.tau_kd), "beta": float(dc.beta),
                          "init_from_teacher": bool(dc.init_from_teacher), "leaves_copied": copied}
    return clf, summary
