r"""The training losses, as pure functions of arrays (no model, no config).

- ``cross_entropy``: plain RSC training (SPEC §3).
- ``kl_divergence``, ``kd_loss``: knowledge distillation (Hinton et al., 2015).
- ``pre_activations``, ``pre_alignment_loss``: E-RSCT's pre-synaptic alignment
  (Wu et al., "RSC-SNN", ACM MM 2024, arXiv:2407.20099).

``distill.distillation_loss`` combines them into the E-RSCT objective
``CE + alpha * KD + beta * L_pre``; its weights' defaults (alpha = 1, tau_kd = 4,
beta = 1) are ours, not the paper's.
"""

from __future__ import annotations

from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Batch-mean cross-entropy ``mean_b [-log softmax(z_b)[y_b]]``: a scalar.

    Args:
      logits: ``[B, C]`` (for an SNN: averaged over the T time steps).
      labels: ``[B]`` integer class ids.
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def kl_divergence(p_logits: Array, q_logits: Array) -> Array:
    """Per-example KL(softmax(p) || softmax(q)) = sum_c p_c (log p_c - log q_c): ``[B]``.

    Args:
      p_logits, q_logits: ``[B, C]`` logits (p: the target distribution).
    """
    chex.assert_equal_shape((p_logits, q_logits))
    chex.assert_rank(p_logits, 2)
    log_p = jax.nn.log_softmax(p_logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(q_logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kd_loss(student_logits: Array, teacher_logits: Array, tau: float | Array) -> Array:
    """Hinton et al. (2015) distillation term, batch mean:

        tau^2 * mean_b KL(softmax(z_T,b / tau) || softmax(z_S,b / tau)).

    The tau^2 factor keeps the gradient scale of the soft targets independent of tau
    (Hinton et al., 2015, §2). Gradients flow into ``student_logits`` only when the
    caller stops them on the teacher. Args: ``[B, C]`` logits each and the
    temperature ``tau`` > 0 (E-RSCT's default 4 is ours). Returns a scalar.
    """
    chex.assert_equal_shape((student_logits, teacher_logits))
    return tau ** 2 * kl_divergence(teacher_logits / tau, student_logits / tau).mean()


def path_str(path: tuple) -> str:
    """A pytree key path as ``"a/b/0"`` (dict keys, attribute names, sequence indices)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def pre_activations(intermediates: Mapping[str, Any]) -> dict[str, Array]:
    """The sown ``pre_stage*`` tensors by module path, e.g. ``"stage0/act/pre_stage0"``.

    Args:
      intermediates: the ``intermediates`` collection of ``model.apply(...,
        mutable=["intermediates"])``; sown values are tuples of one array each,
        ``[B, ...]`` (spiking models sow the time-mean of the current, the ANN twin the
        pre-ReLU value).
    """
    out: dict[str, Array] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        names = path_str(path).split("/")
        if names and names[-1].isdigit():        # the sow tuple's index
            if names[-1] != "0":
                raise ValueError(f"{'/'.join(names[:-1])} was sown more than once; one forward pass per apply")
            names = names[:-1]
        name = "/".join(names)
        if name.rsplit("/", 1)[-1].startswith("pre_stage"):
            out[name] = leaf
    return out


def pre_alignment_loss(student_pre: Mapping[str, Array], teacher_pre: Mapping[str, Array]
                       ) -> tuple[Array, dict[str, Array]]:
    """E-RSCT's pre-synaptic alignment (Wu et al., ACM MM 2024, arXiv:2407.20099; SPEC §3):

        L_pre = sum_k mean((s_k - t_k)^2)

    over the stages k both models sow, s_k the student's time-mean pre-synaptic current
    (the BN output feeding the k-th LIF layer) and t_k the teacher's pre-ReLU output at
    the same module path. The caller weights it (E-RSCT: beta; our default 1).

    Args:
      student_pre: ``{path: [B, ...]}`` time-mean pre-synaptic currents of the student.
      teacher_pre: ``{path: [B, ...]}`` pre-activations of the teacher (same paths).

    Returns:
      ``(L_pre, {path: MSE_k})``; raises ``ValueError`` when the paths differ or when
      there are none.
    """
    if set(student_pre) != set(teacher_pre):
        missing = sorted(set(student_pre) ^ set(teacher_pre))
        raise ValueError(f"student and teacher sow different pre-synaptic stages; first difference: {missing[0]}")
    if not student_pre:
        raise ValueError("the models sow no pre_stage* intermediates; L_pre needs at least one stage")
    per = {}
    for k in sorted(student_pre):
        s, t = student_pre[k], teacher_pre[k]
        chex.assert_equal_shape((s, t))
        per[k] = jnp.mean(jnp.square(s.astype(jnp.float32) - t.astype(jnp.float32)))
    return sum(per.values()), per
