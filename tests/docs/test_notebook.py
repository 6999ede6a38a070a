"""docs/analysis-notebook.ipynb runs headless, top to bottom, in a real Jupyter kernel, as a
user would open it from docs/: any cell that raises fails here, and its figures must come out
as images (the plot functions return Figures and leave the backend to Jupyter)."""

from __future__ import annotations

from pathlib import Path

import ipykernel  # noqa: F401 - the kernel the notebook runs in (dev extra, like the two below)
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "analysis-notebook.ipynb"


def test_analysis_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Jupyter's own backend (inline), not the Agg the test suite sets for itself
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})  # fmt: skip
    client.execute()  # raises CellExecutionError on the first cell that fails
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "DONE" in text and "at.%" in text
    images = [c.source.splitlines()[-1] for c in code
              if any("image/png" in o.get("data", {}) for o in c.outputs)]  # fmt: skip
    # spectrum, hit map, slices: each shown once, as the cell's result
    assert images == ["fig", "hit_map(*res.hitmap)", 'figs["slices"]'], images
    for c in code:
        assert sum("image/png" in o.get("data", {}) for o in c.outputs) <= 1
