"""The attack settings of the robustness evaluation, one small function per family.

A family turns the ``config.attack`` section into ``Job``s (one row of the results
each): the craft function (pure, from ``attacks.py``), its eps, its norm and the JSON
record of its settings. ``jobs`` lays them out in the order they run: clean; the l_inf
grid families (FGSM, PGD-k); at every strong eps the strong families (PGD with more
steps, PGD with EOT, APGD, the surrogate ensemble, transfer from another model and from
the noise-free copy, the adaptive attacks on Poisson coding, Square); the huge-budget sanity
PGD; the l_2 grid. Adding an attack is one function in ``attacks.py``, one family here
and its entry in ``GRID``/``STRONG``/``ONCE`` (plus its config fields).

References: FGSM (Goodfellow et al., 2015), PGD (Madry et al., 2018), EOT (Athalye et
al., 2018), APGD (Croce & Hein, 2020), BPTR and surrogate variants (Ding et al., 2022), Square (Andriushchenko et
al., 2020).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from rsc_jax import apgd, attacks
from rsc_jax.evaluators.common import LogitsFn

Array = jax.Array
# craft(keys [B], x, y, eps) -> (x_adv, extra outputs) ; the ensemble returns [N, B, ...] candidates.
Craft = Callable[[Array, Array, Array, Array], tuple[Array, dict[str, Array]]]


@dataclasses.dataclass
class Job:
    name: str               # row name, e.g. "pgd-7"
    curve: str | None       # curve it belongs to (for QTE), or None
    norm: str
    eps: float
    record: dict[str, Any]  # JSON settings
    craft: Craft | None     # None: clean
    cache_key: tuple        # jobs with one key share one compiled function
    candidates: tuple[str, ...] = ()   # ensemble: the variants behind the [N, B, ...] candidates


@dataclasses.dataclass(frozen=True)
class Suite:
    """What the families are built from: the attack config and the functions attacked."""
    cfg: Any
    logits_fn: LogitsFn
    variants: Mapping[str, LogitsFn]
    transfer: LogitsFn | None
    num_classes: int | None = None
    expectation: LogitsFn | None = None
    relaxations: Mapping[str, LogitsFn] | None = None   # Poisson models: {"gumbel", "relaxed"} copies
    stochastic: bool = True                             # coding draws differ (False: direct coding)

    @property
    def base(self) -> dict[str, Any]:
        c = self.cfg
        return dict(steps=c.steps, step_size=c.step_size, eot=c.eot, random_start=c.random_start,
                    common_random_numbers=c.common_random_numbers)


def _plain(fn: Callable[..., Array]) -> Craft:
    def craft(k, x, y, eps):
        return fn(k, x, y, eps), {}
    return craft


def _pgd(s: Suite, fn: LogitsFn, *, steps: int, step_size: float, eot: int, norm: str = "linf",
         l2_scale: float | None = None, **_: Any) -> Craft:
    def f(k, x, y, eps):
        ss = l2_scale * eps / steps if l2_scale is not None else step_size
        return attacks.pgd(fn, k, x, y, eps=eps, step_size=ss, steps=steps, norm=norm, eot=eot,
                           random_start=s.cfg.random_start, common_random_numbers=s.cfg.common_random_numbers)
    return _plain(f)


def _apgd(fn: LogitsFn, kw: dict[str, Any]) -> Craft:
    return _plain(lambda k, x, y, eps: apgd.apgd(fn, k, x, y, eps=eps, **kw))


def clean(s: Suite) -> list[Job]:
    return [Job("clean", None, "linf", 0.0, {"attack": "clean"}, None, ("clean",))]


def fgsm(s: Suite) -> list[Job]:
    c = s.cfg
    if not c.fgsm:
        return []
    craft = _plain(lambda k, x, y, eps: attacks.fgsm(s.logits_fn, k, x, y, eps=eps, eot=c.eot))
    return [Job("fgsm", "fgsm", "linf", e, {"attack": "fgsm", "eot": c.eot}, craft, ("fgsm",)) for e in c.eps_grid]


def pgd(s: Suite) -> list[Job]:
    """PGD-k over the eps grid (the ``pgd`` curve) and at strong eps outside it."""
    c = s.cfg
    grid = list(c.eps_grid) + [e for e in c.strong_eps if e not in c.eps_grid]
    return [Job(f"pgd-{c.steps}", "pgd" if e in c.eps_grid else None, "linf", e, {"attack": "pgd", **s.base},
                _pgd(s, s.logits_fn, **s.base), ("pgd",)) for e in grid]


def pgd_strong(s: Suite, e: float) -> list[Job]:
    st = dict(s.base, steps=s.cfg.strong_steps)
    return [Job(f"pgd-{s.cfg.strong_steps}", None, "linf", e, {"attack": "pgd", **st}, _pgd(s, s.logits_fn, **st),
                ("pgd-strong",))]


def pgd_eot(s: Suite, e: float) -> list[Job]:
    st = dict(s.base, eot=s.cfg.strong_eot)
    return [Job(f"pgd-{s.cfg.steps}-eot{s.cfg.strong_eot}", None, "linf", e, {"attack": "pgd", **st},
                _pgd(s, s.logits_fn, **st), ("pgd-eot",))]


def ensemble(s: Suite, e: float) -> list[Job]:
    """PGD through the model and every gradient variant; the evaluator keeps, per
    example, the strongest candidate on the select stream (``attacks.select_strongest``)."""
    c = s.cfg
    if not (c.ensemble and s.variants):
        return []
    fns = {"model": s.logits_fn, **{n: s.variants[n] for n in sorted(s.variants)}}

    def craft(k, x, y, eps):
        return attacks.ensemble_candidates(fns, k, x, y, eps=eps, step_size=c.step_size, steps=c.steps,
                                           eot=c.eot, random_start=c.random_start,
                                           common_random_numbers=c.common_random_numbers), {}

    rec = {"attack": "pgd-ensemble", **s.base, "variants": list(fns), "select_draws": c.select_draws,
           "selection": "per example: misclassified on M-averaged logits, else highest CE (select stream 2)"}
    return [Job("ensemble-pgd", None, "linf", e, rec, craft, ("ensemble",), candidates=tuple(fns))]


def apgd_family(s: Suite, e: float) -> list[Job]:
    """APGD (Croce & Hein, 2020) with each loss of ``apgd_losses``, EOT in every step, the
    best iterate over ``apgd_restarts`` restarts; DLR losses only where the model has
    enough classes (3, or 4 targeted)."""
    c = s.cfg
    if not c.apgd:
        return []
    out = []
    for loss in c.apgd_losses:
        if s.num_classes is not None and s.num_classes < apgd.classes_needed(loss):
            continue
        kw = dict(steps=c.apgd_steps, eot=c.apgd_eot, restarts=c.apgd_restarts, loss=loss)
        out.append(Job(f"apgd-{loss}", None, "linf", e, {"attack": "apgd", **kw}, _apgd(s.logits_fn, kw),
                       ("apgd", loss)))
    return out


def transfer(s: Suite, e: float) -> list[Job]:
    if not (s.cfg.transfer and s.transfer is not None):
        return []
    return [Job("transfer-pgd", None, "linf", e, {"attack": "pgd", "crafted_with": "transfer model", **s.base},
                _pgd(s, s.transfer, **s.base), ("transfer",))]


def expectation(s: Suite, e: float) -> list[Job]:
    """PGD crafted on the noise-free copy of the model (same weights, direct coding: the
    coding's expectation), transferred to the noisy model."""
    if not (s.cfg.transfer_expectation and s.expectation is not None):
        return []
    return [Job("expectation-pgd", None, "linf", e,
                {"attack": "pgd", "crafted_with": "noise-free copy (direct coding)", **s.base},
                _pgd(s, s.expectation, **s.base), ("expectation",))]


def poisson_adaptive(s: Suite, e: float) -> list[Job]:
    """Adaptive attacks on Poisson coding (its straight-through gradient can be masked):
    PGD with the strong budget (steps and EOT) through the Gumbel-sigmoid gradient of the
    exact spikes (a white-box attack on the model itself), PGD crafted on the relaxed
    copy (transferred) and, with ``apgd``, APGD-CE through the Gumbel-sigmoid gradient.
    Gumbel-sigmoid: Maddison et al. / Jang et al., ICLR 2017; BPDA: Athalye et al., 2018."""
    c, r = s.cfg, s.relaxations
    if not (c.poisson_adaptive and r):
        return []
    st = dict(s.base, steps=c.strong_steps, eot=c.strong_eot)
    tau = {"gumbel_temperature": c.gumbel_temperature}
    out = [Job(f"gumbel-pgd-{c.strong_steps}-eot{c.strong_eot}", None, "linf", e,
               {"attack": "pgd", "gradient": "Gumbel-sigmoid (straight-through)", **tau, **st},
               _pgd(s, r["gumbel"], **st), ("gumbel-pgd",)),
           Job(f"relaxed-pgd-{c.strong_steps}-eot{c.strong_eot}", None, "linf", e,
               {"attack": "pgd", "crafted_with": "relaxed Poisson copy (Gumbel-sigmoid)", **tau, **st},
               _pgd(s, r["relaxed"], **st), ("relaxed-pgd",))]
    if c.apgd:
        kw = dict(steps=c.apgd_steps, eot=c.apgd_eot, restarts=c.apgd_restarts, loss="ce")
        out.append(Job("apgd-ce-gumbel", None, "linf", e,
                       {"attack": "apgd", "gradient": "Gumbel-sigmoid (straight-through)", **tau, **kw},
                       _apgd(r["gumbel"], kw), ("apgd-gumbel",)))
    return out


def square(s: Suite, e: float) -> list[Job]:
    c = s.cfg
    if not c.square:
        return []
    sq = dict(queries=c.square_queries, p_init=c.square_p_init, draws=c.square_draws)
    return [Job("square", None, "linf", e, {"attack": "square", **sq},
                _plain(lambda k, x, y, eps: attacks.square(s.logits_fn, k, x, y, eps=eps, **sq)), ("square",))]


def sanity(s: Suite) -> list[Job]:
    """PGD at the huge budget ``sanity_eps`` (``masking.huge_budget``: it must drive the
    accuracy near 0). A stochastic model gets ``sanity_eot`` draws per step (ours: 10):
    with one, its own gradient noise can leave a few per cent (docs/RESULTS.md)."""
    c = s.cfg
    if not c.sanity:
        return []
    st = dict(s.base, steps=c.sanity_steps, step_size=2.5 * c.sanity_eps / c.sanity_steps,
              eot=c.sanity_eot if s.stochastic else s.base["eot"])
    return [Job("sanity-pgd", None, "linf", c.sanity_eps, {"attack": "pgd", **st}, _pgd(s, s.logits_fn, **st),
                ("sanity",))]


def l2(s: Suite) -> list[Job]:
    c = s.cfg
    if not c.l2:
        return []
    rec = {"attack": "pgd", **s.base, "step_size": f"{c.l2_step_scale} * eps / steps"}
    craft = _pgd(s, s.logits_fn, **dict(s.base, norm="l2", l2_scale=c.l2_step_scale))
    return [Job(f"pgd-{c.steps}-l2", "pgd-l2", "l2", e, rec, craft, ("pgd-l2",)) for e in c.l2_eps_grid]


GRID: tuple[Callable[[Suite], list[Job]], ...] = (clean, fgsm, pgd)
STRONG: tuple[Callable[[Suite, float], list[Job]], ...] = (pgd_strong, pgd_eot, apgd_family, ensemble, transfer,
                                                           expectation, poisson_adaptive, square)
ONCE: tuple[Callable[[Suite], list[Job]], ...] = (sanity, l2)


def jobs(cfg: Any, logits_fn: LogitsFn, variants: Mapping[str, LogitsFn], transfer_fn: LogitsFn | None,
         num_classes: int | None = None, expectation_fn: LogitsFn | None = None,
         relaxations: Mapping[str, LogitsFn] | None = None, stochastic: bool = True) -> list[Job]:
    """Every job of the suite, in the order they run. ``stochastic``: the model draws
    fresh coding noise per call (False only for direct coding: EOT would repeat one draw)."""
    s = Suite(cfg, logits_fn, variants, transfer_fn, num_classes, expectation_fn, relaxations, stochastic)
    out = [j for fam in GRID for j in fam(s)]
    out += [j for e in cfg.strong_eps for fam in STRONG for j in fam(s, e)]
    return out + [j for fam in ONCE for j in fam(s)]
