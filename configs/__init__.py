"""The bundled experiment files (``NAME.py`` with ``get_config()``), one per experiment.

Not imported by the package: ``rsc_jax.config.resolve_file`` finds them by name
(``--config=digits``) or path (``--config=configs/digits.py``). This file makes the folder
a package so that ``pip install`` ships it, as ``rsc_jax/configs`` (pyproject.toml).
"""
