"""Auto-PGD (APGD) for stochastic classifiers: step-size schedule, momentum, best iterate,
restarts, CE and DLR losses, EOT in every step (Croce & Hein, ICML 2020, "Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
arXiv:2003.01690, Alg. 1; the randomized-defence version of AutoAttack averages every
gradient over EOT draws).

Per step k, with f the (EOT-averaged) loss, g its input gradient and P the projection
onto the eps ball of ``norm`` intersected with [0, 1]^d:

    z      = P(x_k + eta * s(g))                      s = sign (l_inf), g / |g|_2 (l_2)
    x_k+1  = P(x_k + a (z - x_k) + (1 - a)(x_k - x_k-1))  a = 0.75 (1 at the first step)

The step size starts at eta = 2 eps and is halved at checkpoints (``checkpoints``: after
0.22 N iterations, then intervals shrinking by 0.03 N down to 0.06 N) where either
(1) the loss rose in at most rho = 0.75 of the steps since the last checkpoint, or
(2) the step size was not halved at the last checkpoint and the best loss did not
improve since; a halving restarts from the point of highest loss (with zero momentum:
ours; the reference code keeps the last step's).

The attack returns, per example, the iterate (over the steps and the restarts) whose
logits averaged over that step's K draws have the lowest margin z_y - max_{i != y} z_i:
the deployed decision function of a randomized classifier is the argmax of its
draw-averaged logits (``judging.judge``), so the returned point is chosen on it, not on
the loss the steps follow (ours; the reference code returns the point of highest loss,
or the first single-draw-misclassified one). For a deterministic model (all draws
equal) a point of negative margin is misclassified.

Losses (``loss``): ``"ce"`` (cross-entropy), ``"dlr"`` (difference of logits ratio,
-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), needs >= 3 classes), ``"dlr-targeted"``
(-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), target t = the ``target_rank``-th
largest other logit of the clean input, needs >= 4 classes), each averaged over the K
draws; ``"margin"`` (ours): the negative margin of the K-averaged logits,
-(zbar_y - max_{i != y} zbar_i), zbar = (1/K) sum_j z^(j), the decision function
itself; its gradient is the mean of the K per-draw gradients of z_j* - z_y with j* the
runner-up of zbar (found by a forward pass over the K draws first: K forwards more per
step). With ``expected=True`` the objective is the loss of the softmax averaged over
the K draws (cross-entropy only) instead of the average of the K losses.

Keys and loops follow ``attacks.pgd``: row b depends only on (keys[b], x[b], y[b]);
restart r uses ``fold_in(keys[b], 100 + r)``, its random start ``fold_in(., 0)`` and the
draws of step k ``fold_in(fold_in(fold_in(., 1), k), j)``. Defaults (100 steps, 1 restart,
rho 0.75, a 0.75) are the paper's; the random start uniform in the eps ball is ours
(the paper starts on the boundary).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsc_jax import attacks, backend, judging, parallel, validation
from rsc_jax.judging import LogitsFn, fold

Array = jax.Array
LOSSES: tuple[str, ...] = ("ce", "dlr", "dlr-targeted", "margin")
DrawGrad = Callable[[Array, Array, Array], tuple[Array, Array, Array]]
_TINY = 1e-12


def checkpoints(steps: int) -> tuple[int, ...]:
    """The iterations (1-based counts of steps done) after which APGD checks its step size:
    after p_1 = 0.22 N steps, then after intervals that shrink by 0.03 N down to 0.06 N
    (each at least 1), as long as they fit in N."""
    validation.check_int("steps", steps, 1)
    first, decr, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, at, k = [], first, first
    while at <= steps:
        out.append(at)
        k = max(k - decr, least)
        at += k
    return tuple(out)


def classes_needed(loss: str) -> int:
    """The fewest classes ``loss`` is defined for: DLR's denominator reads the 3rd largest
    logit, the targeted DLR's the 4th."""
    return {"ce": 2, "dlr": 3, "dlr-targeted": 4, "margin": 2}[loss]


def dlr_loss(logits: Array, y: Array) -> Array:
    """Untargeted DLR loss per example, ``[B, C], [B] -> [B]`` (C >= 3):
    -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), z sorted z_pi1 >= z_pi2 >= ..."""
    z = logits.astype(jnp.float32)
    srt = jnp.sort(z, axis=-1)[:, ::-1]
    return -judging.margin(z, y) / (srt[:, 0] - srt[:, 2] + _TINY)


def dlr_targeted_loss(logits: Array, y: Array, target: Array) -> Array:
    """Targeted DLR per example (C >= 4): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)."""
    z = logits.astype(jnp.float32)
    srt = jnp.sort(z, axis=-1)[:, ::-1]
    zy = jnp.take_along_axis(z, y[:, None], 1)[:, 0]
    zt = jnp.take_along_axis(z, target[:, None], 1)[:, 0]
    return -(zy - zt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + _TINY)


def _loss(logits: Array, y: Array, loss: str, target: Array) -> Array:
    if loss == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
    if loss == "dlr":
        return dlr_loss(logits, y)
    return dlr_targeted_loss(logits, y, target)


def objective(logits_fn: LogitsFn, keys: Array, x: Array, y: Array, *, loss: str = "ce", eot: int = 1,
              expected: bool = False, target: Array | None = None) -> tuple[Array, Array]:
    """The per-example APGD objective over K = ``eot`` draws and its input gradient.

    Draw j of example b uses ``fold_in(keys[b], j)``. ``expected=False``: the mean over
    draws of the per-draw loss (gradient = mean of per-draw gradients, draws one after
    the other); ``expected=True``: the cross-entropy of the draw-averaged softmax (its
    backward pass keeps the activations of all K draws: K times the memory);
    ``loss="margin"``: the negative margin of the draw-averaged logits (module docstring).

    Returns:
      (``[B]`` float32 losses, ``[B, ...]`` float32 gradients).
    """
    f, g, _ = objective_and_margin(logits_fn, keys, x, y, loss=loss, eot=eot, expected=expected, target=target)
    return f, g


def objective_and_margin(logits_fn: LogitsFn, keys: Array, x: Array, y: Array, *, loss: str = "ce",
                         eot: int = 1, expected: bool = False, target: Array | None = None,
                         draw_grad: DrawGrad | None = None) -> tuple[Array, Array, Array]:
    """``objective`` and, from the same K draws, the ``[B]`` margin of the K-averaged
    logits (``judging.margin``): what APGD picks its returned iterate on. ``draw_grad``
    (``(keys [B], x, y) -> (loss [B], gradient [B, ...], logits [B, C])`` of one draw)
    replaces the autodiff gradient of each draw's cross-entropy (e.g.
    ``bernoulli.ce_draw_grad``: an unbiased gradient through Poisson coding)."""
    pe = parallel.per_example(logits_fn)
    tgt = jnp.zeros_like(y) if target is None else target

    def logits(xx, j):
        return pe(fold(keys, j), xx).astype(jnp.float32)

    if expected:
        def total(xx):
            z = jax.lax.map(lambda j: logits(xx, j), jnp.arange(eot))
            probs = jax.nn.softmax(z, axis=-1).mean(0)
            lv = -jnp.log(jnp.take_along_axis(probs, y[:, None], 1)[:, 0] + _TINY)
            return lv.sum(), (lv, z.mean(0))
        (_, (lv, zbar)), g = jax.value_and_grad(total, has_aux=True)(x)
        return lv, g.astype(jnp.float32), judging.margin(zbar, y)

    if loss == "margin":
        # the runner-up j* of the averaged logits first (K forwards), then the mean of
        # the per-draw gradients of z_j* - z_y on the same draws
        zbar = jax.lax.map(lambda j: logits(x, j), jnp.arange(eot)).mean(0)
        m = judging.margin(zbar, y)
        other = jnp.where(jax.nn.one_hot(y, zbar.shape[-1], dtype=bool), -jnp.inf, zbar).argmax(-1)

        def draw_loss(xx, j):
            z = logits(xx, j)
            pick = lambda c: jnp.take_along_axis(z, c[:, None], 1)[:, 0]   # noqa: E731
            return pick(other) - pick(y), z
    else:
        def draw_loss(xx, j):
            z = logits(xx, j)
            return _loss(z, y, loss, tgt), z

    def body(acc, j):
        lsum, gsum, zsum = acc
        if draw_grad is not None:
            lv, g, z = draw_grad(fold(keys, j), x, y)
            return (lsum + lv, gsum + g.astype(jnp.float32), zsum + z), None

        def total(xx):
            lv, z = draw_loss(xx, j)
            return lv.sum(), (lv, z)
        (_, (lv, z)), g = jax.value_and_grad(total, has_aux=True)(x)
        return (lsum + lv, gsum + g.astype(jnp.float32), zsum + z), None

    n_cls = jax.eval_shape(lambda xx: logits(xx, 0), x).shape[-1]
    init = (jnp.zeros(y.shape, jnp.float32), jnp.zeros(x.shape, jnp.float32),
            jnp.zeros(y.shape + (n_cls,), jnp.float32))
    (lsum, gsum, zsum), _ = jax.lax.scan(body, init, jnp.arange(eot), unroll=backend.should_unroll(None, eot))
    if loss == "margin":
        return -m, gsum / eot, m
    return lsum / eot, gsum / eot, judging.margin(zsum / eot, y)


def _proj(x0: Array, xa: Array, eps: Array, norm: str) -> Array:
    return jnp.clip(x0 + attacks.project(xa - x0, eps, norm), 0.0, 1.0)


def _bcast(v: Array, like: Array) -> Array:
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def _one_restart(logits_fn, keys, x0, y, eps, *, norm, steps, loss, eot, expected, target, rho, alpha,
                 random_start, unroll, snapshots, draw_grad):
    """One APGD run from its own start; returns a dict: ``x_pick`` (the iterate of lowest
    averaged-logit margin), ``m_pick`` (that margin), ``f_pick`` (its loss), ``f_best``
    (the highest loss reached), ``f_last`` (the loss of the last iterate), ``eta`` and
    ``snaps`` (``[S, B, ...]`` picked points after each of ``snapshots`` steps)."""
    b = x0.shape[0]
    start = attacks.start_delta(fold(keys, 0), x0, eps, norm) if random_start else jnp.zeros_like(x0)
    x = jnp.clip(x0 + start, 0.0, 1.0)
    grad_keys = fold(keys, 1)

    def evaluate(xx, k):
        return objective_and_margin(logits_fn, fold(grad_keys, k), xx, y, loss=loss, eot=eot, expected=expected,
                                    target=target, draw_grad=draw_grad)

    f, g, m = evaluate(x, 0)
    marks = checkpoints(steps)
    since = np.zeros(steps + 1, np.int32)         # steps since the previous checkpoint, at a checkpoint (else 0)
    since[list(marks)] = np.diff((0,) + marks)
    state = dict(x=x, x_prev=x, f=f, g=g, x_best=x, f_best=f, g_best=g, eta=jnp.full((b,), 2.0, jnp.float32) * eps,
                 ups=jnp.zeros((b,), jnp.int32), f_best_check=f, halved_check=jnp.zeros((b,), bool),
                 x_pick=x, m_pick=m, f_pick=f,
                 snaps=jnp.stack([x] * len(snapshots)) if snapshots else jnp.zeros((0,) + x.shape, x.dtype))
    snap_at = jnp.asarray(snapshots or (0,), jnp.int32)
    counts = jnp.asarray(since)
    checks = counts > 0

    def body(i, s):
        a = jnp.where(i == 0, 1.0, alpha)
        eta = _bcast(s["eta"], x0)
        z = _proj(x0, s["x"] + eta * attacks.step_direction(s["g"], norm), eps, norm)
        x_new = _proj(x0, s["x"] + a * (z - s["x"]) + (1.0 - a) * (s["x"] - s["x_prev"]), eps, norm)
        f_new, g_new, m_new = evaluate(x_new, i + 1)
        better = f_new > s["f_best"]
        lower = m_new < s["m_pick"]
        pick = lambda c, new, old: jnp.where(_bcast(c, new), new, old)   # noqa: E731
        s = dict(s, x_prev=s["x"], x=x_new, f=f_new, g=g_new, x_best=pick(better, x_new, s["x_best"]),
                 g_best=pick(better, g_new, s["g_best"]), f_best=jnp.where(better, f_new, s["f_best"]),
                 ups=s["ups"] + (f_new > s["f"]).astype(jnp.int32),
                 x_pick=pick(lower, x_new, s["x_pick"]), m_pick=jnp.where(lower, m_new, s["m_pick"]),
                 f_pick=jnp.where(lower, f_new, s["f_pick"]))
        # Checkpoint after step i + 1: halve where the loss rose too rarely, or where the
        # step was kept last time and the best loss has not improved since.
        at = checks[i + 1]
        osc = s["ups"] <= jnp.floor(rho * counts[i + 1])
        stuck = ~s["halved_check"] & (s["f_best_check"] >= s["f_best"])
        halve = at & (osc | stuck)
        back = _bcast(halve, x0)
        if snapshots:
            s["snaps"] = jnp.where((snap_at == i + 1).reshape((-1,) + (1,) * x0.ndim), s["x_pick"][None],
                                   s["snaps"])
        return dict(s, eta=jnp.where(halve, s["eta"] / 2.0, s["eta"]),
                    x=jnp.where(back, s["x_best"], s["x"]), g=jnp.where(back, s["g_best"], s["g"]),
                    x_prev=jnp.where(back, s["x_best"], s["x_prev"]),
                    ups=jnp.where(at, 0, s["ups"]), halved_check=jnp.where(at, halve, s["halved_check"]),
                    f_best_check=jnp.where(at, s["f_best"], s["f_best_check"]))

    state = jax.lax.fori_loop(0, steps, body, state, unroll=backend.should_unroll(unroll, steps * eot))
    return {"x_pick": state["x_pick"], "m_pick": state["m_pick"], "f_pick": state["f_pick"],
            "f_best": state["f_best"], "f_last": state["f"], "eta": state["eta"], "snaps": state["snaps"]}


def apgd_with_info(logits_fn: LogitsFn, key: Array, x: Array, y: Array, *, eps: float | Array = 8 / 255,
                   norm: str = "linf", steps: int = 100, loss: str = "ce", eot: int = 1, restarts: int = 1,
                   expected: bool = False, target_rank: int = 1, rho: float = 0.75, alpha: float = 0.75,
                   random_start: bool = True, unroll: bool | None = None, snapshots: tuple[int, ...] = (),
                   draw_grad: DrawGrad | None = None) -> tuple[Array, dict[str, Array]]:
    """APGD (module docstring), with what happened.

    Args:
      logits_fn: ``(key, x[B, ...]) -> logits [B, C]``, drawing its own coding noise.
      key: one key or ``[B]`` per-example keys. x: ``[B, H, W, C]`` in [0, 1]; y: ``[B]``.
      eps: radius; norm: "linf" or "l2"; steps: N >= 1 (static); loss: one of ``LOSSES``;
      eot: K draws per step (static); restarts: R >= 1 (static); expected: attack the
        loss of the draw-averaged softmax (CE only); target_rank: for "dlr-targeted",
        the target is the ``target_rank``-th largest non-true clean logit (1 = runner-up);
      rho, alpha: checkpoint threshold and momentum (paper: 0.75, 0.75).
      unroll: as ``attacks.pgd``.
      snapshots: step counts (each in [1, steps], one restart) after which to keep the
        picked point so far (one run gives the attack at several budgets).
      draw_grad: replaces each draw's autodiff gradient of the cross-entropy
        (``objective_and_margin``); needs ``loss="ce"`` and ``expected=False``.

    Returns:
      (``[B, ...]`` adversarial images: per example the iterate of lowest margin of the
      K-averaged logits over steps and restarts, dict of ``[B]`` arrays: ``margin`` (that
      margin, on the K draws of its step), ``loss_at_pick`` (the objective there),
      ``loss_best`` (the highest objective of the chosen restart), ``loss_last`` (at its
      last iterate), ``step_size`` (its final eta), and with ``snapshots`` ``snapshots``
      ``[S, B, ...]`` (the picked point after each of those step counts)).
    """
    snapshots = tuple(int(t) for t in snapshots)
    if snapshots and (restarts != 1 or not all(1 <= t <= steps for t in snapshots)):
        raise ValueError(f"snapshots={snapshots} is not allowed; they need restarts=1 and step counts in "
                         f"[1, steps={steps}]")
    validation.check_choice("loss", loss, LOSSES)
    validation.check_int("restarts", restarts, 1)
    validation.check_int("target_rank", target_rank, 1)
    validation.check_number("rho", rho, low=0.0, high=1.0)
    validation.check_number("alpha", alpha, low=0.0, high=1.0)
    validation.check_choice("norm", norm, attacks.NORMS)
    if draw_grad is not None and (loss != "ce" or expected):
        raise ValueError(f"draw_grad with loss={loss!r}, expected={expected!r} is not allowed; it replaces the "
                         "gradient of each draw's cross-entropy (loss='ce', expected=False)")
    if expected and loss != "ce":
        raise ValueError(f"expected=True is not allowed with loss={loss!r}; the expected objective is the "
                         "cross-entropy of the draw-averaged softmax")
    keys, x32, eps = attacks.check_and_prepare(key, x, y, eps, norm, eot)
    validation.check_int("steps", steps, 1)
    target = None
    if loss.startswith("dlr"):
        num_classes = jax.eval_shape(parallel.per_example(logits_fn), keys, x32).shape[-1]
        need = classes_needed(loss)
        if num_classes < need:
            raise ValueError(f"loss={loss!r} is not allowed for {num_classes} classes; it needs >= {need}")
        if loss == "dlr-targeted":
            clean = parallel.per_example(logits_fn)(fold(keys, 2), x32)
            others = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), -jnp.inf, clean)
            target = jnp.argsort(-others, axis=-1)[:, target_rank - 1]
    run = [_one_restart(logits_fn, fold(keys, 100 + r), x32, y, eps, norm=norm, steps=steps, loss=loss, eot=eot,
                        expected=expected, target=target, rho=rho, alpha=alpha, random_start=random_start,
                        unroll=unroll, snapshots=snapshots, draw_grad=draw_grad) for r in range(restarts)]
    out = run[0]
    for other in run[1:]:
        take = other["m_pick"] < out["m_pick"]
        out = {k: jnp.where(_bcast(take, v), other[k], v) if k != "snaps" else v for k, v in out.items()}
    best = out["x_pick"]
    chex.assert_equal_shape((best, x))
    info = {"margin": out["m_pick"], "loss_at_pick": out["f_pick"], "loss_best": out["f_best"],
            "loss_last": out["f_last"], "step_size": out["eta"]}
    if snapshots:
        info["snapshots"] = out["snaps"].astype(x.dtype)
    return best.astype(x.dtype), info


def apgd(logits_fn: LogitsFn, key: Array, x: Array, y: Array, **kwargs: Any) -> Array:
    """APGD's best adversarial images ``[B, ...]`` (``apgd_with_info`` without the info)."""
    return apgd_with_info(logits_fn, key, x, y, **kwargs)[0]


__all__ = ["LOSSES", "DrawGrad", "apgd", "apgd_with_info", "checkpoints", "classes_needed", "dlr_loss",
           "dlr_targeted_loss", "objective", "objective_and_margin"]
