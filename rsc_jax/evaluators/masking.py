"""Gradient-masking checks of a robustness result (Athalye et al., ICML 2018, Sec. 3;
Carlini et al., 2019, "On Evaluating Adversarial Robustness", Sec. 5).

Pure functions of the result rows: (1) accuracy non-increasing in eps, (2) a huge
budget drives accuracy near 0, (3) more steps / more EOT draws are not much stronger
than PGD-k with one draw, (4) transfer and gradient-free attacks are not stronger than
the white-box ones, (5) input gradients are finite and non-zero. Each returns a
``{"name", "status": "pass" | "FLAG", "detail", ...numbers}`` dict; the tolerances
are ``config.attack.tol_*`` (ours).
"""

from __future__ import annotations

from typing import Any

from rsc_jax import metrics


def _check(name: str, ok: bool, detail: str, **numbers: Any) -> dict[str, Any]:
    return {"name": name, "status": "pass" if ok else "FLAG", "detail": detail, **numbers}


def monotone(curves: dict[str, Any], cfg: Any) -> list[dict[str, Any]]:
    tol = cfg.tol_monotone
    out = []
    for name, c in curves.items():
        rise = max(metrics.max_increase(c["acc_avg"]), metrics.max_increase(c["acc_single"]))
        out.append(_check(f"monotone/{name}", rise <= tol,
                          f"accuracy must not rise with eps by more than {tol}; largest rise {rise:.4f}",
                          max_rise=rise, acc_avg=c["acc_avg"], eta=c["eta"]))
    return out


def huge_budget(rows: list[dict[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["name"] == "sanity-pgd":
            # the reported accuracy (M-averaged logits): single draws of a noisy model stay
            # right now and then even where the averaged logits are wrong on every image
            a = r["acc_avg"]
            out.append(_check("huge-budget", a <= cfg.sanity_max_acc,
                              f"PGD-{r['steps']}{'' if r.get('eot', 1) == 1 else ' EOT-' + str(r['eot'])} at eps "
                              f"{r['eps_255']:.0f}/255 must drive the averaged-logit accuracy to <= "
                              f"{cfg.sanity_max_acc}; got {a:.4f} (single draw {r['acc_single']:.4f})",
                              acc=a, acc_single=r["acc_single"], eps=r["eps"]))
    return out


def _at(rows: list[dict[str, Any]], name: str, e: float) -> dict[str, Any] | None:
    m = [r for r in rows if r["name"] == name and r["eps"] == e]
    return m[0] if m else None


def strong_and_blackbox(rows: list[dict[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    out = []
    pgd_k, strong_k, eot_k = f"pgd-{cfg.steps}", f"pgd-{cfg.strong_steps}", f"pgd-{cfg.steps}-eot{cfg.strong_eot}"
    for e in cfg.strong_eps:
        # the paper's PGD-k (fixed step) is the base only where it can reach eps
        base = _at(rows, pgd_k, e) if cfg.steps * cfg.step_size >= e else None
        strong = [r for r in (_at(rows, strong_k, e), _at(rows, eot_k, e)) if r is not None]
        strong += [r for r in rows if r["eps"] == e and r["norm"] == "linf" and r.get("attack") == "apgd"
                   and r.get("crafted_with", "model") == "model"]
        if base is not None and strong:
            best = min(r["acc_avg"] for r in strong)
            gap = base["acc_avg"] - best
            out.append(_check(f"strong-vs-pgd{cfg.steps}@{e * 255:.3g}/255", gap <= cfg.tol_strong_gap,
                              f"PGD-{cfg.strong_steps} / EOT-{cfg.strong_eot}{' / APGD' if cfg.apgd else ''} lower "
                              f"PGD-{cfg.steps} "
                              f"accuracy {base['acc_avg']:.4f} by {gap:.4f} (allowed {cfg.tol_strong_gap})",
                              gap=gap, acc_pgd=base["acc_avg"], acc_strong=best))
        white = [r for r in rows if r["eps"] == e and r["norm"] == "linf"
                 and (r["name"] in (pgd_k, strong_k, eot_k, "ensemble-apgd")
                      or (r.get("attack") == "apgd" and r.get("crafted_with", "model") == "model"))]
        if not white:
            continue
        wb = min(r["acc_avg"] for r in white)
        for bb_name in ("transfer-apgd", "expectation-apgd", "square"):
            bb = _at(rows, bb_name, e)
            if bb is None:
                continue
            diff = wb - bb["acc_avg"]
            out.append(_check(f"{bb_name}-not-stronger@{e * 255:.3g}/255", diff <= cfg.tol_blackbox,
                              f"{bb_name} accuracy {bb['acc_avg']:.4f} vs best white-box {wb:.4f} "
                              f"(black-box may be lower by at most {cfg.tol_blackbox})",
                              acc_blackbox=bb["acc_avg"], acc_whitebox=wb))
    return out


def input_gradient(grad: dict[str, Any] | None, cfg: Any) -> list[dict[str, Any]]:
    if grad is None:
        return []
    f = grad["frac_finite_nonzero"]
    return [_check("input-gradient", f >= cfg.grad_min_frac,
                   f"fraction of examples with a finite, non-zero input gradient {f:.4f} "
                   f"(need >= {cfg.grad_min_frac})", **grad)]


def checks(rows: list[dict[str, Any]], curves: dict[str, Any], grad: dict[str, Any] | None,
           cfg: Any) -> list[dict[str, Any]]:
    """All checks, in report order."""
    return (monotone(curves, cfg) + huge_budget(rows, cfg) + strong_and_blackbox(rows, cfg)
            + input_gradient(grad, cfg))
