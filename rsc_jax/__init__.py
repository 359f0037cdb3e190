"""rsc_jax: randomized smoothing coding (RSC) for spiking neural networks in JAX.

A reimplementation of RSC-SNN (Wu et al., "RSC-SNN: Exploring the Trade-off Between
Adversarial Robustness and Accuracy in Spiking Neural Networks via Randomized Smoothing
Coding", ACM MM 2024, arXiv:2407.20099). The public modules are imported lazily so
that ``from rsc_jax import coding`` stays cheap in a notebook.
"""

# The one place the version is written: pyproject.toml reads it (``dynamic``), so that
# ``importlib.metadata.version("rsc-jax")`` agrees once installed; every export's config.json
# and every report.json record it as ``package_version``.
__version__ = "0.1.0"
