"""Timing (interleaved repetitions, median and spread), machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Callable

import numpy as np


def machine() -> dict[str, Any]:
    import jax
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "device_kind": jax.devices()[0].device_kind,
            "platform": jax.devices()[0].platform, "jax": jax.__version__,
            "python": platform.python_version()}
    try:
        import flax
        info["flax"] = flax.__version__
    except ImportError:
        pass
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import importlib.metadata as md
        info["spikingjelly"] = md.version("spikingjelly")
    except Exception:
        pass
    return info


def stats(xs: list[float]) -> dict[str, Any]:
    a = np.asarray(xs, np.float64)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "q25": float(np.percentile(a, 25)), "q75": float(np.percentile(a, 75)), "n": int(a.size)}


def interleave(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Runs every fn ``warmup`` times, then ``reps`` rounds of one call each, in turn.

    Each fn must block until its result is ready. Returns the seconds per call.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


def ratio(times: dict[str, list[float]], num: str, den: str, scale: float = 1.0) -> dict[str, Any]:
    """Per-round ratios ``num / (scale * den)`` (same round, so shared-CPU noise cancels)."""
    r = [a / (scale * b) for a, b in zip(times[num], times[den])]
    return stats(r)


def fmt(s: dict[str, Any], unit: str = "", digits: int = 3) -> str:
    return f"{s['median']:.{digits}g}{unit} [{s['min']:.{digits}g}-{s['max']:.{digits}g}]"


def write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=float)
