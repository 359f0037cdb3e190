"""Benchmarks of rsc_jax against PyTorch / SpikingJelly (benchmark-only dependencies).

Entry point: ``python -m benchmarks.run --suite=all [--quick]``; see docs/PERFORMANCE.md.
"""
