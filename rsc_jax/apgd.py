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
improve since; a halving restarts from the best point (with zero momentum: ours; the
reference code keeps the last step's). The attack returns, per example,
the point of highest loss over the iterations and the restarts (the best iterate).

Losses (``loss``): ``"ce"`` (cross-entropy), ``"dlr"`` (difference of logits ratio,
-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), needs >= 3 classes), ``"dlr-targeted"``
(-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), target t = the ``target_rank``-th
largest other logit of the clean input, needs >= 4 classes). With ``expected=True`` the
objective is the loss of the softmax averaged over the K draws (the expectation the
judge measures: cross-entropy only) instead of the average of the K losses.

Keys and loops follow ``attacks.pgd``: row b depends only on (keys[b], x[b], y[b]);
restart r uses ``fold_in(keys[b], 100 + r)``, its random start ``fold_in(., 0)`` and the
draws of step k ``fold_in(fold_in(fold_in(., 1), k), j)``. Defaults (100 steps, 1 restart,
rho 0.75, a 0.75) are the paper's; the random start uniform in the eps ball is ours
(the paper starts on the boundary).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsc_jax import attacks, backend, judging, parallel, validation
from rsc_jax.judging import LogitsFn, fold

Array = jax.Array
LOSSES: tuple[str, ...] = ("ce", "dlr", "dlr-targeted")
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
    return {"ce": 2, "dlr": 3, "dlr-targeted": 4}[loss]


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
    backward pass keeps the activations of all K draws: K times the memory).

    Returns:
      (``[B]`` float32 losses, ``[B, ...]`` float32 gradients).
    """
    pe = parallel.per_example(logits_fn)
    tgt = jnp.zeros_like(y) if target is None else target

    def one_draw(xx, j):
        return _loss(pe(fold(keys, j), xx), y, loss, tgt)

    if expected:
        def total(xx):
            probs = jax.lax.map(lambda j: jax.nn.softmax(pe(fold(keys, j), xx).astype(jnp.float32)),
                                jnp.arange(eot)).mean(0)
            lv = -jnp.log(jnp.take_along_axis(probs, y[:, None], 1)[:, 0] + _TINY)
            return lv.sum(), lv
        (_, lv), g = jax.value_and_grad(total, has_aux=True)(x)
        return lv, g.astype(jnp.float32)

    def body(acc, j):
        lsum, gsum = acc
        def total(xx):
            lv = one_draw(xx, j)
            return lv.sum(), lv
        (_, lv), g = jax.value_and_grad(total, has_aux=True)(x)
        return (lsum + lv, gsum + g.astype(jnp.float32)), None

    init = (jnp.zeros(y.shape, jnp.float32), jnp.zeros(x.shape, jnp.float32))
    (lsum, gsum), _ = jax.lax.scan(body, init, jnp.arange(eot), unroll=backend.should_unroll(None, eot))
    return lsum / eot, gsum / eot


def _proj(x0: Array, xa: Array, eps: Array, norm: str) -> Array:
    return jnp.clip(x0 + attacks.project(xa - x0, eps, norm), 0.0, 1.0)


def _bcast(v: Array, like: Array) -> Array:
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def _one_restart(logits_fn, keys, x0, y, eps, *, norm, steps, loss, eot, expected, target, rho, alpha,
                 random_start, unroll, snapshots):
    """One APGD run from its own start; returns (x_best, loss_best, x_last, loss_last, eta,
    [S, B, ...] best points after each of ``snapshots`` steps)."""
    b = x0.shape[0]
    start = attacks.start_delta(fold(keys, 0), x0, eps, norm) if random_start else jnp.zeros_like(x0)
    x = jnp.clip(x0 + start, 0.0, 1.0)
    grad_keys = fold(keys, 1)

    def evaluate(xx, k):
        return objective(logits_fn, fold(grad_keys, k), xx, y, loss=loss, eot=eot, expected=expected,
                         target=target)

    f, g = evaluate(x, 0)
    marks = checkpoints(steps)
    since = np.zeros(steps + 1, np.int32)         # steps since the previous checkpoint, at a checkpoint (else 0)
    since[list(marks)] = np.diff((0,) + marks)
    state = dict(x=x, x_prev=x, f=f, g=g, x_best=x, f_best=f, g_best=g, eta=jnp.full((b,), 2.0, jnp.float32) * eps,
                 ups=jnp.zeros((b,), jnp.int32), f_best_check=f, halved_check=jnp.zeros((b,), bool),
                 snaps=jnp.stack([x] * len(snapshots)) if snapshots else jnp.zeros((0,) + x.shape, x.dtype))
    snap_at = jnp.asarray(snapshots or (0,), jnp.int32)
    counts = jnp.asarray(since)
    checks = counts > 0

    def body(i, s):
        a = jnp.where(i == 0, 1.0, alpha)
        eta = _bcast(s["eta"], x0)
        z = _proj(x0, s["x"] + eta * attacks.step_direction(s["g"], norm), eps, norm)
        x_new = _proj(x0, s["x"] + a * (z - s["x"]) + (1.0 - a) * (s["x"] - s["x_prev"]), eps, norm)
        f_new, g_new = evaluate(x_new, i + 1)
        better = f_new > s["f_best"]
        pick = lambda new, old: jnp.where(_bcast(better, new), new, old)   # noqa: E731
        s = dict(s, x_prev=s["x"], x=x_new, f=f_new, g=g_new, x_best=pick(x_new, s["x_best"]),
                 g_best=pick(g_new, s["g_best"]), f_best=jnp.where(better, f_new, s["f_best"]),
                 ups=s["ups"] + (f_new > s["f"]).astype(jnp.int32))
        # Checkpoint after step i + 1: halve where the loss rose too rarely, or where the
        # step was kept last time and the best loss has not improved since.
        at = checks[i + 1]
        osc = s["ups"] <= jnp.floor(rho * counts[i + 1])
        stuck = ~s["halved_check"] & (s["f_best_check"] >= s["f_best"])
        halve = at & (osc | stuck)
        back = _bcast(halve, x0)
        if snapshots:
            s["snaps"] = jnp.where((snap_at == i + 1).reshape((-1,) + (1,) * x0.ndim), s["x_best"][None],
                                   s["snaps"])
        return dict(s, eta=jnp.where(halve, s["eta"] / 2.0, s["eta"]),
                    x=jnp.where(back, s["x_best"], s["x"]), g=jnp.where(back, s["g_best"], s["g"]),
                    x_prev=jnp.where(back, s["x_best"], s["x_prev"]),
                    ups=jnp.where(at, 0, s["ups"]), halved_check=jnp.where(at, halve, s["halved_check"]),
                    f_best_check=jnp.where(at, s["f_best"], s["f_best_check"]))

    state = jax.lax.fori_loop(0, steps, body, state, unroll=backend.should_unroll(unroll, steps * eot))
    return state["x_best"], state["f_best"], state["x"], state["f"], state["eta"], state["snaps"]


def apgd_with_info(logits_fn: LogitsFn, key: Array, x: Array, y: Array, *, eps: float | Array = 8 / 255,
                   norm: str = "linf", steps: int = 100, loss: str = "ce", eot: int = 1, restarts: int = 1,
                   expected: bool = False, target_rank: int = 1, rho: float = 0.75, alpha: float = 0.75,
                   random_start: bool = True, unroll: bool | None = None, snapshots: tuple[int, ...] = ()
                   ) -> tuple[Array, dict[str, Array]]:
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
        best point so far (one run gives the attack at several budgets).

    Returns:
      (``[B, ...]`` best adversarial images, dict of ``[B]`` arrays: ``loss_best`` (the
      objective at the returned point), ``loss_last`` (at the last iterate of the best
      restart), ``step_size`` (its final eta), and with ``snapshots`` ``snapshots``
      ``[S, B, ...]``).
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
                        unroll=unroll, snapshots=snapshots) for r in range(restarts)]
    best, f_best, x_last, f_last, eta, snaps = run[0]
    for xb, fb, xl, fl, e, _ in run[1:]:
        take = fb > f_best
        sel = _bcast(take, x32)
        best, x_last = jnp.where(sel, xb, best), jnp.where(sel, xl, x_last)
        f_best, f_last, eta = jnp.where(take, fb, f_best), jnp.where(take, fl, f_last), jnp.where(take, e, eta)
    chex.assert_equal_shape((best, x))
    info = {"loss_best": f_best, "loss_last": f_last, "step_size": eta}
    if snapshots:
        info["snapshots"] = snaps.astype(x.dtype)
    return best.astype(x.dtype), info


def apgd(logits_fn: LogitsFn, key: Array, x: Array, y: Array, **kwargs: Any) -> Array:
    """APGD's best adversarial images ``[B, ...]`` (``apgd_with_info`` without the info)."""
    return apgd_with_info(logits_fn, key, x, y, **kwargs)[0]


__all__ = ["LOSSES", "apgd", "apgd_with_info", "checkpoints", "classes_needed", "dlr_loss", "dlr_targeted_loss", "objective"]
