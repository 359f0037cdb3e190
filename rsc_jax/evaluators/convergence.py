"""The convergence evaluator: is the attack budget enough? Robust accuracy of APGD-CE
against gradient evaluations (steps x EOT draws), with a flag when the last doubling of
either still lowers the accuracy by more than its 95 % interval's half-width; writes
``convergence.json`` and ``convergence.png``.

For each EOT count K of ``convergence_eot`` one APGD run of max(``convergence_steps``)
steps keeps its best point after every step count of the grid (``apgd.apgd_with_info``'s
snapshots), so the budgets share their trajectory: accuracy is non-increasing in steps by
construction at fixed K, and differences are not sampling noise of separate runs. Each
point is judged like the robustness rows (M fresh draws on the judge stream, accuracy of
the M-draw-averaged logits), at the first strong eps. Carlini et al. (2019), "On
Evaluating Adversarial Robustness", Sec. 5: report accuracy against attack budget and
check that it has converged.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from rsc_jax import apgd, backend, config_checks, judging, metrics, parallel, report
from rsc_jax.evaluators import common
from rsc_jax.evaluators import robustness as rob

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


def _flag(name: str, before: np.ndarray, after: np.ndarray, what: str) -> dict[str, Any]:
    """FLAG when ``after`` (the doubled budget) is lower than ``before`` by more than the
    half-width of after's exact 95 % interval; the exact McNemar p-value is reported too."""
    n = len(after)
    a0, a1 = float(np.mean(before)), float(np.mean(after))
    low, high = metrics.binomial_interval(int(np.sum(after)), n)
    half = (high - low) / 2
    test = metrics.mcnemar_exact(before > 0.5, after > 0.5)
    ok = a0 - a1 <= half
    return {"name": name, "status": "pass" if ok else "FLAG", "acc_before": a0, "acc_after": a1,
            "half_width": half, "mcnemar_p": test["p_value"],
            "detail": f"{what}: accuracy {a0:.4f} -> {a1:.4f} (drop {a0 - a1:.4f}; allowed up to the interval's "
                      f"half-width {half:.4f}; McNemar p = {test['p_value']:.3g})"}


def run(classifier: Any, images: np.ndarray, labels: np.ndarray, cfg: ml_collections.ConfigDict, *,
        workdir: str, mesh: jax.sharding.Mesh, progress: bool = True, source: str | None = None) -> dict[str, Any]:
    """APGD-CE accuracy over the ``convergence_steps`` x ``convergence_eot`` grid.

    Args:
      classifier, images, labels, mesh, progress, source: as ``robustness.run``.
      cfg: the ``config.attack`` section (its ``quick`` preset applied here).

    Returns:
      The dict written to ``convergence.json``: ``eps``, ``steps``, ``eot``, ``accuracy``
      ``[len(eot)][len(steps)]``, ``ci95`` (intervals), ``grad_evals`` (steps x K),
      ``checks`` (the last doubling of steps at the largest K, of K at the most steps).
    """
    config_checks.check_attack(cfg)
    cfg = rob.effective_config(cfg)
    images, labels = common.test_set(classifier, images, labels, cfg.convergence_examples)
    n, logits_fn = len(images), common.as_logits_fn(classifier)
    eps = float(cfg.strong_eps[0] if cfg.strong_eps else cfg.eps_grid[-1])
    steps, eots = tuple(sorted(cfg.convergence_steps)), tuple(sorted(cfg.convergence_eot))
    t0 = time.time()
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
    checks = [_flag(f"converged-in-steps@EOT{eots[-1]}", correct[eots[-1]][steps[-2]], correct[eots[-1]][steps[-1]],
                    f"APGD-CE steps {steps[-2]} -> {steps[-1]} at EOT {eots[-1]}"),
              _flag(f"converged-in-EOT@{steps[-1]}steps", correct[eots[-2]][steps[-1]], correct[eots[-1]][steps[-1]],
                    f"EOT draws {eots[-2]} -> {eots[-1]} at {steps[-1]} steps")]
    result = common.jsonable({
        "attack": "apgd-ce", "eps": eps, "eps_255": eps * 255, "norm": "linf", "steps": steps, "eot": eots,
        "grad_evals": [[t * k for t in steps] for k in eots], "accuracy": acc, "ci95": ci,
        "n_examples": n, "judge_draws": cfg.judge_draws, "seed": cfg.seed, "preset": rob.preset(cfg),
        "export": source, "checks": checks, "png": "convergence.png", "seconds": time.time() - t0})
    report.write_convergence(workdir, result)
    return result
