"""Every notebook in notebooks/ runs top to bottom at SIZE = "small"; the committed files carry no outputs
and are exactly what notebooks/build_notebooks.py writes."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_six_notebooks_are_there_and_generated():
    builder = _builder()
    assert NAMES == sorted(builder.NOTEBOOKS) and len(NAMES) == 6
    for name in NAMES:
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(committed)
        assert committed == builder.build(name), f"{name} differs from build_notebooks.py; rerun it"
        assert all(
            c.get("outputs", []) == [] and c.get("execution_count") is None
            for c in committed.cells
            if c.cell_type == "code"
        )
        first_code = next(c for c in committed.cells if c.cell_type == "code")
        assert (
            "parameters" in first_code.metadata.get("tags", [])
            and 'SIZE = os.environ.get("OBLIQUE_NB_SIZE", "small")' in first_code.source
        )


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_studies")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_small_size(name, out, monkeypatch):
    monkeypatch.setenv("OBLIQUE_NB_SIZE", "small")
    monkeypatch.setenv("OBLIQUE_NB_OUT", str(out))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
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
