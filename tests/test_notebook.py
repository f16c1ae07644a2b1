"""The notebook: runs top to bottom in quick mode, writes its figures and tables, and exports cleanly."""
import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import NOTEBOOK, ROOT, require

FIGURES = [f"model {a} and {b} val acc and loss.jpg" for a, b in [(1, 2), (1, 3), (2, 4), (3, 4), (3, 5), (5, 6)]]


def run_quick(source, target, out, data_dir, timeout):
    """Execute a notebook with papermill in quick mode, results and figures under `out`."""
    subprocess.run([sys.executable, "-m", "papermill", str(source), str(target), "--cwd", str(ROOT),
                    "-p", "DATA_DIR", str(data_dir), "-p", "RESULTS_DIR", str(out / "results"),
                    "-p", "DOC_DIR", str(out / "documentation"), "-p", "QUICK", "True"],
                   check=True, timeout=timeout)


@pytest.fixture(scope="module")
def executed(tmp_path_factory, data_dir):
    """The notebook run top to bottom in quick mode, in a temporary folder."""
    out = tmp_path_factory.mktemp("run")
    run_quick(NOTEBOOK, out / "run.ipynb", out, data_dir, timeout=900)
    return out


def test_notebook_runs_top_to_bottom_in_quick_mode(executed):
    notebook = json.loads((executed / "run.ipynb").read_text())
    errors = [o for c in notebook["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for c in notebook["cells"] for o in c.get("outputs", []))
    assert "QUICK MODE" in text and "notebook finished" in text


def test_quick_run_writes_figures_tables_and_results(executed):
    docs = executed / "documentation" / "quick"
    for name in FIGURES + ["model_summary_tables.png", "model 6 confusion matrix.png"]:
        assert (docs / name).stat().st_size > 10_000, name
    results = executed / "results" / "quick"
    index = json.loads((results / "summary.json").read_text())
    expected = {f"model {i}" for i in range(1, 7)} | {"final validation", "final seed 0", "final seed 1",
                                                       "final seed 2"}
    assert set(index) == expected
    assert (results / "model 6.pt").exists() and (results / "final seed 0.pt").exists()
    assert all(s["config"]["quick"] for s in index.values())
    # model 5 used the learning rate of the better of models 3 and 4 on validation
    better = max(("model 3", "model 4"), key=lambda n: index[n]["final_val_acc"])
    assert index["model 5"]["config"]["lr"] == index[better]["config"]["lr"]


def test_rerun_with_complete_results_serves_them(executed, data_dir):
    """A second Run all finds every result complete and trains nothing."""
    run_quick(executed / "run.ipynb", executed / "again.ipynb", executed, data_dir, timeout=300)
    text = (executed / "again.ipynb").read_text()
    assert text.count("complete results found") == 10
    assert "train loss" not in text


def test_committed_notebook_has_outputs_and_no_widget_state():
    notebook = json.loads(NOTEBOOK.read_text())
    assert "widgets" not in notebook["metadata"]
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "commit the notebook executed top to bottom"
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 9
    assert any("parameters" in c["metadata"].get("tags", []) for c in code)


def test_html_export(tmp_path):
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(NOTEBOOK),
                    "--output-dir", str(tmp_path)], check=True, timeout=300)
    html = (tmp_path / "mini_project.html").read_text()
    assert html.count("data:image/png;base64") >= 9


def test_pdf_export_holds_the_figures(tmp_path):
    require(shutil.which("xelatex") is not None and shutil.which("pandoc") is not None,
            "xelatex and pandoc are needed for the PDF export")
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "pdf", str(NOTEBOOK),
                    "--output-dir", str(tmp_path)], check=True, timeout=600,
                   )
    pdf = (tmp_path / "mini_project.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Subtype\s*/Image", pdf)) >= 9
