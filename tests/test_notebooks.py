"""The notebooks' source is notebooks/<name>.py (jupytext percent format); the committed <name>.ipynb must
have the same cells, no outputs, and the parameters cell first. Every notebook runs top to bottom at
SIZE = "small"."""

from __future__ import annotations

import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
REGENERATE = "jupytext --update --to ipynb notebooks/*.py"


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    """What a notebook is, for the sync check: each cell's type, source and tags (other metadata, ids and
    the notebook's own metadata are left to jupytext and Jupyter)."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def test_seven_notebook_sources_each_with_its_ipynb():
    assert len(NAMES) == 7, NAMES
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_in_sync_with_its_source(name):
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(committed)
    assert _cells(committed) == _cells(source), f"{name}.ipynb differs from {name}.py; run `{REGENERATE}`"
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}.ipynb has outputs"
    assert "parameters" in code[0].metadata.get("tags", [])
    assert 'SIZE = os.environ.get("OBLIQUE_NB_SIZE", "small")' in code[0].source


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_studies")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_small_size(name, out, monkeypatch):
    monkeypatch.setenv("OBLIQUE_NB_SIZE", "small")
    monkeypatch.setenv("OBLIQUE_NB_OUT", str(out))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(out)}}
    ).execute()
    seconds = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert images, f"{name} showed no figure"
    assert seconds < 120, f"{name} took {seconds:.0f} s at the small size"
