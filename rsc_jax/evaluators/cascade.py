"""The worst case's machinery: per-example judging on the key streams, the selection
rule, and the cascade that runs each attack only where it can still matter.

``evaluate`` runs the jobs of ``attack_suite`` (clean on every image, the rows' jobs on
the standalone images, then each strong eps's chain in cascade order) and returns the
worst cases; ``choose`` is the selection rule; ``worst_case`` one entry of
robustness.json. The rules and why: ``evaluators/robustness.py`` and docs/EVALUATION.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsc_jax import attacks, backend, judging, metrics, parallel
from rsc_jax.evaluators import attack_suite, common
from rsc_jax.evaluators.common import LogitsFn

Array = jax.Array
STREAM_ATTACK, STREAM_JUDGE, STREAM_SELECT, STREAM_REPORT = 0, 1, 2, 3

log = logging.getLogger(__name__)


def batch_fn(job: attack_suite.Job, logits_fn: LogitsFn, cfg: Any) -> Callable:
    """A jitted ``(eps, positions, idx, x, y) -> dict of [B]`` for ``job``, keys from the
    global example indices ``idx``: the crafted point judged on the judge stream (``avg``,
    ``single``, ``margin``, ...) and on the report stream (``fresh_avg``,
    ``fresh_single``), both by one vmapped judge (one copy of the model to compile)."""
    M, seed = cfg.judge_draws, cfg.seed

    @backend.jit
    def fn(eps, _, idx, x, y):
        ak = judging.example_keys(seed, idx, stream=STREAM_ATTACK)
        jk = judging.example_keys(seed, idx, stream=STREAM_JUDGE)
        rk = judging.example_keys(seed, idx, stream=STREAM_REPORT)
        out: dict[str, Array] = {}
        if job.craft is None:
            xa = x
        elif job.candidates:
            cands, _ = job.craft(ak, x, y, eps)
            sk = judging.example_keys(seed, idx, stream=STREAM_SELECT)
            xa, choice = attacks.select_strongest(cands, logits_fn, sk, y, draws=cfg.select_draws)
            out["choice"] = choice
            per = jax.vmap(lambda c: judging.judge(logits_fn, jk, c, y, draws=M))(cands)
            for i, n in enumerate(job.candidates):
                out[f"single/{n}"] = per["correct_single"][i]
                out[f"avg/{n}"] = per["correct_avg"][i]
        else:
            xa, extra = job.craft(ak, x, y, eps)
            out.update(extra)
        both = jax.vmap(lambda k: judging.judge(logits_fn, k, xa, y, draws=M))(jnp.stack([jk, rk]))
        r = {k: v[0] for k, v in both.items()}
        d = (xa - x).reshape(x.shape[0], -1)
        out.update(single=r["correct_single"], avg=r["correct_avg"], loss=r["loss"], margin=r["margin"],
                   linf=jnp.abs(d).max(1), l2=jnp.sqrt(jnp.sum(d * d, 1)),
                   in_range=((xa >= 0) & (xa <= 1)).reshape(x.shape[0], -1).all(1),
                   fresh_avg=both["correct_avg"][1], fresh_single=both["correct_single"][1])
        return out

    return fn


def choose(avg: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """The worst case's selection rule, per example: the index of the first attack (in
    cascade order, axis 0 of ``[A, N]`` judge-stream correctness ``avg``) that
    misclassifies it, else the attack of the lowest judge-stream ``margin`` (the first on
    ties). ``NaN`` marks an attack that did not run on an example (the cascade skipped it
    because an earlier one broke it); an example no attack broke must have every entry."""
    broke = avg == 0
    first = np.where(broke.any(0), broke.argmax(0), -1)
    rest = first < 0
    if np.isnan(margin[:, rest]).any():
        raise ValueError("an example no attack broke misses the result of some attack: the cascade ran "
                         "out of order")
    first[rest] = np.argmin(margin[:, rest], 0)
    return first


def worst_case(chain: list[attack_suite.Job], outs: list[dict[str, np.ndarray]], cfg: Any, e: float,
               set_name: str) -> dict[str, Any]:
    """One worst-case entry (module docstring) from the chain's full-length outputs
    (``NaN`` where an attack did not run): the chosen points' report-stream correctness,
    the judge-stream accuracy the selection saw (``selection_acc_avg``, optimistic for the
    attacker), which attack chose each point, and the cost per example."""
    avg = np.stack([o["avg"] for o in outs])
    c = choose(avg, np.stack([o["margin"] for o in outs]))
    cols = np.arange(avg.shape[1])
    fresh = np.stack([o["fresh_avg"] for o in outs])[c, cols]
    single = np.stack([o["fresh_single"] for o in outs])[c, cols]
    ran = [int(np.sum(~np.isnan(o["avg"]))) for o in outs]
    n = len(fresh)
    cost = sum((j.passes * r for j, r in zip(chain, ran)), attack_suite.Passes())
    return {"eps": float(e), "eps_255": float(e) * 255, "set": set_name, "attacks": [j.name for j in chain],
            "acc_single": float(np.mean(single)), "acc_avg": float(np.mean(fresh)),
            "ci95_avg": metrics.binomial_interval(int(np.sum(fresh)), n),
            "correct_avg": metrics.pack_correct(fresh), "judge": {"stream": STREAM_REPORT, "draws": cfg.judge_draws},
            "selection_acc_avg": float(np.mean(avg[c, cols])),
            "chosen_counts": {j.name: int(np.sum(c == i)) for i, j in enumerate(chain)},
            "examples_attacked": {j.name: r for j, r in zip(chain, ran)},
            "passes_per_example": {"forward": cost.forward / n, "backward": cost.backward / n},
            "cascade": bool(cfg.cascade)}


class Store:
    """Each job's outputs kept on disk as it finishes a set of examples, so that a stage
    stopped part-way (a preempted machine, Ctrl-C) resumes where it stopped.

    A job's outputs are a function of its settings, the model, the images and the
    per-example keys only (``batch_fn``), so they are reused exactly: one ``.npz`` per
    job in ``directory``, named by a hash of ``fingerprint`` (the model, the images, the
    attack config, from the caller) and the job's name, eps, norm and settings. Files
    are written whole (a temporary file, then renamed); ``clear`` removes the directory
    once the stage has written its report."""

    def __init__(self, directory: str, fingerprint: str):
        self.directory, self.fingerprint = directory, fingerprint

    def path(self, job: attack_suite.Job) -> str:
        h = hashlib.sha256(json.dumps([self.fingerprint, job.name, float(job.eps), job.norm, job.record],
                                      sort_keys=True, default=str).encode()).hexdigest()[:24]
        return os.path.join(self.directory, f"{job.name}-{h}.npz")

    def load(self, job: attack_suite.Job, n: int) -> dict[str, np.ndarray] | None:
        p = self.path(job)
        if not os.path.isfile(p):
            return None
        with np.load(p) as z:
            out = {k: z[k] for k in z.files}
        return out if all(len(v) == n for v in out.values()) else None

    def save(self, job: attack_suite.Job, outs: dict[str, np.ndarray]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        p = self.path(job)
        tmp = p + ".tmp.npz"
        np.savez(tmp, **outs)
        os.replace(tmp, p)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def fingerprint(params: Any, config: Any, images: np.ndarray, labels: np.ndarray, cfg: Any,
                others: tuple[Any, ...] = ()) -> str:
    """A hash of what a job's outputs depend on besides its own settings: the model's
    variables and description, the images and labels, the whole attack config (keys'
    seed, draws, batch size, ``transfer_from``, ...), and the variables of ``others``
    (the transfer model)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves((params, [getattr(o, "params", None) for o in others])):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    h.update(json.dumps(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg), sort_keys=True,
                        default=str).encode())
    return h.hexdigest()


def store_for(classifier: Any, images: np.ndarray, labels: np.ndarray, cfg: Any, directory: str,
              others: tuple[Any, ...] = ()) -> Store | None:
    """The ``Store`` of a stage in ``directory`` for a ``Classifier`` (its variables and
    description fingerprint the model, with the variables of ``others``); None for a bare
    logits function."""
    params, config = getattr(classifier, "params", None), getattr(classifier, "config", None)
    if params is None or config is None:
        return None
    return Store(directory, fingerprint(params, config, images, labels, cfg, others))


class Runner:
    """Runs jobs on chosen examples and keeps full-length outputs (``NaN`` where a job did
    not run), compiling one function per ``cache_key``; with a ``Store``, what a job has
    done is saved after each call and read back by a later run."""

    def __init__(self, logits_fn: LogitsFn, images: np.ndarray, labels: np.ndarray, cfg: Any,
                 mesh: jax.sharding.Mesh, progress: bool, store: Store | None = None):
        self.logits_fn, self.images, self.labels, self.cfg, self.mesh = logits_fn, images, labels, cfg, mesh
        self.progress, self.store = progress, store
        self.cache: dict[tuple, Callable] = {}
        self.outs: dict[int, dict[str, np.ndarray]] = {}

    def run(self, job: attack_suite.Job, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Runs ``job`` on the examples ``idx`` it has not run on yet; returns its outputs."""
        n = len(self.images)
        have = self.outs.get(id(job))
        if have is None and self.store is not None:
            have = self.store.load(job, n)
            if have is not None:
                self.outs[id(job)] = have
        todo = idx if have is None else idx[np.isnan(have["avg"][idx])]
        if len(todo):
            if job.cache_key not in self.cache:
                self.cache[job.cache_key] = batch_fn(job, self.logits_fn, self.cfg)
            fn = functools.partial(self.cache[job.cache_key], jnp.float32(job.eps))
            nb = -(-len(todo) // self.cfg.batch_size)
            got = parallel.map_examples(fn, [todo.astype(np.int32), self.images[todo], self.labels[todo]],
                                        batch_size=self.cfg.batch_size, mesh=self.mesh,
                                        progress=common.batch_bar(self.progress and nb > 4, nb, job.name))
            if have is None:
                have = {k: np.full((n,) + v.shape[1:], np.nan) for k, v in got.items()}
                self.outs[id(job)] = have
            for k, v in got.items():
                have[k][todo] = v
            if self.store is not None:
                self.store.save(job, have)
        return have


def evaluate(jobs: list[attack_suite.Job], logits_fn: LogitsFn, images: np.ndarray, labels: np.ndarray, cfg: Any,
             mesh: jax.sharding.Mesh, n_rows: int, progress: bool = False, store: Store | None = None
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[int, dict[str, np.ndarray]], dict[int, float]]:
    """Runs ``jobs``: clean on every image, the jobs outside every worst case on the first
    ``n_rows`` images, then per strong eps its chain in cascade order, each job on the
    first ``n_rows`` images and on every image not yet broken (all images without
    ``cfg.cascade``); with ``store``, each job's outputs so far are saved and reused
    (``Store``). Returns (worst cases, common-set worst cases, ``{id(job): outputs}``
    with ``NaN`` where a job did not run, ``{id(job): seconds}``)."""
    n = len(images)
    runner = Runner(logits_fn, images, labels, cfg, mesh, progress, store)
    chains = {e: attack_suite.chain(jobs, e) for e in cfg.strong_eps}
    in_chain = {id(j) for c in chains.values() for j in c}
    everyone, standalone = np.arange(n), np.arange(n_rows)
    pbar = common.bar(progress, len(jobs), "robustness", unit="attack")
    seconds: dict[int, float] = {}

    def timed(job: attack_suite.Job, idx: np.ndarray) -> dict[str, np.ndarray]:
        t0 = time.time()
        if pbar is not None:
            pbar.set_postfix_str(f"{job.name} eps={job.eps:.3g}")
        out = runner.run(job, idx)
        seconds[id(job)] = seconds.get(id(job), 0.0) + time.time() - t0
        log.info("robustness %s eps=%.4g: %d images attacked, judge-stream acc_avg %.4f on them (%.1fs)", job.name,
                 job.eps, int(np.sum(~np.isnan(out["avg"]))), float(np.nanmean(out["avg"])), time.time() - t0)
        return out

    clean = jobs[0]
    timed(clean, everyone)
    for job in jobs:
        if id(job) not in in_chain or job is clean:
            if job is not clean and not (job.craft is not None and job.eps == 0):
                timed(job, standalone)
            if pbar is not None:
                pbar.update(1)
    worst, common_worst = [], []
    done: set[int] = set()
    for e, chain in chains.items():
        broken = np.zeros(n, bool)
        outs = []
        for job in chain:
            idx = np.union1d(standalone, np.flatnonzero(~broken)) if cfg.cascade else everyone
            out = timed(job, idx)
            broken |= out["avg"] == 0
            outs.append(out)
            if pbar is not None and id(job) not in done and job is not clean:
                pbar.update(1)
            done.add(id(job))
        worst.append(worst_case(chain, outs, cfg, e, "all"))
        k = sum(j.common for j in chain)
        common_worst.append(worst_case(chain[:k], outs[:k], cfg, e, "common"))
    if pbar is not None:
        pbar.close()
    return worst, common_worst, runner.outs, seconds
