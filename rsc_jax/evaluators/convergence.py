"""The convergence evaluator: is the attack budget enough? Writes ``convergence.json``
and ``convergence.png``.

Two pieces of evidence, each of which can fail (Carlini et al., 2019, "On Evaluating
Adversarial Robustness", Sec. 5: report accuracy against attack budget and check that it
has converged):

- ``doubled``: the worst case at the first strong eps re-run with twice the budget
  (each field of ``doubled_fields``, default every one of ``config.DOUBLEABLE``: APGD steps, EOT
  draws and restarts, the strong PGD's steps and EOT, Square's queries) on the first
  ``doubled_examples`` images, through the same cascade,
  judged on the same report-stream draws as the run's own worst case, so the two are
  paired image by image. It is flagged when the exact McNemar test (``metrics.mcnemar_exact``)
  rejects at ``convergence_alpha`` with more images broken by the doubled budget than
  by the run's.
- ``grid``: APGD-CE's robust accuracy against gradient evaluations (steps x EOT draws)
  on the first ``convergence_examples`` images: for each EOT count K one APGD run of
  max(``convergence_steps``) steps keeps its picked point after every step count
  (``apgd.apgd_with_info``'s snapshots), judged like the robustness rows (M fresh draws
  on the judge stream). The picked points are chosen on the attack draws, so the judged
  accuracy need not fall with more steps; the last doubling of steps and of K are tested
  like the doubled budget.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from rsc_jax import apgd, backend, config, config_checks, judging, metrics, parallel, report
from rsc_jax.evaluators import attack_suite, cascade, common
from rsc_jax.evaluators import robustness as rob

PARTIAL = "convergence_partial"     # the doubled check's jobs so far (cascade.Store), removed at the end

Array = jax.Array


def _batch_fn(logits_fn: Callable, cfg: Any, eps: float, steps: tuple[int, ...], eot: int) -> Callable:
    @backend.jit
    def fn(idx, x, y):
        ak = judging.example_keys(cfg.seed, idx, stream=rob.STREAM_ATTACK)
        jk = judging.example_keys(cfg.seed, idx, stream=rob.STREAM_JUDGE)
        _, info = apgd.apgd_with_info(logits_fn, ak, x, y, eps=eps, steps=steps[-1], eot=eot, loss="ce",
                                      snapshots=steps)
        return {str(t): judging.judge(logits_fn, jk, info["snapshots"][j], y, draws=cfg.judge_draws)["correct_avg"]
                for j, t in enumerate(steps)}
    return fn


def doubled_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The effective attack config ``cfg`` with every field of ``cfg.doubled_fields`` doubled."""
    out = ml_collections.ConfigDict(cfg.to_dict())
    for k in cfg.doubled_fields:
        out[k] = 2 * cfg[k]
    out.quick = False                      # cfg is already the effective config
    return out


def _flag(name: str, before: np.ndarray, after: np.ndarray, what: str, alpha: float) -> dict[str, Any]:
    """FLAG when the exact McNemar test of ``before`` against ``after`` (the larger
    budget; per-example correctness on the same draws) rejects at ``alpha`` with more
    examples broken by ``after`` (b = right before, wrong after; c = the reverse)."""
    a0, a1 = float(np.mean(before)), float(np.mean(after))
    test = metrics.mcnemar_exact(before > 0.5, after > 0.5)
    ok = not (test["p_value"] < alpha and test["b"] > test["c"])
    return {"name": name, "status": "pass" if ok else "FLAG", "acc_before": a0, "acc_after": a1,
            "b": test["b"], "c": test["c"], "mcnemar_p": test["p_value"], "alpha": alpha, "n": len(after),
            "detail": f"{what}: accuracy {a0:.4f} -> {a1:.4f} on {len(after)} images; {test['b']} broken only by "
                      f"the larger budget, {test['c']} only by the smaller (exact McNemar p = {test['p_value']:.3g}; "
                      f"flagged below {alpha:g} with more broken by the larger)"}


def _grid(logits_fn: Callable, images: np.ndarray, labels: np.ndarray, cfg: Any, mesh: jax.sharding.Mesh,
          eps: float, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    n = min(len(images), len(images) if cfg.convergence_examples == -1 else cfg.convergence_examples)
    images, labels = images[:n], labels[:n]
    steps, eots = tuple(sorted(cfg.convergence_steps)), tuple(sorted(cfg.convergence_eot))
    pbar = common.bar(progress, len(eots), "convergence", unit="EOT grid point")
    correct: dict[int, dict[int, np.ndarray]] = {}
    for k in eots:
        if pbar is not None:
            pbar.set_postfix_str(f"APGD-CE {steps[-1]} steps, EOT {k}")
        out = parallel.map_examples(_batch_fn(logits_fn, cfg, eps, steps, k), [images, labels],
                                    batch_size=cfg.batch_size, mesh=mesh)
        correct[k] = {t: np.asarray(out[str(t)]) for t in steps}
        if pbar is not None:
            pbar.update(1)
    if pbar is not None:
        pbar.close()
    acc = [[float(np.mean(correct[k][t])) for t in steps] for k in eots]
    ci = [[metrics.binomial_interval(int(np.sum(correct[k][t])), n) for t in steps] for k in eots]
    a = cfg.convergence_alpha
    checks = [_flag(f"converged-in-steps@EOT{eots[-1]}", correct[eots[-1]][steps[-2]], correct[eots[-1]][steps[-1]],
                    f"APGD-CE steps {steps[-2]} -> {steps[-1]} at EOT {eots[-1]}", a),
              _flag(f"converged-in-EOT@{steps[-1]}steps", correct[eots[-2]][steps[-1]], correct[eots[-1]][steps[-1]],
                    f"EOT draws {eots[-2]} -> {eots[-1]} at {steps[-1]} steps", a)]
    grid = {"attack": "apgd-ce", "steps": steps, "eot": eots, "grad_evals": [[t * k for t in steps] for k in eots],
            "accuracy": acc, "ci95": ci, "n_examples": n}
    return grid, checks


def _worst(classifier: Any, cfg: Any, images: np.ndarray, labels: np.ndarray, mesh: jax.sharding.Mesh, eps: float,
           variants: Mapping[str, Any], transfer_fn: Any, progress: bool, workdir: str,
           transfer: Any = None) -> dict[str, Any]:
    """The worst case at ``eps`` alone (no standalone rows) under ``cfg``; each job's
    outputs kept in WORKDIR/convergence_partial until the stage ends (``cascade.Store``)."""
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.strong_eps = (eps,)
    jobs = rob.build_jobs(classifier, cfg, variants, transfer_fn)
    chain = attack_suite.chain(jobs, eps)
    store = cascade.store_for(classifier, images, labels, cfg, os.path.join(workdir, PARTIAL), (transfer,))
    worst, _, _, _ = cascade.evaluate(chain, common.as_logits_fn(classifier), images, labels, cfg, mesh, 0, progress,
                                      store)
    return worst[0]


def _baseline_worst(baseline: Mapping[str, Any] | None, workdir: str, eps: float) -> dict[str, Any] | None:
    res = baseline if baseline is not None else report.read_json(report.path(workdir, "robustness"))
    for w in (res or {}).get("worst_case", []):
        if w["eps"] == eps and "correct_avg" in w and w.get("judge", {}).get("stream") == cascade.STREAM_REPORT:
            return w
    return None


def run(classifier: Any, images: np.ndarray, labels: np.ndarray, cfg: ml_collections.ConfigDict, *,
        workdir: str, mesh: jax.sharding.Mesh, progress: bool = True, source: str | None = None,
        baseline: Mapping[str, Any] | None = None, variants: Mapping[str, Any] | None = None,
        transfer: Any | None = None) -> dict[str, Any]:
    """The doubled-budget worst case and the APGD-CE grid (module docstring).

    Args:
      classifier, images, labels, mesh, progress, source, variants, transfer: as
        ``robustness.run``.
      cfg: the ``config.attack`` section (its ``quick`` preset applied here).
      baseline: the run's robustness result (default: WORKDIR/robustness.json; where it
        has no report-stream worst case at the first strong eps, the worst case at the
        run's budget is computed here on the same images).

    Returns:
      The dict written to ``convergence.json``: ``eps``, ``doubled`` (the doubled budget,
      both accuracies, the McNemar counts), ``grid`` (``steps``, ``eot``, ``accuracy``
      ``[len(eot)][len(steps)]``, ``ci95``, ``grad_evals``), ``checks``.
    """
    config_checks.check_attack(cfg)
    cfg = rob.effective_config(cfg)
    images, labels = common.test_set(classifier, images, labels, cfg.num_examples)
    logits_fn = common.as_logits_fn(classifier)
    eps = float(cfg.strong_eps[0] if cfg.strong_eps else cfg.eps_grid[-1])
    t0 = time.time()
    checks: list[dict[str, Any]] = []
    doubled = grid = None
    if cfg.doubled_budget and cfg.strong_eps:
        n = len(images) if cfg.doubled_examples == -1 else min(cfg.doubled_examples, len(images))
        if variants is None:
            variants = rob.make_variants(classifier, cfg) if cfg.ensemble else {}
        variants = {k: common.as_logits_fn(v) for k, v in variants.items()}
        transfer_fn = None if transfer is None else common.as_logits_fn(transfer)
        base = _baseline_worst(baseline, workdir, eps)
        before = (metrics.unpack_correct(base["correct_avg"])[:n] if base is not None else None)
        if before is None or len(before) < n:
            base = _worst(classifier, cfg, images[:n], labels[:n], mesh, eps, variants, transfer_fn, progress, workdir,
                          transfer)
            before = metrics.unpack_correct(base["correct_avg"])
        dcfg = doubled_config(cfg)
        after_w = _worst(classifier, dcfg, images[:n], labels[:n], mesh, eps, variants, transfer_fn, progress,
                         workdir, transfer)
        after = metrics.unpack_correct(after_w["correct_avg"])
        checks.append(_flag("converged-doubled-budget", before, after,
                            f"worst case of {len(after_w['attacks'])} attacks at {eps * 255:.3g}/255 with "
                            f"{', '.join(cfg.doubled_fields)} doubled", cfg.convergence_alpha))
        doubled = {"n_examples": n, "fields": {k: dcfg[k] for k in config.DOUBLEABLE},
                   "doubled": list(cfg.doubled_fields), "attacks": after_w["attacks"],
                   "acc_avg": float(np.mean(before)), "acc_avg_doubled": float(np.mean(after)),
                   "ci95_doubled": after_w["ci95_avg"], "correct_avg_doubled": after_w["correct_avg"],
                   "passes_per_example_doubled": after_w["passes_per_example"]}
    if cfg.convergence:
        grid, grid_checks = _grid(logits_fn, images, labels, cfg, mesh, eps, progress)
        checks += grid_checks
    result = common.jsonable({
        "eps": eps, "eps_255": eps * 255, "norm": "linf", "doubled": doubled, "grid": grid,
        "judge_draws": cfg.judge_draws, "seed": cfg.seed, "preset": rob.preset(cfg),
        "export": source, "checks": checks, "png": "convergence.png" if grid else None,
        "seconds": time.time() - t0})
    report.write_convergence(workdir, result)
    shutil.rmtree(os.path.join(workdir, PARTIAL), ignore_errors=True)
    return result
