"""Stable Adaptive PGD (SA-PGD) for stochastic spiking classifiers, with EOT and an
optional surrogate state carried across iterations (ASSG).

SA-PGD (Wang et al., arXiv 2512.22522, "Towards Reliable Evaluation of Adversarial
Robustness for Spiking Neural Networks"; as the authors' code computes it), l_inf only.
From x_0 = clip(x + eps t / max|t|), t ~ U[-1, 1]^d (the sphere of the ball), with g
the input gradient of the cross-entropy (averaged over the step's K draws, EOT), per
example and step:

    m = 0.5 m + g / mean|g|                  (m_0 = 0)
    v = 0.8 v + g^2 / mean(g^2)              (v_0 = 0)
    x = P(x + clip(eta m / (sqrt(v) + 1e-12), -eta, eta))

with P the projection onto the eps ball and [0, 1]^d; eta starts at eps and is halved,
whatever the loss did, after 0.22 N steps and then after intervals shrinking by 0.03 N
down to 0.06 N (``apgd.checkpoints``).

The returned point, per example, is the iterate (over steps and restarts) of lowest
margin of the K-averaged logits, the deployed decision function (as ``apgd``; ours: the
authors' code returns the last iterate a draw misclassified). Keys follow ``apgd``:
restart r uses ``fold_in(keys[b], 100 + r)``, its start ``fold_in(., 0)``, the draws of
step k ``fold_in(fold_in(fold_in(., 1), k), j)``.

With ``stateful`` the model's surrogate keeps a state across the attack's passes
(``Classifier.stateful``, ``neurons.STATEFUL``: ASSG's running statistics): the first
draw of each step updates it, the step's other draws read it (the authors' code freezes
it for the extra EOT samples); a restart starts it afresh.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from rsc_jax import apgd, attacks, backend, judging, validation
from rsc_jax.judging import LogitsFn, fold

Array = jax.Array
# (key, x [B, ...], state or None, update) -> (logits [B, C], state)
StatefulFn = Callable[[Array, Array, Any, bool], tuple[Array, Any]]
MOMENTUM, SECOND_MOMENT = 0.5, 0.8          # the authors' code's constants
_TINY = 1e-12


def _per_example(fn: StatefulFn, update: bool) -> Callable[[Array, Array, Any], tuple[Array, Any]]:
    """Example b alone: ``fn(keys[b], x[b:b+1], state[b], update)`` (vmapped)."""
    def one(k, xi, st):
        z, st = fn(k, xi[None], st, update)
        return z[0], st
    return jax.vmap(one)


def objective(fn: StatefulFn, keys: Array, x: Array, y: Array, state: Any, *, eot: int) -> tuple[Array, ...]:
    """Mean cross-entropy over K = ``eot`` draws, its input gradient, the margin of the
    K-averaged logits, and the state after the step (draw 0 updates it, draws 1.. read it).

    Returns:
      (``[B]`` losses, ``[B, ...]`` gradients, ``[B]`` margins, state).
    """
    def draw(xx, j, st, update):
        z, st = _per_example(fn, update)(fold(keys, j), xx, st)
        z = z.astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(z, y), z, st

    def total0(xx):
        lv, z, st = draw(xx, 0, state, True)
        return lv.sum(), (lv, z, st)
    (_, (l0, z0, state)), g0 = jax.value_and_grad(total0, has_aux=True)(x)

    def body(acc, j):
        def total(xx):
            lv, z, _ = draw(xx, j, state, False)
            return lv.sum(), (lv, z)
        (_, (lv, z)), g = jax.value_and_grad(total, has_aux=True)(x)
        return (acc[0] + lv, acc[1] + g.astype(jnp.float32), acc[2] + z), None

    init = (l0, g0.astype(jnp.float32), z0)
    if eot > 1:
        init, _ = jax.lax.scan(body, init, jnp.arange(1, eot), unroll=backend.should_unroll(None, eot))
    lsum, gsum, zsum = init
    return lsum / eot, gsum / eot, judging.margin(zsum / eot, y), state


def _bcast(v: Array, like: Array) -> Array:
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def _mean_over_example(v: Array) -> Array:
    return jnp.mean(v, axis=tuple(range(1, v.ndim)), keepdims=True)


def start_point(key_b: Array, x0: Array, eps: Array) -> Array:
    """The authors' start: ``clip(x + eps t / max|t|, 0, 1)``, t ~ U[-1, 1]^d per example
    (key ``key_b[b]``), a point on the sphere of the l_inf ball."""
    t = jax.vmap(lambda k, xi: jax.random.uniform(k, xi.shape, xi.dtype, -1.0, 1.0))(key_b, x0)
    t = t / jnp.max(jnp.abs(t), axis=tuple(range(1, t.ndim)), keepdims=True)
    return jnp.clip(x0 + _bcast(eps, x0) * t, 0.0, 1.0)


def _one_restart(fn: StatefulFn, keys, x0, y, eps, *, steps, eot, random_start, unroll):
    x = start_point(fold(keys, 0), x0, eps) if random_start else x0
    grad_keys = fold(keys, 1)
    f, g, mg, state = objective(fn, fold(grad_keys, 0), x, y, None, eot=eot)
    halve_after = jnp.zeros(steps + 1, bool).at[jnp.asarray(apgd.checkpoints(steps))].set(True)
    e = _bcast(eps, x0)
    s = dict(x=x, g=g, state=state, m=jnp.zeros_like(x0), v=jnp.zeros_like(x0),
             eta=jnp.broadcast_to(e, (x0.shape[0],) + (1,) * (x0.ndim - 1)).astype(jnp.float32),
             x_pick=x, m_pick=mg, f_pick=f)

    def body(i, s):
        g = s["g"]
        m = MOMENTUM * s["m"] + g / (_mean_over_example(jnp.abs(g)) + _TINY)
        v = SECOND_MOMENT * s["v"] + g * g / (_mean_over_example(g * g) + _TINY)
        step = jnp.clip(m / (jnp.sqrt(v) + _TINY) * s["eta"], -s["eta"], s["eta"])
        x_new = jnp.clip(jnp.clip(s["x"] + step, x0 - e, x0 + e), 0.0, 1.0)
        f_new, g_new, m_new, state = objective(fn, fold(grad_keys, i + 1), x_new, y, s["state"], eot=eot)
        lower = m_new < s["m_pick"]
        return dict(x=x_new, g=g_new, state=state, m=m, v=v,
                    eta=jnp.where(halve_after[i + 1], s["eta"] / 2.0, s["eta"]),
                    x_pick=jnp.where(_bcast(lower, x0), x_new, s["x_pick"]),
                    m_pick=jnp.where(lower, m_new, s["m_pick"]), f_pick=jnp.where(lower, f_new, s["f_pick"]))

    s = jax.lax.fori_loop(0, steps, body, s, unroll=backend.should_unroll(unroll, steps * eot))
    return {"x_pick": s["x_pick"], "m_pick": s["m_pick"], "f_pick": s["f_pick"],
            "eta": s["eta"].reshape(x0.shape[0])}


def stateless(logits_fn: LogitsFn) -> StatefulFn:
    """A plain ``logits_fn(key, x)`` as a ``StatefulFn`` with no state."""
    return lambda k, x, st, update: (logits_fn(k, x), st)


def sapgd_with_info(logits_fn: LogitsFn | None, key: Array, x: Array, y: Array, *, eps: float | Array = 8 / 255,
                    steps: int = 100, eot: int = 1, restarts: int = 1, random_start: bool = True,
                    stateful: StatefulFn | None = None, unroll: bool | None = None) -> tuple[Array, dict[str, Array]]:
    """SA-PGD (module docstring), l_inf, cross-entropy.

    Args:
      logits_fn: ``(key, x[B, ...]) -> logits [B, C]`` (None with ``stateful``).
      key: one key or ``[B]`` per-example keys. x: ``[B, H, W, C]`` in [0, 1]; y: ``[B]``.
      eps: l_inf radius; steps: N >= 1; eot: K draws per step; restarts: R >= 1 (static).
      random_start: start on the sphere of the ball (the authors'), else at x.
      stateful: ``(key, x, state, update) -> (logits, state)`` (``Classifier.stateful`` of
        a ``with_neuron(surrogate="assg-ema")`` copy): replaces ``logits_fn``.

    Returns:
      (``[B, ...]`` adversarial images: per example the iterate of lowest margin of the
      K-averaged logits over steps and restarts, dict of ``[B]`` arrays ``margin`` (that
      margin), ``loss_at_pick`` and ``step_size`` (the final eta)).
    """
    if (logits_fn is None) == (stateful is None):
        raise ValueError("sapgd needs exactly one of logits_fn and stateful")
    validation.check_int("restarts", restarts, 1)
    fn = stateful if stateful is not None else stateless(logits_fn)
    keys, x32, eps = attacks.check_and_prepare(key, x, y, eps, "linf", eot)
    validation.check_int("steps", steps, 1)
    run = [_one_restart(fn, fold(keys, 100 + r), x32, y, eps, steps=steps, eot=eot, random_start=random_start,
                        unroll=unroll) for r in range(restarts)]
    out = run[0]
    for other in run[1:]:
        take = other["m_pick"] < out["m_pick"]
        out = {k: jnp.where(_bcast(take, v), other[k], v) for k, v in out.items()}
    return out["x_pick"].astype(x.dtype), {"margin": out["m_pick"], "loss_at_pick": out["f_pick"],
                                           "step_size": out["eta"]}


def sapgd(logits_fn: LogitsFn | None, key: Array, x: Array, y: Array, **kwargs: Any) -> Array:
    """SA-PGD's adversarial images ``[B, ...]`` (``sapgd_with_info`` without the info)."""
    return sapgd_with_info(logits_fn, key, x, y, **kwargs)[0]


def passes(steps: int, eot: int, restarts: int) -> int:
    """Input gradients per example: (steps + 1) evaluations of K draws per restart."""
    return restarts * (steps + 1) * eot


__all__ = ["MOMENTUM", "SECOND_MOMENT", "StatefulFn", "objective", "passes", "sapgd", "sapgd_with_info",
           "start_point", "stateless"]
