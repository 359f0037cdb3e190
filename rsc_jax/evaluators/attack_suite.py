"""The attack settings of the robustness evaluation, one small function per family.

A family turns the ``config.attack`` section into ``Job``s (one row of the results
each): the craft function (pure, from ``attacks.py`` / ``apgd.py``), its eps, its norm,
the JSON record of its settings, its place in the worst case's cascade and its cost in
forward/backward passes per example (``Passes``, counted from the settings the craft
function runs with). ``jobs`` lays them out: clean; the l_inf grid families (FGSM, the
paper's PGD-k with its fixed step); at every strong eps the strong families; the
huge-budget sanity PGD; the l_2 grid (PGD-k and APGD-CE with EOT).

Every iterative attack at a strong eps has a step that scales with eps, so it can reach
the eps boundary whatever eps is: PGD with more steps, PGD with EOT and the adaptive
Poisson PGD step ``strong_step_scale * eps / steps`` (ours: 2.5, Madry et al.'s rule,
as the l_2 grid and the sanity PGD); APGD starts at 2 eps and halves (Croce & Hein). The
surrogate ensemble (every surrogate and sharpness, BPTR), the transfer from another
model (the ANN twin) and from the noise-free copy run APGD-CE at the APGD budget
(``apgd_steps``, ``apgd_eot``, ``apgd_restarts``; the noise-free copy is deterministic:
one draw). The paper's PGD-k with its fixed ``step_size`` (2/255) stays as its own row
(``pgd-7``): at 32/255 it moves at most 7 x 2/255 from its random start.

The cascade (``Job.order``, ``Job.common``): in the worst case (``evaluators.robustness``)
the attacks at one eps run in the order of ``ORDER`` (AutoAttack's: APGD-CE first), each
only on the examples no earlier one has broken; the families every model gets (clean,
APGD, PGD, FGSM, Square; ``common=True``) come first, so the worst case over that common
set is a prefix of the cascade, and the families only some models get (the surrogate
ensemble and BPTR for spiking models, transfer, the noise-free copy, the Poisson
attacks) follow Square.

References: FGSM (Goodfellow et al., 2015), PGD (Madry et al., 2018), EOT (Athalye et
al., 2018), APGD and AutoAttack's order (Croce & Hein, 2020), BPTR and surrogate
variants (Ding et al., 2022), Square (Andriushchenko et al., 2020).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from rsc_jax import apgd, attacks, sapgd
from rsc_jax.evaluators.common import LogitsFn

Array = jax.Array
# craft(keys [B], x, y, eps) -> (x_adv, extra outputs) ; the ensemble returns [N, B, ...] candidates.
Craft = Callable[[Array, Array, Array, Array], tuple[Array, dict[str, Array]]]

# The cascade's order of families at one eps (module docstring); families up to and
# including "square" are the common set every model gets.
ORDER: tuple[str, ...] = ("clean", "apgd", "pgd-strong", "pgd-eot", "pgd", "fgsm", "square",
                          "ensemble", "sapgd", "transfer", "expectation", "poisson")
COMMON: frozenset[str] = frozenset(ORDER[:ORDER.index("square") + 1])


@dataclasses.dataclass(frozen=True)
class Passes:
    """Forward and backward passes of the classifier per example to craft one point."""
    forward: int = 0
    backward: int = 0

    def __add__(self, other: "Passes") -> "Passes":
        return Passes(self.forward + other.forward, self.backward + other.backward)

    def __mul__(self, k: int) -> "Passes":
        return Passes(self.forward * k, self.backward * k)

    def as_dict(self) -> dict[str, int]:
        return {"forward": self.forward, "backward": self.backward}


def grads(k: int) -> Passes:
    """k input gradients: k forward and k backward passes."""
    return Passes(k, k)


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
    family: str = "clean"   # its entry of ORDER (the cascade's order); "" = not in the worst case
    passes: Passes = Passes()

    @property
    def order(self) -> int:
        return ORDER.index(self.family)

    @property
    def common(self) -> bool:
        return self.family in COMMON

@dataclasses.dataclass(frozen=True)
class Suite:
    """What the families are built from: the attack config and the functions attacked."""
    cfg: Any
    logits_fn: LogitsFn
    variants: Mapping[str, LogitsFn]
    transfer: LogitsFn | None
    num_classes: int | None = None
    expectation: LogitsFn | None = None
    relaxations: Mapping[str, LogitsFn] | None = None   # Poisson: {"gumbel@TAU", "relaxed@TAU"} copies
    stochastic: bool = True                             # coding draws differ (False: direct coding)
    exact: tuple[apgd.DrawGrad, int] | None = None      # Poisson: unbiased per-draw gradient, its forwards
    layer_surrogates: Mapping[str, sapgd.StatefulFn] | None = None   # spiking: SA-PGD's "assg", "pdsg" copies

    @property
    def base(self) -> dict[str, Any]:
        c = self.cfg
        return dict(steps=c.steps, step_size=c.step_size, eot=c.eot, random_start=c.random_start,
                    common_random_numbers=c.common_random_numbers)

    def strong_step(self, e: float, steps: int) -> float:
        """The step of PGD at a strong eps: ``strong_step_scale * eps / steps``."""
        return self.cfg.strong_step_scale * e / steps

    def apgd_kw(self, loss: str = "ce", *, eot: int | None = None, norm: str = "linf") -> dict[str, Any]:
        c = self.cfg
        return dict(steps=c.apgd_steps, eot=c.apgd_eot if eot is None else eot, restarts=c.apgd_restarts,
                    loss=loss, norm=norm)


def _plain(fn: Callable[..., Array]) -> Craft:
    def craft(k, x, y, eps):
        return fn(k, x, y, eps), {}
    return craft


def _pgd(s: Suite, fn: LogitsFn, *, steps: int, step_size: float, eot: int, norm: str = "linf",
         scale: float | None = None, **_: Any) -> Craft:
    """PGD with a fixed ``step_size``, or with ``scale * eps / steps`` from the eps it is
    called with (one compiled function serves every eps of a job family)."""
    def f(k, x, y, eps):
        ss = scale * eps / steps if scale is not None else step_size
        return attacks.pgd(fn, k, x, y, eps=eps, step_size=ss, steps=steps, norm=norm, eot=eot,
                           random_start=s.cfg.random_start, common_random_numbers=s.cfg.common_random_numbers)
    return _plain(f)


def _apgd(fn: LogitsFn, kw: dict[str, Any]) -> Craft:
    return _plain(lambda k, x, y, eps: apgd.apgd(fn, k, x, y, eps=eps, **kw))


def apgd_passes(kw: Mapping[str, Any]) -> Passes:
    """``apgd.apgd``'s passes per example: per restart (steps + 1) objective evaluations of
    K gradients each (the margin loss first runs K forwards more), plus one forward for the
    targeted DLR's target."""
    k, evals = kw["eot"], kw["restarts"] * (kw["steps"] + 1)
    extra = Passes(evals * k if kw["loss"] == "margin" else 0) + Passes(1 if kw["loss"] == "dlr-targeted" else 0)
    return grads(evals * k) + extra


def _pgd_job(s: Suite, name: str, e: float, st: dict[str, Any], fn: LogitsFn, cache: tuple, family: str,
             **record: Any) -> Job:
    """PGD at strong eps ``e`` with the step ``strong_step_scale * eps / steps`` (recorded
    as its value at ``e``)."""
    st = dict(st, step_size=s.strong_step(e, st["steps"]))
    return Job(name, None, "linf", e, {"attack": "pgd", **record, **st},
               _pgd(s, fn, **st, scale=s.cfg.strong_step_scale), cache, family=family,
               passes=grads(st["steps"] * st["eot"]))


def clean(s: Suite) -> list[Job]:
    return [Job("clean", None, "linf", 0.0, {"attack": "clean"}, None, ("clean",), family="clean")]


def fgsm(s: Suite) -> list[Job]:
    c = s.cfg
    if not c.fgsm:
        return []
    craft = _plain(lambda k, x, y, eps: attacks.fgsm(s.logits_fn, k, x, y, eps=eps, eot=c.eot))
    return [Job("fgsm", "fgsm", "linf", e, {"attack": "fgsm", "eot": c.eot}, craft, ("fgsm",), family="fgsm",
                passes=grads(c.eot)) for e in c.eps_grid]


def pgd(s: Suite) -> list[Job]:
    """The paper's PGD-k (fixed ``step_size``) over the eps grid (the ``pgd`` curve) and at
    strong eps outside it."""
    c = s.cfg
    grid = list(c.eps_grid) + [e for e in c.strong_eps if e not in c.eps_grid]
    return [Job(f"pgd-{c.steps}", "pgd" if e in c.eps_grid else None, "linf", e,
                {"attack": "pgd", "step_rule": "fixed (the paper's)", **s.base},
                _pgd(s, s.logits_fn, **s.base), ("pgd",), family="pgd", passes=grads(c.steps * c.eot))
            for e in grid]


def pgd_strong(s: Suite, e: float) -> list[Job]:
    st = dict(s.base, steps=s.cfg.strong_steps)
    return [_pgd_job(s, f"pgd-{s.cfg.strong_steps}", e, st, s.logits_fn, ("pgd-strong",), "pgd-strong",
                     step_rule="strong_step_scale * eps / steps")]


def pgd_eot(s: Suite, e: float) -> list[Job]:
    st = dict(s.base, eot=s.cfg.strong_eot)
    return [_pgd_job(s, f"pgd-{s.cfg.steps}-eot{s.cfg.strong_eot}", e, st, s.logits_fn, ("pgd-eot",), "pgd-eot",
                     step_rule="strong_step_scale * eps / steps")]


def apgd_family(s: Suite, e: float) -> list[Job]:
    """APGD (Croce & Hein, 2020) with each loss of ``apgd_losses``, EOT in every step, the
    iterate of lowest averaged-logit margin over ``apgd_restarts`` restarts; DLR losses
    only where the model has enough classes (3, or 4 targeted)."""
    c = s.cfg
    if not c.apgd:
        return []
    out = []
    for loss in c.apgd_losses:
        if s.num_classes is not None and s.num_classes < apgd.classes_needed(loss):
            continue
        kw = s.apgd_kw(loss)
        out.append(Job(f"apgd-{loss}", None, "linf", e, {"attack": "apgd", **kw}, _apgd(s.logits_fn, kw),
                       ("apgd", loss), family="apgd", passes=apgd_passes(kw)))
    return out


def _has_apgd_ce(s: Suite) -> bool:
    return bool(s.cfg.apgd) and "ce" in s.cfg.apgd_losses


def ensemble(s: Suite, e: float) -> list[Job]:
    """APGD-CE through every gradient variant (surrogates, their sharp versions, BPTR) and
    through the model itself unless APGD-CE already runs as its own row; the evaluator
    keeps, per example, the strongest candidate on the select stream
    (``attacks.select_strongest``)."""
    c = s.cfg
    if not (c.ensemble and s.variants):
        return []
    fns = {} if _has_apgd_ce(s) else {"model": s.logits_fn}
    fns.update({n: s.variants[n] for n in sorted(s.variants)})
    kw = s.apgd_kw("ce")

    def craft(k, x, y, eps):
        return attacks.ensemble_candidates(fns, k, x, y, attack=apgd.apgd, eps=eps, **kw), {}

    rec = {"attack": "apgd-ensemble", **kw, "variants": list(fns), "select_draws": c.select_draws,
           "selection": "per example: misclassified on M-averaged logits, else highest CE (select stream 2)"}
    return [Job("ensemble-apgd", None, "linf", e, rec, craft, ("ensemble",), candidates=tuple(fns),
                family="ensemble", passes=apgd_passes(kw) * len(fns) + Passes(c.select_draws * len(fns)))]


def sapgd_family(s: Suite, e: float) -> list[Job]:
    """SA-PGD (``sapgd.py``; Wang et al., arXiv 2512.22522) with the APGD budget through
    the model's own gradient and, for spiking models, through the published ASSG (its
    running statistics carried across the passes) and PDSG surrogates
    (``Suite.layer_surrogates``)."""
    c = s.cfg
    if not c.sapgd:
        return []
    kw = dict(steps=c.apgd_steps, eot=c.apgd_eot, restarts=c.apgd_restarts)
    cost = grads(sapgd.passes(**kw))
    fns = {"sapgd": sapgd.stateless(s.logits_fn)}
    fns.update({f"sapgd-{n}": f for n, f in sorted((s.layer_surrogates or {}).items())})
    out = []
    for name, fn in fns.items():
        gradient = "model" if name == "sapgd" else name.split("-", 1)[1]

        def craft(k, x, y, eps, fn=fn):
            return sapgd.sapgd(None, k, x, y, eps=eps, stateful=fn, **kw), {}
        out.append(Job(name, None, "linf", e, {"attack": "sapgd", "surrogate": gradient, **kw}, craft,
                       ("sapgd", name), family="sapgd", passes=cost))
    return out


def transfer(s: Suite, e: float) -> list[Job]:
    """APGD-CE crafted on another model (the ANN twin), judged on this one."""
    if not (s.cfg.transfer and s.transfer is not None):
        return []
    kw = s.apgd_kw("ce")
    return [Job("transfer-apgd", None, "linf", e, {"attack": "apgd", "crafted_with": "transfer model", **kw},
                _apgd(s.transfer, kw), ("transfer",), family="transfer", passes=apgd_passes(kw))]


def expectation(s: Suite, e: float) -> list[Job]:
    """APGD-CE crafted on the noise-free copy of the model (same weights, direct coding:
    the coding's expectation; deterministic, so one draw per step), transferred to the
    noisy model."""
    if not (s.cfg.transfer_expectation and s.expectation is not None):
        return []
    kw = s.apgd_kw("ce", eot=1)
    return [Job("expectation-apgd", None, "linf", e,
                {"attack": "apgd", "crafted_with": "noise-free copy (direct coding)", **kw},
                _apgd(s.expectation, kw), ("expectation",), family="expectation", passes=apgd_passes(kw))]


def poisson_adaptive(s: Suite, e: float) -> list[Job]:
    """Adaptive attacks on Poisson coding (its straight-through gradient can be masked),
    at each temperature tau of ``gumbel_temperatures``: PGD with the strong budget (steps,
    EOT, eps-scaled step) through the Gumbel-sigmoid gradient of the exact spikes (a
    white-box attack on the model itself) and PGD crafted on the relaxed copy
    (transferred); with ``apgd``, APGD-CE with EOT through the Gumbel-sigmoid gradient
    and through the relaxed copy, and, where the images are small enough for it
    (``Suite.exact``), APGD-CE with the unbiased gradient of ``bernoulli.py`` and
    ``poisson_exact_eot`` draws per step.
    Gumbel-sigmoid: Maddison et al. / Jang et al., ICLR 2017; BPDA: Athalye et al., 2018."""
    c, r = s.cfg, s.relaxations
    if not (c.poisson_adaptive and r):
        return []
    st = dict(s.base, steps=c.strong_steps, eot=c.strong_eot)
    kw = s.apgd_kw("ce")
    out = []
    for tau in c.gumbel_temperatures:
        t = {"gumbel_temperature": tau}
        sfx = "" if tau == c.gumbel_temperatures[0] else f"-tau{tau:g}"
        out += [_pgd_job(s, f"gumbel-pgd-{c.strong_steps}-eot{c.strong_eot}{sfx}", e, st, r[f"gumbel@{tau:g}"],
                         ("gumbel-pgd", tau), "poisson", gradient="Gumbel-sigmoid (straight-through)", **t),
                _pgd_job(s, f"relaxed-pgd-{c.strong_steps}-eot{c.strong_eot}{sfx}", e, st, r[f"relaxed@{tau:g}"],
                         ("relaxed-pgd", tau), "poisson", crafted_with="relaxed Poisson copy (Gumbel-sigmoid)", **t)]
        if c.apgd:
            out += [Job(f"apgd-ce-gumbel{sfx}", None, "linf", e,
                        {"attack": "apgd", "gradient": "Gumbel-sigmoid (straight-through)", **t, **kw},
                        _apgd(r[f"gumbel@{tau:g}"], kw), ("apgd-gumbel", tau), family="poisson",
                        passes=apgd_passes(kw)),
                    Job(f"apgd-ce-relaxed{sfx}", None, "linf", e,
                        {"attack": "apgd", "crafted_with": "relaxed Poisson copy (Gumbel-sigmoid)", **t, **kw},
                        _apgd(r[f"relaxed@{tau:g}"], kw), ("apgd-relaxed", tau), family="poisson",
                        passes=apgd_passes(kw))]
    if c.apgd and s.exact is not None:
        draw_grad, per_draw = s.exact
        kw = s.apgd_kw("ce", eot=c.poisson_exact_eot)
        out.append(Job("apgd-ce-exact", None, "linf", e,
                       {"attack": "apgd", "gradient": "unbiased (local expectation, bernoulli.py)", **kw},
                       _plain(lambda k, x, y, eps: apgd.apgd(s.logits_fn, k, x, y, eps=eps, draw_grad=draw_grad, **kw)),
                       ("apgd-exact",), family="poisson",
                       passes=Passes(kw["restarts"] * (kw["steps"] + 1) * kw["eot"] * per_draw)))
    return out


def square(s: Suite, e: float) -> list[Job]:
    c = s.cfg
    if not c.square:
        return []
    sq = dict(queries=c.square_queries, p_init=c.square_p_init, draws=c.square_draws)
    return [Job("square", None, "linf", e, {"attack": "square", **sq},
                _plain(lambda k, x, y, eps: attacks.square(s.logits_fn, k, x, y, eps=eps, **sq)), ("square",),
                family="square", passes=Passes(2 * c.square_queries * c.square_draws))]


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
                ("sanity",), family="", passes=grads(st["steps"] * st["eot"]))]


def l2(s: Suite) -> list[Job]:
    """The l_2 grid: PGD-k with step ``l2_step_scale * eps / steps`` and, with ``apgd`` and
    ``l2_apgd``, APGD-CE with the APGD budget (EOT in every step)."""
    c = s.cfg
    if not c.l2:
        return []
    rec = {"attack": "pgd", **s.base, "step_size": f"{c.l2_step_scale} * eps / steps"}
    craft = _pgd(s, s.logits_fn, **dict(s.base, norm="l2", scale=c.l2_step_scale))
    out = [Job(f"pgd-{c.steps}-l2", "pgd-l2", "l2", e, rec, craft, ("pgd-l2",), family="",
               passes=grads(c.steps * c.eot)) for e in c.l2_eps_grid]
    if c.apgd and c.l2_apgd:
        kw = s.apgd_kw("ce", norm="l2")
        out += [Job("apgd-ce-l2", "apgd-l2", "l2", e, {"attack": "apgd", **kw}, _apgd(s.logits_fn, kw),
                    ("apgd-l2",), family="", passes=apgd_passes(kw)) for e in c.l2_eps_grid]
    return out


GRID: tuple[Callable[[Suite], list[Job]], ...] = (clean, fgsm, pgd)
STRONG: tuple[Callable[[Suite, float], list[Job]], ...] = (pgd_strong, pgd_eot, apgd_family, ensemble, sapgd_family,
                                                           transfer, expectation, poisson_adaptive, square)
ONCE: tuple[Callable[[Suite], list[Job]], ...] = (sanity, l2)


def jobs(cfg: Any, logits_fn: LogitsFn, variants: Mapping[str, LogitsFn], transfer_fn: LogitsFn | None,
         num_classes: int | None = None, expectation_fn: LogitsFn | None = None,
         relaxations: Mapping[str, LogitsFn] | None = None, stochastic: bool = True,
         exact: tuple[apgd.DrawGrad, int] | None = None,
         layer_surrogates: Mapping[str, sapgd.StatefulFn] | None = None) -> list[Job]:
    """Every job of the suite, in the order of the results table. ``stochastic``: the model
    draws fresh coding noise per call (False only for direct coding: EOT would repeat one
    draw). ``relaxations``: for Poisson models, ``{"gumbel@TAU", "relaxed@TAU"}`` copies
    for every TAU of ``cfg.gumbel_temperatures`` (``f"{tau:g}"``); ``exact``: for them too,
    an unbiased per-draw gradient and its forward passes per draw; ``layer_surrogates``:
    for spiking models, SA-PGD's copies through the published layer surrogates."""
    s = Suite(cfg, logits_fn, variants, transfer_fn, num_classes, expectation_fn, relaxations, stochastic, exact,
              layer_surrogates)
    out = [j for fam in GRID for j in fam(s)]
    out += [j for e in cfg.strong_eps for fam in STRONG for j in fam(s, e)]
    return out + [j for fam in ONCE for j in fam(s)]


def chain(jobs_: list[Job], e: float) -> list[Job]:
    """The jobs of the worst case at l_inf eps ``e`` in cascade order: clean, then every
    l_inf attack at ``e`` but the sanity PGD, sorted by ``ORDER`` (stable: a family's rows
    keep the table's order)."""
    members = [j for j in jobs_ if j.craft is None] + [
        j for j in jobs_ if j.craft is not None and j.norm == "linf" and j.eps == e and j.family]
    return sorted(members, key=lambda j: j.order)
