"""examples/tour.ipynb executes end to end and its results make sense.

The notebook is executed with nbclient (kernel ``python3``, cwd = the repository root)
with ``RSC_TOUR_EXPORT`` unset, so it trains its own small digits model (about 15 s),
attacks it and certifies it; the whole run takes under a minute on 2 CPU cores. The last
cell prints a JSON summary that the checks below read.

After editing the notebook, refresh its saved outputs with::

    python tests/test_notebook.py
"""

from __future__ import annotations

import copy
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "tour.ipynb")
CELL_TIMEOUT_S = 300


def _require_jupyter():
    try:
        import ipykernel  # noqa: F401  (the kernel nbclient starts)
        import nbclient
        import nbformat
    except ImportError as e:
        pytest.skip(f"executing examples/tour.ipynb needs nbclient, nbformat and ipykernel "
                    f"(see requirements.txt): {e}")
    return nbclient, nbformat


def execute(nb):
    """Executes ``nb`` in place from the repository root, without RSC_TOUR_EXPORT."""
    from nbclient import NotebookClient
    saved = os.environ.pop("RSC_TOUR_EXPORT", None)
    try:
        NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": ROOT}}).execute()
    finally:
        if saved is not None:
            os.environ["RSC_TOUR_EXPORT"] = saved
    return nb


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _summary(nb) -> dict:
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = _stdout(last)
    start = text.find("{")
    assert start >= 0, f"the last cell printed no JSON summary:\n{text}"
    return json.loads(text[start:])


def _outputs_of(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if kind in o.get("data", {})]


def test_saved_notebook_is_executed():
    """The committed notebook carries its outputs (a reader sees figures without running it)."""
    _, nbformat = _require_jupyter()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), \
        "examples/tour.ipynb is saved unexecuted; run `python tests/test_notebook.py`"
    assert len(_outputs_of(nb, "image/png")) >= 3
    assert "clean_accuracy" in _summary(nb)


def test_tour_notebook_executes_and_reports_sane_results(monkeypatch):
    _, nbformat = _require_jupyter()
    monkeypatch.delenv("RSC_TOUR_EXPORT", raising=False)
    nb = execute(copy.deepcopy(nbformat.read(NOTEBOOK, as_version=4)))  # raises on any cell error

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert len(_outputs_of(nb, "image/png")) >= 3, "the coding, LIF and attack figures are missing"
    every_output = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    assert ROOT not in every_output, "an output holds a path of this checkout"

    s = _summary(nb)
    assert s["trained"] is True                       # RSC_TOUR_EXPORT unset: it trained its own model
    assert s["clean_accuracy"] > 0.8, s

    # Coding moments: Poisson's mean per-pixel variance x(1-x) of a digit lies in (0, 1/4].
    assert 0.0 < s["matched_sigma"] <= 0.5
    assert set(s["lif_spikes"]) == {"direct", "poisson", "rsc1", "rsc2"}
    assert all(0 < v <= 4 * 64 for v in s["lif_spikes"].values()), s["lif_spikes"]

    a = s["pgd_eot"]
    assert a["eot"] > 1 and a["n"] >= 32
    assert a["clean"] > 0.8, a
    assert 0.0 <= a["32/255"] < a["clean"], a        # the large budget must hurt
    assert a["32/255"] <= a["8/255"] + 0.1, a         # and more than the small one (up to noise)

    c = s["certify"]
    radii, pred, labels = c["radii"], c["predictions"], c["labels"]
    assert len(radii) == len(pred) == len(labels) == 8
    assert all(r >= 0.0 for r in radii)
    assert all(r <= c["max_radius"] + 1e-6 for r in radii)       # n = 500 caps p_A at alpha^(1/n)
    assert isinstance(c["abstentions"], int) and c["abstentions"] == sum(p == -1 for p in pred)
    assert all(r == 0.0 for r, p in zip(radii, pred) if p == -1)
    assert c["certified_correct"] == sum(p == y for p, y in zip(pred, labels))
    assert c["certified_correct"] >= 4, c
    assert any(r > 0.0 for r in radii)


if __name__ == "__main__":
    # Re-execute the notebook and save it with its outputs.
    import time
    import nbformat
    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    execute(nb)
    nbformat.write(nb, NOTEBOOK)
    print(f"executed and saved {os.path.relpath(NOTEBOOK)} in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
