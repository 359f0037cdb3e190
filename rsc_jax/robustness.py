"""Adversarial-robustness evaluation: settings, orchestration, checks, JSON/PNG/markdown.

The math lives in ``attacks.py`` (FGSM, PGD, EOT, surrogate ensemble, Square) and
``metrics.py`` (QTE); this module loops over attack settings, shards the work over a
device mesh with ``parallel.map_examples`` and writes the results.

Protocol (SPEC §4; Wu et al., ACM MM 2024). For every setting, example i is crafted with
per-example keys ``attacks.example_keys(seed, i, stream=0)`` and judged on M fresh coding
draws with ``stream=1`` (the ensemble selects with ``stream=2``), so results do not
depend on batch size or device count, and all settings share the same coding draws
(common random numbers: differences between settings are not sampling noise).
Each setting reports
``acc_single`` (single-draw accuracy, averaged over the M draws) and ``acc_avg``
(accuracy of the logits averaged over M draws). An attack with eps = 0 is the identity,
so its row reuses the clean result.

Settings run (all configurable in ``default_config``):
clean; FGSM (Goodfellow et al., 2015) and PGD-7 (Madry et al., 2018) over the l_inf eps
grid; at each "strong" eps: PGD-50, PGD-7 with EOT K = 10 (Athalye et al., 2018), the
surrogate ensemble (variants of the model's backward pass, e.g. other surrogates or
BPTR, Ding et al., 2022), a transfer attack crafted on another model (e.g. the ANN twin),
a Square attack (Andriushchenko et al., 2020); a huge-budget sanity PGD; l_2 PGD over an
l_2 grid; QTE per curve. Gradient-masking checks (Athalye et al., 2018):
(1) accuracy non-increasing in eps, (2) the huge budget drives accuracy near 0,
(3) PGD-50/EOT-10 not much stronger than PGD-7/K=1, (4) transfer and gradient-free
attacks not stronger than white-box ones, (5) input gradients finite and non-zero.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rsc_jax import attacks, backend, metrics, parallel

Array = jax.Array
LogitsFn = Callable[[Array, Array], Array]

STREAM_ATTACK, STREAM_JUDGE, STREAM_SELECT = 0, 1, 2
SURROGATE_NAMES: tuple[str, ...] = ("sigmoid", "atan", "triangle", "rectangle")
# Default surrogate sharpness (neurons.SURROGATE_DEFAULT_ALPHA), repeated so this module
# does not need the neuron module.
_DEFAULT_ALPHA = {"sigmoid": 4.0, "atan": 2.0, "triangle": 1.0, "rectangle": 1.0}

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- config


def default_config() -> ml_collections.ConfigDict:
    """Attack settings, mounted by the project config as ``config.attack``.

    Paper/SPEC values: l_inf eps grid {0, 1, 2, 4, 8}/255, step 2/255, PGD-7 and PGD-50,
    EOT K = 1 and 10. Everything else is our default: M = 10 judge draws, the l_2 grid
    (0, 0.25, 0.5, 1.0) with step 2.5 eps / steps (Madry et al.'s rule), sharper
    surrogates with alpha x 4, Square with 1000 queries and p_init 0.05 (the paper's
    p_init), sanity eps 64/255 with 20 steps, and the check tolerances.
    """
    c = ml_collections.ConfigDict()
    c.eps_grid = tuple(e / 255 for e in (0.0, 1.0, 2.0, 4.0, 8.0))
    c.strong_eps = (8 / 255,)
    c.steps = 7
    c.step_size = 2 / 255
    c.eot = 1
    c.random_start = True
    c.common_random_numbers = False
    c.fgsm = True
    c.strong_steps = 50
    c.strong_eot = 10
    c.judge_draws = 10
    c.batch_size = 64
    c.seed = 0
    c.num_examples = -1
    c.l2 = True
    c.l2_eps_grid = (0.0, 0.25, 0.5, 1.0)
    c.l2_step_scale = 2.5
    c.ensemble = True
    c.surrogates = SURROGATE_NAMES
    c.sharp_alpha_factor = 4.0
    c.bptr = True
    c.select_draws = 10
    c.transfer = True
    c.transfer_from = ""       # export to craft transfer examples on ("" = WORKDIR/ann_twin/export)
    c.square = True
    c.square_queries = 1000
    c.square_p_init = 0.05
    c.square_draws = 1
    c.sanity = True
    c.sanity_eps = 64 / 255
    c.sanity_steps = 20
    c.gradient_check = True
    c.quick = False
    c.tol_monotone = 0.02
    c.sanity_max_acc = 0.05
    c.tol_strong_gap = 0.05
    c.tol_blackbox = 0.02
    c.grad_min_frac = 0.9
    return c


_QUICK = dict(strong_steps=20, strong_eot=4, judge_draws=4, select_draws=4, square_queries=100,
              sanity_steps=10, num_examples=256)


def effective_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``cfg`` with the ``quick`` reductions applied (ours, for the digits demo): at most
    20 strong steps, K = 4, M = 4, 100 Square queries, 10 sanity steps, 256 examples."""
    out = ml_collections.ConfigDict(cfg.to_dict())
    if cfg.quick:
        for k, v in _QUICK.items():
            cur = out[k]
            out[k] = v if (k == "num_examples" and cur == -1) else min(cur, v)
    return out


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"config.attack.{field}={value!r} is not allowed; {allowed}")


def validate_config(cfg: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError`` naming ``config.attack.<field>``, its value and what is allowed."""
    known = set(default_config().keys())
    for k in cfg.keys():
        if k not in known:
            _fail(k, cfg[k], f"unknown field; known fields: {sorted(known)}")
    for k in known:
        if k not in cfg:
            _fail(k, None, "the field is missing (start from robustness.default_config())")

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
            and math.isfinite(float(v))

    for k in ("random_start", "common_random_numbers", "fgsm", "l2", "ensemble", "bptr",
              "transfer", "square", "sanity", "gradient_check", "quick"):
        if not isinstance(cfg[k], bool):
            _fail(k, cfg[k], "must be a bool")
    for k in ("steps", "eot", "strong_steps", "strong_eot", "judge_draws", "batch_size",
              "select_draws", "square_queries", "square_draws", "sanity_steps"):
        if not is_int(cfg[k]) or cfg[k] < 1:
            _fail(k, cfg[k], "must be an int >= 1")
    if not is_int(cfg.seed):
        _fail("seed", cfg.seed, "must be an int")
    if not isinstance(cfg.transfer_from, str):
        _fail("transfer_from", cfg.transfer_from, "must be a path string ('' for WORKDIR/ann_twin/export)")
    if not is_int(cfg.num_examples) or (cfg.num_examples < 1 and cfg.num_examples != -1):
        _fail("num_examples", cfg.num_examples, "must be -1 (all) or an int >= 1")
    for k in ("step_size", "l2_step_scale", "sanity_eps"):
        if not is_num(cfg[k]) or cfg[k] <= 0:
            _fail(k, cfg[k], "must be a finite number > 0")
    if not is_num(cfg.square_p_init) or not 0 < cfg.square_p_init <= 1:
        _fail("square_p_init", cfg.square_p_init, "must be in (0, 1]")
    for k in ("tol_monotone", "sanity_max_acc", "tol_strong_gap", "tol_blackbox", "sharp_alpha_factor"):
        if not is_num(cfg[k]) or cfg[k] < 0:
            _fail(k, cfg[k], "must be a finite number >= 0")
    if not is_num(cfg.grad_min_frac) or not 0 <= cfg.grad_min_frac <= 1:
        _fail("grad_min_frac", cfg.grad_min_frac, "must be in [0, 1]")
    for k in ("eps_grid", "l2_eps_grid"):
        g = cfg[k]
        if (not isinstance(g, (tuple, list)) or len(g) < 2 or not all(is_num(e) and e >= 0 for e in g)
                or any(b <= a for a, b in zip(g[:-1], g[1:]))):
            _fail(k, g, "must be a tuple of >= 2 strictly increasing numbers >= 0 (for QTE)")
    g = cfg.strong_eps
    if not isinstance(g, (tuple, list)) or not all(is_num(e) and e > 0 for e in g):
        _fail("strong_eps", g, "must be a tuple of numbers > 0 (may be empty)")
    s = cfg.surrogates
    if not isinstance(s, (tuple, list)) or not all(isinstance(n, str) and n in _DEFAULT_ALPHA for n in s):
        _fail("surrogates", s, f"must be a tuple of names from {list(_DEFAULT_ALPHA)}")


# --------------------------------------------------------------------------- variants


def _as_logits_fn(obj: Any) -> LogitsFn:
    return obj.logits if hasattr(obj, "logits") else obj


def make_variants(classifier: Any, cfg: ml_collections.ConfigDict) -> dict[str, LogitsFn]:
    """Gradient variants of ``classifier`` for the surrogate ensemble.

    Needs ``classifier.with_neuron(surrogate=..., alpha=..., grad_mode=...)`` (same
    weights, another backward pass). Gives ``<surrogate>`` (default alpha) for each name
    in ``cfg.surrogates`` (skipped when it is the model's own backward pass, which the
    ensemble always includes as ``model``), ``<surrogate>_sharp`` (alpha x
    ``sharp_alpha_factor``; 0 skips) and ``bptr`` (backprop through the spike rate,
    Ding et al., IJCAI 2022). Returns {} when the classifier has no ``with_neuron`` or
    ``config['model']['spiking']`` is False (an ANN has no surrogate).
    """
    if not hasattr(classifier, "with_neuron"):
        return {}
    conf = getattr(classifier, "config", None) or {}
    model = conf.get("model", {}) if isinstance(conf, Mapping) else {}
    if not model.get("spiking", True):
        return {}
    own = dict(model.get("overrides", {}))
    own_s = own.get("surrogate", "sigmoid")
    own_a = own.get("alpha") or _DEFAULT_ALPHA.get(own_s)
    own_bptt = own.get("grad_mode", "bptt") == "bptt"
    out: dict[str, LogitsFn] = {}
    for s in cfg.surrogates:
        if not (own_bptt and s == own_s and own_a == _DEFAULT_ALPHA[s]):   # else = "model" itself
            out[s] = _as_logits_fn(classifier.with_neuron(surrogate=s, alpha=_DEFAULT_ALPHA[s]))
        if cfg.sharp_alpha_factor > 0:
            out[f"{s}_sharp"] = _as_logits_fn(classifier.with_neuron(
                surrogate=s, alpha=_DEFAULT_ALPHA[s] * cfg.sharp_alpha_factor))
    if cfg.bptr:
        out["bptr"] = _as_logits_fn(classifier.with_neuron(grad_mode="bptr"))
    return out


# --------------------------------------------------------------------------- jobs


Craft = Callable[[Array, Array, Array, Array], tuple[Array, dict[str, Array]]]


@dataclasses.dataclass
class _Job:
    name: str               # row name, e.g. "pgd"
    curve: str | None       # curve it belongs to (for QTE), or None
    norm: str
    eps: float
    record: dict[str, Any]  # JSON settings
    craft: Craft | None     # None: clean
    cache_key: tuple


def _plain(fn: Callable[..., Array]) -> Craft:
    def craft(k, x, y, eps):
        return fn(k, x, y, eps), {}
    return craft


def _jobs(cfg: ml_collections.ConfigDict, logits_fn: LogitsFn, variants: Mapping[str, LogitsFn],
          transfer: LogitsFn | None) -> list[_Job]:
    jobs = [_Job("clean", None, "linf", 0.0, {"attack": "clean"}, None, ("clean",))]
    base = dict(steps=cfg.steps, step_size=cfg.step_size, eot=cfg.eot, random_start=cfg.random_start,
                common_random_numbers=cfg.common_random_numbers)

    def pgd_craft(fn, *, steps, step_size, eot, norm="linf", l2_scale=None, **kw):
        def f(k, x, y, eps):
            ss = l2_scale * eps / steps if l2_scale is not None else step_size
            return attacks.pgd(fn, k, x, y, eps=eps, step_size=ss, steps=steps, norm=norm, eot=eot,
                               random_start=cfg.random_start,
                               common_random_numbers=cfg.common_random_numbers)
        return _plain(f)

    if cfg.fgsm:
        for e in cfg.eps_grid:
            jobs.append(_Job("fgsm", "fgsm", "linf", e, {"attack": "fgsm", "eot": cfg.eot},
                             _plain(lambda k, x, y, eps: attacks.fgsm(logits_fn, k, x, y, eps=eps,
                                                                      eot=cfg.eot)), ("fgsm",)))
    pgd_eps = list(cfg.eps_grid) + [e for e in cfg.strong_eps if e not in cfg.eps_grid]
    for e in pgd_eps:
        jobs.append(_Job(f"pgd-{cfg.steps}", "pgd" if e in cfg.eps_grid else None, "linf", e,
                         {"attack": "pgd", **base}, pgd_craft(logits_fn, **base), ("pgd",)))
    for e in cfg.strong_eps:
        s = dict(base, steps=cfg.strong_steps)
        jobs.append(_Job(f"pgd-{cfg.strong_steps}", None, "linf", e, {"attack": "pgd", **s},
                         pgd_craft(logits_fn, **s), ("pgd-strong",)))
        s = dict(base, eot=cfg.strong_eot)
        jobs.append(_Job(f"pgd-{cfg.steps}-eot{cfg.strong_eot}", None, "linf", e, {"attack": "pgd", **s},
                         pgd_craft(logits_fn, **s), ("pgd-eot",)))
        if cfg.ensemble and variants:
            jobs.append(_ensemble_job(cfg, logits_fn, variants, e, base))
        if cfg.transfer and transfer is not None:
            jobs.append(_Job("transfer-pgd", None, "linf", e,
                             {"attack": "pgd", "crafted_with": "transfer model", **base},
                             pgd_craft(transfer, **base), ("transfer",)))
        if cfg.square:
            sq = dict(queries=cfg.square_queries, p_init=cfg.square_p_init, draws=cfg.square_draws)
            jobs.append(_Job("square", None, "linf", e, {"attack": "square", **sq},
                             _plain(lambda k, x, y, eps: attacks.square(logits_fn, k, x, y, eps=eps, **sq)),
                             ("square",)))
    if cfg.sanity:
        s = dict(base, steps=cfg.sanity_steps, step_size=2.5 * cfg.sanity_eps / cfg.sanity_steps)
        jobs.append(_Job("sanity-pgd", None, "linf", cfg.sanity_eps, {"attack": "pgd", **s},
                         pgd_craft(logits_fn, **s), ("sanity",)))
    if cfg.l2:
        for e in cfg.l2_eps_grid:
            rec = {"attack": "pgd", **base, "step_size": f"{cfg.l2_step_scale} * eps / steps"}
            jobs.append(_Job(f"pgd-{cfg.steps}-l2", "pgd-l2", "l2", e, rec,
                             pgd_craft(logits_fn, **dict(base, norm="l2", l2_scale=cfg.l2_step_scale)),
                             ("pgd-l2",)))
    return jobs


def _ensemble_job(cfg, logits_fn, variants, eps, base) -> _Job:
    names = ["model"] + sorted(variants)
    fns = {"model": logits_fn, **variants}

    def craft(k, x, y, e):
        # Returns the [N, B, ...] candidates; _batch_fn selects with the select stream.
        cands = jnp.stack([attacks.pgd(fns[n], k, x, y, eps=e, step_size=cfg.step_size, steps=cfg.steps,
                                       eot=cfg.eot, random_start=cfg.random_start,
                                       common_random_numbers=cfg.common_random_numbers) for n in names])
        return cands, {}

    rec = {"attack": "pgd-ensemble", **base, "variants": names, "select_draws": cfg.select_draws,
           "selection": "per example: misclassified on M-averaged logits, else highest CE "
                        "(select stream 2)"}
    return _Job("ensemble-pgd", None, "linf", eps, rec, craft, ("ensemble",))


# --------------------------------------------------------------------------- batched evaluation


def _batch_fn(job: _Job, logits_fn: LogitsFn, cfg) -> Callable:
    """A jitted ``(eps, idx, x, y) -> dict of [B]`` for ``job``."""
    M, seed = cfg.judge_draws, cfg.seed
    ensemble = job.cache_key == ("ensemble",)
    names = job.record.get("variants", [])

    @backend.jit
    def fn(eps, idx, x, y):
        ak = attacks.example_keys(seed, idx, stream=STREAM_ATTACK)
        jk = attacks.example_keys(seed, idx, stream=STREAM_JUDGE)
        out: dict[str, Array] = {}
        if job.craft is None:
            xa = x
        elif ensemble:
            cands, _ = job.craft(ak, x, y, eps)
            sk = attacks.example_keys(seed, idx, stream=STREAM_SELECT)
            xa, choice = attacks.select_strongest(cands, logits_fn, sk, y, draws=cfg.select_draws)
            out["choice"] = choice
            for i, n in enumerate(names):
                r = attacks.judge(logits_fn, jk, cands[i], y, draws=M)
                out[f"single/{n}"] = r["correct_single"]
                out[f"avg/{n}"] = r["correct_avg"]
        else:
            xa, extra = job.craft(ak, x, y, eps)
            out.update(extra)
        r = attacks.judge(logits_fn, jk, xa, y, draws=M)
        d = (xa - x).reshape(x.shape[0], -1)
        out.update(single=r["correct_single"], avg=r["correct_avg"], loss=r["loss"],
                   linf=jnp.abs(d).max(1), l2=jnp.sqrt(jnp.sum(d * d, 1)),
                   in_range=((xa >= 0) & (xa <= 1)).reshape(x.shape[0], -1).all(1))
        return out

    return fn


def _grad_fn(logits_fn: LogitsFn, cfg) -> Callable:
    @backend.jit
    def fn(idx, x, y):
        ak = attacks.example_keys(cfg.seed, idx, stream=STREAM_ATTACK)
        g = attacks.eot_grad(logits_fn, ak, x, y, eot=1).reshape(x.shape[0], -1)
        finite = jnp.all(jnp.isfinite(g), 1)
        n = jnp.sqrt(jnp.sum(jnp.where(jnp.isfinite(g), g, 0.0) ** 2, 1))
        return {"finite": finite, "norm": n}
    return fn


def _progress_factory(progress: bool, total: int, desc: str):
    if not progress or total <= 4:
        return None
    from tqdm.auto import tqdm
    return lambda it: tqdm(it, total=total, desc=desc, leave=False)


# --------------------------------------------------------------------------- run


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(v).tolist())
    if v is None or isinstance(v, (str, int)):
        return v
    return repr(v)


def run(classifier: Any, images: np.ndarray, labels: np.ndarray, cfg: ml_collections.ConfigDict, *,
        workdir: str, mesh: jax.sharding.Mesh, variants: Mapping[str, LogitsFn] | None = None,
        transfer: LogitsFn | Any | None = None, progress: bool = True) -> dict[str, Any]:
    """Runs the robustness evaluation and writes ``robustness.json`` / ``robustness.png``.

    Args:
      classifier: has ``.logits(key, x[B, H, W, C]) -> [B, classes]`` (applies its own
        coding noise) and ``.config`` with ``config['coding'] = {'method', 'sigma', 'T'}``.
      images: ``[N, H, W, C]`` float32 in [0, 1] (host NumPy); labels: ``[N]`` ints.
      cfg: ``default_config()`` (possibly overridden); ``quick`` is applied here.
      workdir: output folder (created).
      mesh: 1-D ``data`` mesh (``parallel.make_mesh``); batch_size must divide by its size.
      variants: name -> logits_fn (or object with ``.logits``) of gradient variants for the
        surrogate ensemble; default ``make_variants(classifier, cfg)`` ({} if unsupported).
      transfer: logits_fn (or object with ``.logits``) of another model (e.g. the ANN
        twin) to craft transfer examples with; None skips the transfer attack.
      progress: tqdm bars.

    Returns:
      The dict written to ``robustness.json``: ``config``, ``coding``, ``n_examples``,
      ``results`` (one row per setting: eps, steps, step size, K, M, crafted_with, acc_single,
      acc_avg, ...), ``curves`` (eta, accuracies, QTE), ``worst_case``, ``checks``.
    """
    validate_config(cfg)
    cfg = effective_config(cfg)
    n_dev = int(mesh.devices.size)
    if cfg.batch_size % n_dev:
        _fail("batch_size", cfg.batch_size, f"must be divisible by the {n_dev} devices of the mesh")
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels).astype(np.int32)
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"images of shape {images.shape} and labels of shape {labels.shape} do not match; "
                         "need [N, H, W, C] float images and [N] labels")
    if images.size and (not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1):
        raise ValueError(f"images range [{images.min()}, {images.max()}] is not allowed; need [0, 1]")
    k = getattr(classifier, "num_classes", None)
    if isinstance(k, int) and labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels lie in [{labels.min()}, {labels.max()}] but the classifier has {k} classes")
    n = len(images) if cfg.num_examples == -1 else min(cfg.num_examples, len(images))
    images, labels = images[:n], labels[:n]
    logits_fn = _as_logits_fn(classifier)
    if variants is None:
        variants = make_variants(classifier, cfg) if cfg.ensemble else {}
    variants = {k: _as_logits_fn(v) for k, v in variants.items()}
    transfer_fn = None if transfer is None else _as_logits_fn(transfer)
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()

    jobs = _jobs(cfg, logits_fn, variants, transfer_fn)
    nb = -(-n // cfg.batch_size)
    cache: dict[tuple, Callable] = {}
    per_ex: list[dict[str, np.ndarray]] = []
    rows: list[dict[str, Any]] = []
    coding = dict(getattr(classifier, "config", {}).get("coding", {})) if hasattr(classifier, "config") else {}

    bar: Iterator = iter(jobs)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(jobs, desc="robustness")
    for job in bar:
        t0 = time.time()
        if job.craft is not None and job.eps == 0:
            out = per_ex[0]
            reused = True
        else:
            if job.cache_key not in cache:
                cache[job.cache_key] = _batch_fn(job, logits_fn, cfg)
            fn = functools.partial(cache[job.cache_key], jnp.float32(job.eps))
            out = parallel.map_examples(fn, [images, labels], batch_size=cfg.batch_size, mesh=mesh,
                                        progress=_progress_factory(progress, nb, job.name))
            reused = False
        per_ex.append(out)
        row = {"name": job.name, "curve": job.curve, "norm": job.norm, "eps": float(job.eps),
               **({"eps_255": float(job.eps) * 255} if job.norm == "linf" else {}),
               **job.record, "crafted_with": job.record.get("crafted_with", "model"),
               "judge_draws": cfg.judge_draws, "n_examples": n, "seed": cfg.seed,
               "acc_single": float(np.mean(out["single"])), "acc_avg": float(np.mean(out["avg"])),
               "se_avg": metrics.standard_error(float(np.mean(out["avg"])), n),
               "max_linf": float(np.max(out["linf"])), "max_l2": float(np.max(out["l2"])),
               "all_in_range": bool(np.all(out["in_range"])),
               "reused_clean": reused, "seconds": time.time() - t0}
        if job.cache_key == ("ensemble",):
            names = job.record["variants"]
            row["per_variant"] = {nm: {"acc_single": float(np.mean(out[f"single/{nm}"])),
                                       "acc_avg": float(np.mean(out[f"avg/{nm}"]))} for nm in names}
            row["chosen_counts"] = {nm: int(np.sum(out["choice"] == i)) for i, nm in enumerate(names)}
        rows.append(row)
        log.info("robustness %s eps=%.4g: acc_single=%.4f acc_avg=%.4f (%.1fs)", job.name, job.eps,
                 row["acc_single"], row["acc_avg"], row["seconds"])

    curves = _curves(rows)
    worst = _worst_case(jobs, rows, per_ex, cfg)
    grad = None
    if cfg.gradient_check:
        g = parallel.map_examples(_grad_fn(logits_fn, cfg), [images, labels], batch_size=cfg.batch_size,
                                  mesh=mesh)
        ok = g["finite"] & (g["norm"] > 0)
        grad = {"frac_finite_nonzero": float(np.mean(ok)), "frac_nan": float(np.mean(~g["finite"])),
                "frac_zero": float(np.mean(g["finite"] & (g["norm"] == 0))),
                "median_norm": float(np.median(g["norm"])), "eot": 1}
    checks = _checks(rows, curves, worst, grad, cfg)
    result = {
        "config": _jsonable(cfg.to_dict()), "coding": _jsonable(coding), "n_examples": n,
        "seed": cfg.seed, "judge_draws": cfg.judge_draws, "devices": n_dev,
        "variants": sorted(variants), "transfer": transfer_fn is not None,
        "streams": {"attack": STREAM_ATTACK, "judge": STREAM_JUDGE, "select": STREAM_SELECT},
        "results": rows, "curves": curves, "worst_case": worst, "gradient": grad, "checks": checks,
        "png": "robustness.png", "seconds": time.time() - t_start,
    }
    result = _jsonable(result)
    if parallel.is_primary():          # every host computed the same gathered result
        with open(os.path.join(workdir, "robustness.json"), "w") as f:
            json.dump(result, f, indent=1)
        plot(result, os.path.join(workdir, "robustness.png"))
    return result


def _curves(rows: list[dict[str, Any]]) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    for r in rows:
        if r["curve"] is None:
            continue
        c = curves.setdefault(r["curve"], {"norm": r["norm"], "eta": [], "acc_single": [], "acc_avg": []})
        c["eta"].append(r["eps"])
        c["acc_single"].append(r["acc_single"])
        c["acc_avg"].append(r["acc_avg"])
    for c in curves.values():
        c["qte_single"] = metrics.qte(c["eta"], c["acc_single"])
        c["qte_avg"] = metrics.qte(c["eta"], c["acc_avg"])
    return curves


def _worst_case(jobs, rows, per_ex, cfg) -> list[dict[str, Any]]:
    """Per strong eps: an example counts as robust only if every l_inf attack at that eps
    (white-box, ensemble, transfer, Square) leaves it correct."""
    out = []
    for e in cfg.strong_eps:
        idx = [i for i, j in enumerate(jobs) if j.norm == "linf" and j.craft is not None and j.eps == e
               and j.name != "sanity-pgd"]
        if not idx:
            continue
        avg = np.min(np.stack([per_ex[i]["avg"] for i in idx]), 0)
        single = np.min(np.stack([per_ex[i]["single"] for i in idx]), 0)
        out.append({"eps": float(e), "eps_255": float(e) * 255, "attacks": [rows[i]["name"] for i in idx],
                    "acc_single": float(np.mean(single)), "acc_avg": float(np.mean(avg))})
    return out


def _check(name, ok, detail, **numbers) -> dict[str, Any]:
    return {"name": name, "status": "pass" if ok else "FLAG", "detail": detail, **numbers}


def _checks(rows, curves, worst, grad, cfg) -> list[dict[str, Any]]:
    checks = []
    tol = cfg.tol_monotone
    for name, c in curves.items():
        rise = max(metrics.max_increase(c["acc_avg"]), metrics.max_increase(c["acc_single"]))
        checks.append(_check(f"monotone/{name}", rise <= tol,
                             f"accuracy must not rise with eps by more than {tol}; largest rise {rise:.4f}",
                             max_rise=rise, acc_avg=c["acc_avg"], eta=c["eta"]))
    for r in rows:
        if r["name"] == "sanity-pgd":
            a = max(r["acc_avg"], r["acc_single"])
            checks.append(_check("huge-budget", a <= cfg.sanity_max_acc,
                                 f"PGD-{r['steps']} at eps {r['eps_255']:.0f}/255 must drive accuracy to "
                                 f"<= {cfg.sanity_max_acc}; got {a:.4f}", acc=a, eps=r["eps"]))

    def at(name, e):
        m = [r for r in rows if r["name"] == name and r["eps"] == e]
        return m[0] if m else None

    for e in cfg.strong_eps:
        base = at(f"pgd-{cfg.steps}", e)
        strong = [r for r in (at(f"pgd-{cfg.strong_steps}", e), at(f"pgd-{cfg.steps}-eot{cfg.strong_eot}", e))
                  if r is not None]
        if base is not None and strong:
            best = min(r["acc_avg"] for r in strong)
            gap = base["acc_avg"] - best
            checks.append(_check(f"strong-vs-pgd{cfg.steps}@{e * 255:.3g}/255", gap <= cfg.tol_strong_gap,
                                 f"PGD-{cfg.strong_steps} / EOT-{cfg.strong_eot} lower PGD-{cfg.steps} "
                                 f"accuracy {base['acc_avg']:.4f} by {gap:.4f} (allowed {cfg.tol_strong_gap})",
                                 gap=gap, acc_pgd=base["acc_avg"], acc_strong=best))
        white = [r for r in rows if r["eps"] == e and r["norm"] == "linf" and r["name"] in (
            f"pgd-{cfg.steps}", f"pgd-{cfg.strong_steps}", f"pgd-{cfg.steps}-eot{cfg.strong_eot}",
            "ensemble-pgd")]
        if not white:
            continue
        wb = min(r["acc_avg"] for r in white)
        for bb_name in ("transfer-pgd", "square"):
            bb = at(bb_name, e)
            if bb is None:
                continue
            diff = wb - bb["acc_avg"]
            checks.append(_check(f"{bb_name}-not-stronger@{e * 255:.3g}/255", diff <= cfg.tol_blackbox,
                                 f"{bb_name} accuracy {bb['acc_avg']:.4f} vs best white-box {wb:.4f} "
                                 f"(black-box may be lower by at most {cfg.tol_blackbox})",
                                 acc_blackbox=bb["acc_avg"], acc_whitebox=wb))
    if grad is not None:
        f = grad["frac_finite_nonzero"]
        checks.append(_check("input-gradient", f >= cfg.grad_min_frac,
                             f"fraction of examples with a finite, non-zero input gradient {f:.4f} "
                             f"(need >= {cfg.grad_min_frac})", **grad))
    return checks


# --------------------------------------------------------------------------- outputs


def plot(result: Mapping[str, Any], path: str) -> None:
    """Accuracy (M-draw averaged, solid; single draw, dotted) vs eps per attack curve,
    l_inf (eps x 255) and l_2 panels; single-eps attacks as markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["curves"]
    has_l2 = any(c["norm"] == "l2" for c in curves.values())
    fig, axes = plt.subplots(1, 2 if has_l2 else 1, figsize=(11 if has_l2 else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for name, c in curves.items():
        a = axes[0, 1] if c["norm"] == "l2" else ax
        scale = 255.0 if c["norm"] == "linf" else 1.0
        eta = np.asarray(c["eta"]) * scale
        line, = a.plot(eta, c["acc_avg"], "o-", label=f"{name} (M-avg, QTE {c['qte_avg']:.3f})")
        a.plot(eta, c["acc_single"], ":", color=line.get_color(), label=f"{name} (1 draw)")
    markers = "sv^Dxp*h"
    point_rows = [r for r in result["results"] if r["curve"] is None and r["norm"] == "linf"
                  and r["name"] not in ("clean", "sanity-pgd")]
    for i, r in enumerate(point_rows):
        ax.plot([r["eps_255"]], [r["acc_avg"]], markers[i % len(markers)], label=f"{r['name']} (M-avg)")
    ax.set_xlabel("eps (l_inf, x 1/255)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("l_inf attacks")
    ax.legend(fontsize=7)
    if has_l2:
        axes[0, 1].set_xlabel("eps (l_2)")
        axes[0, 1].set_ylim(-0.02, 1.02)
        axes[0, 1].set_title("l_2 attacks")
        axes[0, 1].legend(fontsize=7)
    cod = result.get("coding", {})
    fig.suptitle(f"robustness: coding {cod.get('method', '?')} sigma={cod.get('sigma', '?')} "
                 f"T={cod.get('T', '?')}, n={result['n_examples']}, M={result['judge_draws']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


def markdown(result: Mapping[str, Any], *, png: str | None = None) -> str:
    """A robustness section for report.md: settings, results, QTE, worst case, checks, plot."""
    cod = result.get("coding", {})
    cfg = result.get("config", {})
    lines = ["## Adversarial robustness", "",
             f"Coding `{cod.get('method', '?')}`, sigma = {_fmt(cod.get('sigma'))}, T = {_fmt(cod.get('T'))}; "
             f"{result['n_examples']} test examples, seed {result['seed']}, "
             f"M = {result['judge_draws']} judge draws, {result.get('devices', 1)} device(s). "
             "`acc (1 draw)` is the single-draw accuracy averaged over the M fresh draws; "
             "`acc (M-avg)` classifies the logits averaged over the M draws. "
             "Attacks are crafted and judged on separate per-example key streams.", "",
             "### Settings and accuracy", "",
             "| attack | norm | eps | eps x 255 | steps | step size | EOT K | crafted with | "
             "acc (1 draw) | acc (M-avg) | +- s.e. |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        extra = f" (queries {r['queries']}, p_init {_fmt(r['p_init'])})" if r.get("attack") == "square" else ""
        lines.append(
            f"| {r['name']}{extra} | {r['norm']} | {_fmt(r['eps'])} | {_fmt(r.get('eps_255'))} | "
            f"{_fmt(r.get('steps'))} | {_fmt(r.get('step_size'))} | {_fmt(r.get('eot'))} | "
            f"{r.get('crafted_with', 'model')} | {r['acc_single']:.4f} | {r['acc_avg']:.4f} | "
            f"{r['se_avg']:.4f} |")
        if "per_variant" in r:
            for nm, v in r["per_variant"].items():
                lines.append(f"| &nbsp;&nbsp;pgd via `{nm}` | linf | {_fmt(r['eps'])} | {_fmt(r.get('eps_255'))} | "
                             f"{_fmt(r.get('steps'))} | {_fmt(r.get('step_size'))} | {_fmt(r.get('eot'))} | "
                             f"{nm} | {v['acc_single']:.4f} | {v['acc_avg']:.4f} | |")
    lines += ["", "### QTE (normalised area under accuracy vs eps)", "",
              "| curve | norm | eta grid | QTE (1 draw) | QTE (M-avg) |", "|---|---|---|---|---|"]
    for name, c in result["curves"].items():
        grid = ", ".join(f"{e * 255:.3g}/255" if c["norm"] == "linf" else f"{e:.3g}" for e in c["eta"])
        lines.append(f"| {name} | {c['norm']} | {grid} | {c['qte_single']:.4f} | {c['qte_avg']:.4f} |")
    if result.get("worst_case"):
        lines += ["", "### Worst case over l_inf attacks (per example)", "",
                  "| eps x 255 | attacks | acc (1 draw) | acc (M-avg) |", "|---|---|---|---|"]
        for w in result["worst_case"]:
            lines.append(f"| {w['eps_255']:.3g} | {', '.join(w['attacks'])} | {w['acc_single']:.4f} | "
                         f"{w['acc_avg']:.4f} |")
    lines += ["", "### Gradient-masking checks (Athalye et al., 2018)", "",
              "| check | status | detail |", "|---|---|---|"]
    for c in result["checks"]:
        status = "pass" if c["status"] == "pass" else "**FLAG**"
        lines.append(f"| {c['name']} | {status} | {c['detail']} |")
    if cfg:
        lines += ["", "<details><summary>attack config</summary>", "", "```",
                  json.dumps(cfg, indent=1), "```", "</details>"]
    lines += ["", f"![robustness]({png or result.get('png', 'robustness.png')})", ""]
    return "\n".join(lines)
