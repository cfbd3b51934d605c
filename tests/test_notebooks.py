"""The notebooks in notebooks/ run, and are committed with their outputs.

Each notebook is executed top to bottom in a fresh kernel (nbclient + ipykernel, from
the ``test`` extra) with JAXOPT_LSQ_EXAMPLE_QUICK=1, which shrinks the batch sizes and
grids, in a temporary working directory; the executed copy is thrown away. The
committed files keep the outputs of a full run, so they read well on GitHub.
"""

import os
import pathlib
import warnings

import pytest

ROOT = pathlib.Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

nbformat = pytest.importorskip("nbformat")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("JAXOPT_LSQ_EXAMPLE_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    with warnings.catch_warnings():  # the Jupyter stack's own deprecations are not ours
        warnings.simplefilter("ignore")
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()  # raises CellExecutionError on the first failing cell
    assert any(o.get("output_type") == "display_data" for c in nb.cells if c.cell_type == "code"
               for o in c.outputs), "no plot"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_committed_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "run all cells before committing"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run top to bottom"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot in the outputs"
