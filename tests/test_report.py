"""The notebook reads like a finished report, on GitHub and as a PDF: code fits the page, tables are real
tables, headings are numbered once, and "Results at a glance" is computed from the results store."""
import base64
import json
import re
import shutil
import struct
import subprocess
import sys

import pytest

import report
from store import ResultsStore, config_hash
from conftest import NOTEBOOK, require

# The PDF export sets code in a box that holds 80 characters of its monospaced font (measured with
# nbconvert 7 at 11 pt on a letter page); longer lines wrap with continuation marks.
MAX_LINE = 80
SIX = [f"model {i}" for i in range(1, 7)]


def notebook() -> dict:
    return json.loads(NOTEBOOK.read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def outputs(nb: dict) -> list[dict]:
    return [o for c in code_cells(nb) for o in c.get("outputs", [])]


def dataframe_outputs(nb: dict) -> list[dict]:
    return [o for o in outputs(nb) if 'class="dataframe"' in "".join(o.get("data", {}).get("text/html", ""))]


def latex_outputs(nb: dict) -> list[str]:
    return ["".join(o["data"]["text/latex"]) for o in outputs(nb) if "text/latex" in o.get("data", {})]


# --- the committed notebook ------------------------------------------------------------------------------


def test_no_code_line_is_longer_than_the_page():
    long = [(i, len(line), line) for i, cell in enumerate(notebook()["cells"]) if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if len(line) > MAX_LINE]
    assert not long, f"code lines over {MAX_LINE} characters (cell, length, line): {long}"


def test_headings_carry_no_hand_numbers_and_the_pdf_has_a_title():
    nb = notebook()
    headings = [line for c in nb["cells"] if c["cell_type"] == "markdown"
                for line in "".join(c["source"]).splitlines() if line.startswith("#")]
    assert len(headings) >= 8
    numbered = [h for h in headings if re.match(r"#+\s+\d+(\.\d+)*\.?\s", h)]
    assert not numbered, f"the PDF numbers headings itself: {numbered}"
    assert nb["metadata"].get("title"), "set the notebook's metadata title (the PDF's title)"


def test_every_dataframe_output_carries_a_latex_table():
    nb = notebook()
    frames = dataframe_outputs(nb)
    assert len(frames) >= 8, "environment, class counts, Tables 1 and 2, results, per-class accuracy"
    missing = [o for o in frames if r"\begin{tabular}" not in "".join(o["data"].get("text/latex", ""))]
    assert not missing, f"{len(missing)} DataFrame outputs have no LaTeX table (report.report_tables())"


def test_glance_sits_near_the_top_and_is_refreshed_by_the_last_cell():
    nb = notebook()
    code = code_cells(nb)
    sources = ["".join(c["source"]) for c in code]
    first = next(i for i, s in enumerate(sources) if 'display_id="glance"' in s)
    assert "= display(report.results_at_a_glance(" in sources[first] and first <= 4
    assert "update_display(report.results_at_a_glance(" in sources[-1] and 'display_id="glance"' in sources[-1]
    shown = "".join("".join(o["data"]["text/plain"]) for o in code[first]["outputs"]
                    if "text/plain" in o.get("data", {}))
    assert "Full-scale results" in shown
    printed = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for o in outputs(nb))
    if "QUICK MODE" in printed:  # a quick-mode render says so at the top
        assert "quick-mode smoke test" in shown


def png_width(output: dict) -> int:
    return struct.unpack(">I", base64.b64decode(output["data"]["image/png"])[16:20])[0]


def test_figures_are_sized_for_the_page():
    images = [o for o in outputs(notebook()) if "image/png" in o.get("data", {})]
    assert len(images) >= 9
    # the PDF scales a figure to at most 0.9 of the 6.5 in line: beyond 8 in its fonts get too small to read
    wide = [png_width(o) for o in images if png_width(o) > 800]  # 8 in at the inline backend's 100 dpi
    assert not wide, f"figures wider than 8 in: {wide} px"


# --- the PDF export --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The committed notebook exported to LaTeX by nbconvert and typeset once by xelatex."""
    require(shutil.which("xelatex") is not None and shutil.which("pandoc") is not None,
            "xelatex and pandoc are needed for the PDF export")
    out = tmp_path_factory.mktemp("pdf")
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "latex", str(NOTEBOOK),
                    "--output-dir", str(out)], check=True, timeout=300)
    tex = out / "mini_project.tex"
    run = subprocess.run(["xelatex", "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=out,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    return out


def test_pdf_compiles(exported):
    assert (exported / "mini_project.pdf").read_bytes().startswith(b"%PDF")


def test_tables_are_real_tables_in_the_pdf(exported):
    tex = (exported / "mini_project.tex").read_text()
    nb = notebook()
    expected = sum(text.count(r"\begin{tabular}") for text in latex_outputs(nb))
    assert expected >= len(dataframe_outputs(nb)) >= 8
    assert tex.count(r"\begin{tabular}") == expected
    log = (exported / "mini_project.log").read_text(errors="replace")
    assert not re.search(r"Missing character", log), "a character the PDF font lacks"


def test_pdf_headings_are_numbered_once(exported):
    tex = (exported / "mini_project.tex").read_text()
    sections = re.findall(r"\\(?:sub)*section\*?\{([^}]*)\}", tex)
    assert len(sections) >= 8
    assert not [s for s in sections if re.match(r"\s*\d+(\.\d+)*\.?\s", s)], sections
    assert re.search(r"\\title\{[^}]+\}", tex) and r"\title{mini\_project}" not in tex
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-layout", str(exported / "mini_project.pdf"), "-"],
                              capture_output=True, text=True, check=True).stdout
        twice = re.findall(r"^\s*\d+(?:\.\d+)*\s+\d+\.\s+[A-Z].*$", text, re.MULTILINE)
        assert not twice, twice
        assert "Results at a glance" in text


# --- Results at a glance ---------------------------------------------------------------------------------


def summary(name: str, acc, seconds: float = 100.0, quick: bool = False, **extra) -> dict:
    config = {"arch": "option2", "lr": 0.01, "weight_decay": 0.0, "schedule": "constant", "epochs": 100,
              "quick": quick}
    return {"name": name, "config": config, "config_hash": config_hash(config), "trainable_params": 4_977_226,
            "epochs_completed": 100, "train_images": 45_000, "device": "NVIDIA H100 80GB HBM3",
            "train_seconds": seconds, "test_acc": acc, "tta": name.startswith("final"), **extra}


def fill_store(root):
    store = ResultsStore(root)
    history = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5}]
    for i, name in enumerate(SIX):
        if name == "model 4":
            store.save(name, summary(name, None, diverged=True, diverged_epoch=7), history)
        else:
            store.save(name, summary(name, 0.9 + i / 100), history)
    for k, acc in enumerate([0.960, 0.962, 0.958]):
        store.save(f"final seed {k}", summary(f"final seed {k}", acc, seconds=60.0), history)
    ResultsStore(root / "quick").save("model 1", summary("model 1", 0.1, quick=True), history)
    return store


def glance(root, smoke_test: bool = False):
    """Results at a glance with the notebook's names."""
    return report.results_at_a_glance(root, SIX, "final seed", "Final model (FastResNet, Going further)",
                                      smoke_test=smoke_test)


def test_glance_says_pending_for_an_empty_store(tmp_path):
    for quick in (False, True):
        shown = glance(tmp_path / "results", smoke_test=quick)
        for text in (shown.text, shown._repr_html_(), shown._repr_latex_()):
            assert "Full-scale results: pending" in text
            assert ("quick-mode smoke test" in text) == quick
        assert not re.search(r"\d+\.\d\d", shown.text), "no number when nothing has run"


def test_glance_shows_the_six_models_the_final_model_the_card_and_the_time(tmp_path):
    fill_store(tmp_path)
    shown = glance(tmp_path)
    text = shown.text
    assert "pending" not in text
    for i, name in enumerate(SIX):
        expected = "diverged at epoch 7" if name == "model 4" else f"{100 * (0.9 + i / 100):.2f}"
        assert re.search(rf"{name}\s.*{re.escape(expected)}", text), (name, text)
    assert "96.00 ± 0.20%" in text and "3 seeds" in text
    assert "Card: NVIDIA H100 80GB HBM3" in text
    assert "Total training time: 13 min 00 s over 9 runs" in text  # 6 x 100 s + 3 x 60 s; not quick
    latex = shown._repr_latex_()
    assert r"\begin{tabular}" in latex and r"96.00 $\pm$ 0.20\%" in latex
    assert "<table" in shown._repr_html_()


def test_glance_marks_missing_models_pending(tmp_path):
    store = fill_store(tmp_path)
    store.path("model 6", ".json").unlink()
    text = glance(tmp_path).text
    assert re.search(r"model 6\s.*pending", text)


def test_latex_table_escapes_and_formats():
    import pandas as pd

    table = pd.DataFrame({"test acc (%)": [93.1, 94.25], "weight_decay": [0.0, 5e-4], "lr": [0.01, "as #5"]},
                         index=pd.Index(["model_1", "model 2"], name="Table & more"))
    latex = report.latex_table(table)
    assert r"\begin{tabular}{lrrl}" in latex
    assert r"Table \& more & test acc (\%) & weight\_decay & lr \\" in latex
    assert r"model\_1 & 93.10 & 0.0000 & 0.01 \\" in latex
    assert r"model 2 & 94.25 & 0.0005 & as \#5 \\" in latex


def test_each_stream_is_one_output_per_cell():
    """Consecutive prints saved as separate stream outputs become separate blocks in the PDF, with a blank
    gap between every two epoch lines: a render is committed after `jupyter nbconvert --coalesce-streams`
    (README), which merges them losslessly."""
    split = [i for i, cell in enumerate(code_cells(notebook()))
             for a, b in zip(cell.get("outputs", []), cell.get("outputs", [])[1:])
             if a["output_type"] == b["output_type"] == "stream" and a["name"] == b["name"]]
    assert not split, f"code cells {sorted(set(split))} have split stream outputs"


def test_latex_table_wraps_a_long_label_instead_of_shrinking():
    import pandas as pd

    long = "no weight averaging + cutout 12 px + no label smoothing + widths 80-160-320-384"
    table = pd.DataFrame({"val acc (%)": ["91.44", "95.00"], "note": ["short", "also short"]},
                         index=pd.Index(["starting recipe", long], name="configuration"))
    latex = report.latex_table(table)
    wrapped = rf">{{\raggedright\arraybackslash}}p{{{report.LATEX_WRAP // 2}em}}"
    assert rf"\begin{{tabular}}{{{wrapped}rl}}" in latex  # only the long column wraps
    assert report.latex_table(table.iloc[:1]).count("raggedright") == 0  # short labels stay one line


def test_glance_is_refreshed_in_a_papermill_run(tmp_path):
    """update_display from a later cell rewrites the glance output stored in the executed notebook."""
    import nbformat

    root = tmp_path / "results"
    cells = [
        "import sys\nsys.path.insert(0, %r)\nimport report\n"
        "from IPython.display import display, update_display" % str(NOTEBOOK.parent),
        f"glance = display(report.results_at_a_glance({str(root)!r}, {SIX!r}, 'final seed', 'Final model'), "
        "display_id='glance')",
        f"sys.path.insert(0, {str(NOTEBOOK.parent / 'tests')!r})\n"
        f"import test_report\nfrom pathlib import Path\ntest_report.fill_store(Path({str(root)!r}))",
        f"update_display(report.results_at_a_glance({str(root)!r}, {SIX!r}, 'final seed', 'Final model'), "
        "display_id='glance')",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    subprocess.run([sys.executable, "-m", "papermill", str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"),
                    "--cwd", str(tmp_path)], check=True, timeout=300, capture_output=True)
    shown = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[1].outputs
    assert len(shown) == 1
    assert "Full-scale results (from" in shown[0]["data"]["text/plain"]
    assert "96.00" in shown[0]["data"]["text/html"] and r"\begin{tabular}" in shown[0]["data"]["text/latex"]
