"""The certification evaluator: Cohen et al.'s CERTIFY (``certify.py``) on the first
``num_examples`` test images, sharded over the mesh; writes ``certify.jsonl`` (one line
per example), ``certified.json`` and ``certified.png``.

The coding's certificate (radius formula, or why there is none) comes from the coding
registry (``coding.CODINGS``): Poisson and direct coding are refused before anything
is compiled.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np

from rsc_jax import certify, coding, config_checks, parallel, report, validation
from rsc_jax.evaluators import common

Array = jax.Array


def _section(cfg: Any) -> Any:
    """Accepts the full config (with a ``certify`` field) or the section itself."""
    if isinstance(cfg, Mapping) and "certify" in cfg:
        return cfg["certify"]
    if hasattr(cfg, "certify") and not isinstance(cfg, Mapping):
        return cfg.certify
    return cfg


def coding_of(classifier: Any) -> tuple[str, float, int]:
    """(method, sigma, T) of the classifier's coding; refuses codings without a certificate.

    T is the number of steps the network sees: 1 for an ANN (``config['model']['spiking']``
    False: ``Classifier.encode`` gives it the first step of the coding), so that an ANN
    trained with Gaussian noise is certified with Cohen et al.'s radius sigma Phi^-1(p_A),
    whatever ``coding.T`` says."""
    try:
        cod = classifier.config["coding"]
        method, sigma, T = cod["method"], cod["sigma"], cod["T"]
    except (AttributeError, KeyError, TypeError) as e:
        raise ValueError("classifier.config['coding'] must hold 'method', 'sigma' and 'T'") from e
    certify.check_coding(method, "config.coding.method")
    coding.check_sigma(sigma, method, "config.coding.sigma")
    validation.check_int("config.coding.T", T, 1)
    model = classifier.config.get("model") if isinstance(classifier.config, dict) else None
    if isinstance(model, dict) and not model.get("spiking", True):
        T = 1
    return str(method), float(sigma), int(T)


def run(classifier: Any, images: np.ndarray, labels: np.ndarray, cfg: Any, *, workdir: str,
        mesh: jax.sharding.Mesh, progress: bool = True, source: str | None = None) -> dict[str, Any]:
    """Certifies the first ``num_examples`` test images, sharded over ``mesh``.

    Args:
      classifier: has ``.logits(key, x[B, H, W, C]) -> [B, K]`` (one noisy draw,
        inference mode) and ``.config['coding'] = {'method', 'sigma', 'T'}``.
      images: [N, H, W, C] uint8 (0-255) or float in [0, 1]. labels: [N] ints.
      cfg: the ``config.certify`` section (``config.certify()``) or a config holding it.
      workdir: output folder. mesh: 1-D ``data`` mesh (``parallel.make_mesh``).
      progress: show a tqdm bar (images/s).
      source: the export certified (recorded in the result).

    Per-example seconds are the wall time of its image batch divided by the batch's
    images (the first includes compilation).

    Returns:
      dict with settings, radii, certified_accuracy, acr (mean of radius * correct),
      abstain_rate, seconds, images_per_second, radius_formula, max_certifiable_radius
      (the largest radius n and alpha allow, ``certify.max_radius``),
      at_max_certifiable_radius (fraction of examples with all n draws agreeing, whose
      radius is that cap), input_dim
      (d = H * W * C) and linf_equivalent (``certify.linf_equivalent`` of the grid radii
      and of max_certifiable_radius, in [0, 1] pixels and x 255).
    """
    method, sigma, T = coding_of(classifier)          # refuses poisson/direct first
    c = _section(cfg)
    config_checks.check_certify(c)
    n0, n, alpha, batch = int(c["n0"]), int(c["n"]), float(c["alpha"]), int(c["batch"])
    image_batch, seed = int(c["image_batch"]), int(c["seed"])
    radii_grid = [float(r) for r in c["radii"]]
    devices = int(mesh.devices.size)
    if image_batch % devices:
        raise config_checks.ConfigError(f"config.certify.image_batch={image_batch} is not allowed; it must be "
                                        f"divisible by the device count {devices}")
    images, labels = common.test_set(classifier, images, labels, int(c["num_examples"]))
    num = len(images)

    logits_fn = certify.static_fn(classifier.logits)
    key = parallel.replicate(jax.random.key(seed), mesh)

    def fn(indices: Array, x: Array) -> tuple[Array, Array]:
        return certify.certify_counts(key, indices, x, logits_fn=logits_fn, n0=n0, n=n, batch=batch)

    log: list[tuple[int, float]] = []
    pbar = common.bar(progress, num, f"certify {method} sigma={sigma:g}", unit="img")
    start = time.perf_counter()
    try:
        c0, c1 = parallel.map_examples(fn, [images], batch_size=image_batch, mesh=mesh,
                                       progress=common.timed_batches(log, pbar))
    finally:
        if pbar is not None:
            pbar.close()
    seconds = time.perf_counter() - start
    res = certify.certify_from_counts(c0, c1, alpha=alpha, sigma=sigma, coding=method, T=T)
    per_example = np.concatenate([np.full(v, s / v) for v, s in log])
    correct = res.prediction == labels

    lines = [json.dumps({
        "index": i, "label": int(labels[i]), "prediction": int(res.prediction[i]),
        "correct": bool(correct[i]), "p_A": float(res.p_lower[i]),
        "radius": float(res.radius[i]), "n_A": int(res.n_A[i]),
        "counts_selection": res.counts_selection[i].tolist(),
        "counts": res.counts[i].tolist(), "seconds": float(per_example[i])}) for i in range(num)]
    acc = certify.certified_accuracy(radii_grid, res.radius, correct)
    input_dim = int(np.prod(images.shape[1:]))
    max_r = certify.max_radius(n, alpha, sigma=sigma, coding=method, T=T)
    linf_grid = certify.linf_equivalent(radii_grid, input_dim)
    linf_max = float(certify.linf_equivalent(max_r, input_dim))
    steady = log[1:]
    steady_s = sum(s for _, s in steady)
    result = {
        "settings": {"coding": method, "sigma": sigma, "T": T, "n0": n0, "n": n, "alpha": alpha,
                     "batch": batch, "image_batch": image_batch, "num_examples": num,
                     "seed": seed, "devices": devices},
        "radii": radii_grid,
        "certified_accuracy": [float(a) for a in acc],
        "acr": float(np.mean(res.radius * correct)),
        "abstain_rate": float(np.mean(res.prediction == -1)),
        "num_examples": num,
        "seconds": seconds,
        "images_per_second": num / seconds if seconds > 0 else float("inf"),
        "images_per_second_after_first_batch": (sum(v for v, _ in steady) / steady_s
                                                if steady and steady_s > 0 else None),
        "radius_formula": coding.get(method).radius_formula,
        # p_A <= alpha^(1/n) (all n draws agree), so no larger radius can be certified.
        "max_certifiable_radius": max_r,
        # examples whose n draws all agreed (n_A = n): their radius is that cap, limited by n, not the model
        "at_max_certifiable_radius": float(np.mean(res.n_A == n)),
        # d = H * W * C; an l2 certificate r covers the l_inf ball of radius r / sqrt(d) (a bound).
        "input_dim": input_dim,
        "linf_equivalent": {
            "radii": [float(v) for v in linf_grid],
            "radii_255": [float(255 * v) for v in linf_grid],
            "max_certifiable_radius": linf_max,
            "max_certifiable_radius_255": 255 * linf_max,
            "rule": "r / sqrt(input_dim): the l_inf ball of that radius lies inside the l2 ball of radius r",
        },
        "export": source,
    }
    os.makedirs(workdir, exist_ok=True)
    report.write_certification(workdir, result, lines, res.radius, correct)
    return result
