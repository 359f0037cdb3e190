"""The bundled sweep files (``NAME.py`` with ``get_sweep()``) for ``python -m rsc_jax.sweep``;
shipped as ``rsc_jax/configs/sweeps`` by ``pip install`` (pyproject.toml)."""
