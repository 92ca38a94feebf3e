"""notebooks/quickstart.ipynb runs top to bottom on coco-mini, so it cannot rot."""

import base64
from io import BytesIO

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from conftest import REPO


def _text(cell):
    return "".join(out.get("text", "") + "".join(out.get("data", {}).get("text/plain", "")) for out in cell.outputs)


@pytest.mark.slow
def test_quickstart_notebook_executes(coco_mini, monkeypatch):
    monkeypatch.setenv("IMGSEARCH_COCO_MINI", str(coco_mini))
    path = REPO / "notebooks" / "quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(out.output_type != "error" for cell in code for out in cell.outputs)
    assert "159 new, 0 unchanged, 0 failed" in _text(code[1])
    ranked = _text(code[2]).splitlines()
    assert len(ranked) == 6 and "giraffe" in ranked[0].lower()
    [grid] = [out for out in code[3].outputs if "image/png" in out.get("data", {})]
    picture = Image.open(BytesIO(base64.b64decode(grid["data"]["image/png"])))
    assert picture.size == (3 * 240, 2 * (240 + 24))
    described = _text(code[4])
    assert described.splitlines()[0].endswith(".jpg") and "giraffe" in described.lower()
    # Nothing on stderr: no tqdm warning about widgets, no model-loading bars.
    said = [out.get("text", "") for cell in code for out in cell.outputs if out.get("name") == "stderr"]
    assert not said, said


@pytest.mark.slow
def test_quickstart_notebook_runs_outside_a_clone(coco_mini, monkeypatch, tmp_path):
    """With only the installed package (no benchmarks/ above it), IMGSEARCH_COCO_MINI names the data."""
    monkeypatch.setenv("IMGSEARCH_COCO_MINI", str(coco_mini))
    notebook = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "159 new, 0 unchanged, 0 failed" in _text(code[1])
    assert "giraffe" in _text(code[2]).splitlines()[0].lower()
