"""The notebook reads like a finished report, on GitHub and as a PDF: the sections a grader expects in order,
code and prints that fit the page, real tables, headings numbered once, at most 20 pages, engineering left to
README, and analysis numbers that are the stored runs' own."""
import base64
import json
import math
import re
import shutil
import struct
import subprocess
import sys

import pytest

from cifar10_resnet import figures
import helpers as H
from cifar10_resnet import report
from cifar10_resnet.store import ResultsStore
from conftest import NOTEBOOK, ROOT, require

# The PDF export sets code in a box that holds 80 characters of its monospaced font (measured with
# nbconvert 7 at 11 pt on a letter page); longer lines wrap with continuation marks.
MAX_LINE = 80
SIX = [f"model {i}" for i in range(1, 7)]
SECTIONS = ["## Setup", "## Data", "## Models", "## Experiments", "## Results", "## Analysis", "## Going further",
            "## Conclusion"]  # in this order, after the title and introduction
ENGINEERING = [r"CUDA graph", r"atomic", r"\.corrupt", r"served", r"config hash", r"scaler", r"checkpoint",
               r"\bstore\b", r"\bcard\b"]  # README's "How it works" explains these, not the report


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
    assert len(frames) >= 7, "Tables 1, 2 and 3, results, the histories, the recipes, the training machines"
    missing = [o for o in frames if r"\begin{tabular}" not in "".join(o["data"].get("text/latex", ""))]
    assert not missing, f"{len(missing)} DataFrame outputs have no LaTeX table (report.report_tables())"


def markdown(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def printed_lines(cell: dict) -> list[str]:
    return [line for o in cell.get("outputs", []) if o["output_type"] == "stream"
            for line in "".join(o["text"]).splitlines()]


def test_the_report_has_the_sections_a_grader_expects_in_order():
    headings = [line for text in markdown(notebook()) for line in text.splitlines() if line.startswith("## ")]
    positions = [next(i for i, h in enumerate(headings) if h.startswith(section)) for section in SECTIONS]
    assert positions == sorted(positions), headings
    intro = markdown(notebook())[0]
    for needed in ("90%", "Model 6", "final model", "validation", "Option 1", "Option 2"):
        assert needed in intro, needed
    analysis = [h for h in (line for text in markdown(notebook()) for line in text.splitlines())
                if h.startswith("### ")]
    for question in ("learning rate", "architecture", "L2", "schedule", "Overfitting", "errors"):
        assert any(question in h for h in analysis), question


def test_no_cell_prints_more_than_25_lines_or_a_line_wider_than_the_page():
    cells = code_cells(notebook())
    long = [(i, len(printed_lines(c))) for i, c in enumerate(cells) if len(printed_lines(c)) > 25]
    assert not long, f"cells printing over 25 lines (index, lines): {long}"
    wide = [line for c in cells for line in printed_lines(c) if len(line) > MAX_LINE]
    assert not wide, wide


def test_no_output_holds_a_raw_summary_or_an_injected_parameters_cell():
    nb = notebook()
    shown = ["".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", "")) for o in outputs(nb)]
    raw = [text[:80] for text in shown if "config_hash" in text or "'diverged_epoch'" in text]
    assert not raw, raw
    assert not [c for c in code_cells(nb) if "injected-parameters" in c["metadata"].get("tags", [])]


def test_engineering_stays_in_readme():
    prose = "\n".join(markdown(notebook()))
    found = [word for word in ENGINEERING if re.search(word, prose, re.IGNORECASE)]
    assert not found, f"README's 'How it works' explains these, not the report: {found}"
    assert "Round 3" not in prose and "AirResNet" not in "".join("".join(c["source"]) for c in code_cells(notebook()))


def test_the_pdf_shows_the_code_that_defines_and_trains_the_models():
    """Cells whose source the PDF leaves out (nbconvert honours "transient": {"remove_source": true}) only set up,
    plot or tabulate: every model definition, the parameters, the counts and every training call stay visible."""
    for cell in code_cells(notebook()):
        source = "".join(cell["source"])
        hidden = cell["metadata"].get("transient", {}).get("remove_source", False)
        shown = {"model", "parameters"} & set(cell["metadata"].get("tags", [])) or re.search(
            r"^(train|train_final|seeds = |tuning = |params = )|run_experiment", source, re.M)
        assert not (hidden and shown), source[:80]
    (table1,) = [c for c in code_cells(notebook()) if "table1 = H.network_table" in "".join(c["source"])]
    assert "torchsummary_total" in "".join(table1["source"]) and "transient" not in table1["metadata"]


def test_going_further_is_at_most_700_words():
    texts = markdown(notebook())
    start = next(i for i, t in enumerate(texts) if t.startswith("## Going further"))
    end = next(i for i, t in enumerate(texts) if t.startswith("## Conclusion"))
    words = sum(len(t.split()) for t in texts[start:end])
    assert words <= 700, words


def test_the_render_and_the_training_machines_are_told_apart():
    plain = ["".join(o["data"]["text/plain"]) for o in outputs(notebook()) if "text/plain" in o.get("data", {})]
    render = [line for c in code_cells(notebook()) for line in printed_lines(c) if line.startswith("This render:")]
    assert len(render) == 1 and "training step" not in render[0]  # no step kind beside the render's device
    summaries = ResultsStore(ROOT / "results").summaries()
    trained = [t for t in plain if "training step" in t and "runs" in t]
    assert len(trained) == 1
    assert re.search(rf"NVIDIA H200\s+bfloat16\s+cuda-graph\s+\S+\s+{len(summaries)}\b", trained[0]), trained[0]


def committed_text() -> str:
    """Everything the committed render printed, its wrapped lines joined."""
    return " ".join(" ".join(printed_lines(c)) for c in code_cells(notebook())).replace("  ", " ")


def test_the_analysis_numbers_are_the_stored_runs_own():
    store = ResultsStore(ROOT / "results")
    text = " ".join(committed_text().split())
    six = store.history("model 6").iloc[-1]  # the final-epoch gap of Model 6, from its history
    gap = report.training_dynamics(store, ["model 6"]).loc["model 6", "gap (points)"]
    assert gap == pytest.approx(100 * (six["train_acc"] - six["val_acc"]), abs=0.005)
    assert f"model 6: {100 * six['train_acc']:.2f}% against {100 * six['val_acc']:.2f}%" in text
    five = store.history("model 5")
    best = five.loc[five["val_acc"].idxmax()]
    assert (f"model 5: best {100 * best['val_acc']:.2f}% at epoch {int(best['epoch'])}, final "
            f"{100 * five['val_acc'].iloc[-1]:.2f}%") in text
    # verdicts by two standard errors of the difference: 0.42 points between Options at lr 0.01 is noise
    s = store.summaries()
    va, vb = s["model 4"]["final_val_acc"], s["model 2"]["final_val_acc"]
    assert 100 * H.difference_error(va, vb, 5000) == pytest.approx(0.55, abs=0.02)
    assert f"model 4 {100 * va:.2f} vs model 2 {100 * vb:.2f}: +0.42 points = 0.5 SE, within noise" in text
    # the choice of round 2 is one image in 5,000: said to be within noise; the target is said to be missed
    assert re.search(r"Chosen on validation: 80 epochs \+ no weight averaging \(95\.90%\) against the runner-up, "
                     r"80 epochs \(95\.88%\): \+0\.02 points = 0\.1 SE, within noise", text)
    accs = [100 * s[f"final seed {k}"]["test_acc"] for k in range(3)]
    mean = sum(accs) / 3
    assert f"{mean:.2f}% mean test accuracy against the 96.00% target: missed by {96 - mean:.2f} points" in text


def stored():
    """The full-scale store, its summaries, and the six experiments' histories summarised."""
    store = ResultsStore(ROOT / "results")
    return store, store.summaries(), report.training_dynamics(store, SIX)


def test_single_run_verdicts_count_validation_sampling_and_each_runs_jitter():
    """Each verdict on Models 1-6 counts the sampling of 5,000 validation images and each run's epoch-to-epoch
    jitter (the std of its last 20 epochs): counting the jitter, Option 1's learning-rate gain is within noise,
    although validation sampling alone would call it higher; the L2 verdict is the narrowest above the line."""
    store, s, dynamics = stored()
    jitter = report.jitters(dynamics)
    assert jitter["model 5"] == pytest.approx(0.0053, abs=0.0001)  # 0.53 points, as the issue measured
    a, b = s["model 2"]["final_val_acc"], s["model 1"]["final_val_acc"]
    assert H.verdict(a, b, 5000) == "higher" and H.verdict(a, b, 5000, (jitter["model 2"], jitter["model 1"])) \
        == "within noise"
    lines = {pair: report.compare_line(*pair, s, 5000, jitter) for pair in
             [("model 2", "model 1"), ("model 4", "model 3"), ("model 3", "model 1"), ("model 4", "model 2"),
              ("model 5", "model 4"), ("model 6", "model 5")]}
    verdicts = {pair: line.rsplit(", ", 1)[1] for pair, line in lines.items()}
    # what the Conclusion's prose says: Option 1's rate within noise, Option 2's higher; the cuts not told apart;
    # L2 lower; the schedule higher, by the widest margin
    assert verdicts == {("model 2", "model 1"): "within noise", ("model 4", "model 3"): "higher",
                        ("model 3", "model 1"): "within noise", ("model 4", "model 2"): "within noise",
                        ("model 5", "model 4"): "lower", ("model 6", "model 5"): "higher"}
    errors = {pair: float(re.search(r"= ([\d.]+) SE", line).group(1)) for pair, line in lines.items()}
    assert max(errors, key=errors.get) == ("model 6", "model 5")
    assert errors[("model 5", "model 4")] == min(e for pair, e in errors.items() if verdicts[pair] != "within noise")
    assert 2.0 <= errors[("model 5", "model 4")] < 2.1  # "just over the line", printed with two decimals
    text = " ".join(committed_text().split())
    for line in lines.values():
        assert line in text, line


def test_the_analysis_sentences_agree_with_the_histories():
    """Directions the prose states, read from the stored histories: L2 does not narrow the train-validation gap
    and the schedule does; the low-rate models' late validation accuracy rises no faster than the high-rate
    models' (within noise), though their training loss is higher; Model 6 settles (its jitter a fraction of
    Model 5's) and its final epoch is within a fraction of a point of its best."""
    store, s, dynamics = stored()
    gap = dynamics["gap (points)"]
    assert gap["model 5"] >= gap["model 4"] and gap["model 6"] < gap["model 5"] and gap.idxmin() == "model 6"
    for low, high in (("model 1", "model 2"), ("model 3", "model 4")):
        assert report.slope_text(store, low, high).endswith(("within noise", "slower"))
        assert dynamics.loc[low, "train loss"] > dynamics.loc[high, "train loss"]
    assert dynamics.loc["model 6", report.JITTER] < dynamics.loc["model 5", report.JITTER] / 3
    assert dynamics.loc["model 6", "best val acc (%)"] - dynamics.loc["model 6", "val acc (%)"] < 0.5
    assert dynamics.loc["model 5", "final val loss"] < dynamics.loc["model 4", "final val loss"]  # L2: lower loss
    text = " ".join(committed_text().split())
    for low, high in (("model 1", "model 2"), ("model 3", "model 4")):
        assert f"late trend of validation accuracy, {report.slope_text(store, low, high)}" in text
    assert (f"L2 (model 5 minus model 4): {gap['model 5'] - gap['model 4']:+.2f} points of gap; the schedule (model 6 "
            f"minus model 5): {gap['model 6'] - gap['model 5']:+.2f} points") in text
    prose = " ".join(" ".join(markdown(notebook())).split())
    assert "does not narrow the gap (Model 5's is no smaller than Model 4's) and the schedule does" in prose
    assert "A hypothesis, not measured here" in prose and "still rising" not in prose
    assert "so that the comparison is measured" not in prose


def test_the_final_model_states_both_errors_and_the_first_sweeps_test():
    """The final model's seeds: the seed spread and the test-set SE apart, and the distance to the target in SE of
    the mean (both counted); the first sweep's tested recipe is disclosed with its numbers from results/; the
    round-2 choice shows its order without test-time augmentation, which reverses."""
    store, s, _ = stored()
    seeds = [s[f"final seed {k}"] for k in range(3)]
    spread = report.final_spread(seeds, 10_000)
    assert spread.test_se == pytest.approx(0.21, abs=0.01) and spread.seed_std == pytest.approx(0.04, abs=0.005)
    assert spread.error == pytest.approx(math.hypot(spread.seed_std / math.sqrt(3), spread.test_se))
    text = " ".join(committed_text().split())
    assert f"test accuracy {report.spread_text(spread)}" in text
    gap = (96 - spread.mean) / spread.error
    assert 2 < gap and f"missed by {96 - spread.mean:.2f} points = {gap:.1f} SE" in text
    first = ResultsStore(ROOT / "results" / "first-sweep").summaries()
    tested, accs, _ = report.final_seeds(first, "final seed ")
    assert len(tested) == 3 and 94.8 < sum(accs) / 3 < 95.0
    assert f"First sweep's recipe, tested ({len(first)} runs in results/first-sweep/): test accuracy " \
           f"{report.spread_text(report.final_spread(tested, 10_000))}" in text
    runs = report.sweep_runs(s, "final validation", "final sweep - ", "starting recipe")
    plain = report.plain_order_text(runs, "80 epochs + no weight averaging", 5000)
    assert plain.endswith("the order reverses") and plain in text
    prose = " ".join(" ".join(markdown(notebook())).split())
    assert "Where the test set was used." in prose and "winner's curse" in prose


def test_logs_tables_and_numbers_read_cleanly():
    """A replayed log is at most 8 lines (its source, five epochs, its result); no "+-" for ±; the dynamics table
    has one number format per row; the recipe table shows the recipe the seeds trained."""
    cells = code_cells(notebook())
    logs = [printed_lines(c) for c in cells if re.search(r'^train\("model \d"', "".join(c["source"]), re.M)]
    assert len(logs) == 6 and all(len(lines) <= 8 for lines in logs), [len(lines) for lines in logs]
    text = committed_text()
    assert "+-" not in text and "±" in text
    frames = ["".join(o["data"]["text/plain"]) for o in outputs(notebook()) if "text/plain" in o.get("data", {})]
    (dynamics,) = [f for f in frames if f.lstrip().startswith("model") and "from the history" in f]
    checked = 0
    for row in dynamics.splitlines():  # pandas wraps the table in blocks, each under its header
        numbers = re.findall(r"-?\d+(?:\.\d+)?", row[42:])
        if row.startswith(("model", "from the history")) or not numbers:
            continue
        assert len({len(v.split(".")[1]) if "." in v else 0 for v in numbers}) == 1, row
        checked += 1
    assert checked >= 10
    (recipes,) = [f for f in frames if "trained: " in f and "ingredient" in f]
    trained = ResultsStore(ROOT / "results").summaries()["final seed 0"]["config"]
    assert "starting recipe (not trained as final)" in recipes and "trained: " in recipes
    latex = ["".join(o["data"]["text/latex"]) for o in outputs(notebook()) if "trained: " in
             "".join(o.get("data", {}).get("text/latex", ""))]
    assert latex and f"& {trained['epochs']} \\\\" in latex[0].split("epochs &", 1)[1]
    assert "weight averaging & EMA" in latex[0] and "& none" in latex[0].split("weight averaging", 1)[1]


def test_references_list_every_work_cited():
    """Every (Author, year) cited in the prose has a full entry under References, the course peer among them;
    the team's names are set in AUTHORS and carried under the title."""
    texts = markdown(notebook())
    (references,) = [t for t in texts if t.startswith("## References")]
    prose = " ".join(t for t in texts if not t.startswith("## References"))
    cited = set(re.findall(r"([A-Z][A-Za-z]+(?: [a-z]+ [A-Z][a-z]+)?)(?: et al\.| and [A-Z][a-z]+)?,? (\d{4})\b",
                           prose))
    cited = {(name.split()[-1], year) for name, year in cited if not name.startswith(("Table", "Model", "Option"))}
    assert len(cited) >= 15, cited
    entries = references.splitlines()[2:]
    for name, year in cited:
        assert any(name in entry and f"({year})" in entry for entry in entries), (name, year)
    assert any("2306.12100" in entry for entry in entries)
    assert [entry.lower() for entry in entries] == sorted(entry.lower() for entry in entries)
    assert notebook()["metadata"]["authors"] == [{"name": name} for name in report.authors()]


def test_the_appendix_prints_the_training_code_as_it_is_now():
    """The appendix is the modules' own source: the committed render's listing is what the modules hold today."""
    from cifar10_resnet import data
    from cifar10_resnet import evaluation
    from cifar10_resnet import step, training

    listing = report.Listing(training.fit, step.EagerStep.__call__, training.make_scheduler, data.crop_flip,
                             evaluation.tta_views)
    shown = ["".join(o["data"]["text/markdown"]) for o in outputs(notebook()) if "text/markdown" in o.get("data", {})]
    assert shown == [listing._repr_markdown_()]
    assert "def fit(" in shown[0] and "def __call__(self, images" in shown[0] and "EagerStep.__call__" in shown[0]


def test_figures_are_legible_at_the_pdfs_size(tmp_path):
    """Every figure the report draws has no text under figures.FONT (8) points and fits the PDF's 0.9 x 6.5 in
    without shrinking, so no figure text is under 7 pt on the page; the committed render's images fit too."""
    import matplotlib
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.text import Text

    store, s, dynamics = stored()
    seeds = [s[f"final seed {k}"] for k in range(3)]
    runs = report.sweep_runs(s, "final validation", "final sweep - ", "starting recipe")
    counts = torch.randint(0, 100, (10, 10))
    drawn = [
        figures.plot_pair(store, ("model 5", "model 6"), ("model 5: a long label", "model 6"), tmp_path / "a.png"),
        figures.plot_train_val(store, SIX, SIX, tmp_path / "b.png"),
        figures.plot_pairs(store, [("model 1", "model 2"), ("model 3", "model 4")],
                          {n: f"{n}: option2, lr 0.001" for n in SIX}, tmp_path / "g.png"),
        figures.plot_confusion(counts, tmp_path / "c.png", "title"),
        figures.plot_images([[torch.zeros(3, 32, 32, dtype=torch.uint8)] * 5] * 2, [list("abcde")] * 2, 2.0),
        figures.plot_summary(report.accuracy_summary(s, SIX, report.jitters(dynamics), 5000, 10_000, seeds),
                            tmp_path / "d.png", {"bar": 90.0, "target": 96.0}),
        figures.plot_final(store, [f"final seed {k}" for k in range(3)], "final sweep - 80 epochs + no weight "
                          "averaging", tmp_path / "e.png"),
        figures.plot_sweep(runs, 5000, "80 epochs", tmp_path / "f.png"),
    ]
    for fig in drawn:
        fig.canvas.draw()
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert texts and min(t.get_fontsize() for t in texts) >= figures.FONT
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        assert box.width <= 5.85 + 0.05, box.width  # inches: shown at its own size in the PDF
        plt.close(fig)
    matplotlib.pyplot.close("all")
    images = [o for o in outputs(notebook()) if "image/png" in o.get("data", {})]
    assert len(images) >= 10
    # nbconvert shrinks an image wider than 0.9 of the 6.5 in line (585 px at the inline backend's 100 dpi) to it
    shrunk = [(png_width(o), figures.FONT * min(1.0, 585 / png_width(o))) for o in images]
    assert min(size for _, size in shrunk) >= 7.0, shrunk


def test_model_6_errors_name_the_most_confused_pairs():
    """The five most confused pairs in one line (true class as predicted class, images, share of the true class),
    and the confusion matrix figure labels each true class with its accuracy."""
    text = " ".join(committed_text().split())
    pair = r"\w+ as \w+ \d+ \(\d+\.\d%\)"
    assert re.search(rf"Most confused \(true as predicted, images, share of the true class\): {pair}(; {pair}){{4}}\.",
                     text)
    assert re.search(r"Hardest class: \w+, \d+\.\d%", text)


def png_width(output: dict) -> int:
    """The width in pixels of a PNG output (its IHDR chunk)."""
    return struct.unpack(">I", base64.b64decode(output["data"]["image/png"])[16:20])[0]


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


def test_pdf_has_at_most_20_pages(exported):
    require(shutil.which("pdfinfo") is not None, "pdfinfo (poppler-utils) counts the PDF's pages")
    info = subprocess.run(["pdfinfo", str(exported / "mini_project.pdf")], capture_output=True, text=True,
                          check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    assert 0 < pages <= 20, pages


def test_no_text_in_the_pdf_is_under_7_points(exported):
    """Tables (shrunk to the line when too wide), code and the appendix's listing stay legible: every word the PDF
    sets is at least 7 pt tall (pdftotext's box height is the font size), the wrap marks of long lines aside."""
    require(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) reads the PDF's words")
    subprocess.run(["pdftotext", "-bbox", str(exported / "mini_project.pdf"), str(exported / "words.html")],
                   check=True)
    words = re.findall(r'<word xMin="[\d.]+" yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">([^<]*)</word>',
                       (exported / "words.html").read_text())
    sizes = [(float(bottom) - float(top), word) for top, bottom, word in words if word != "\u21aa"]
    assert len(sizes) > 5000
    small = sorted(sizes)[:5]
    assert small[0][0] >= 7.0, small


def test_tables_are_real_tables_in_the_pdf(exported):
    tex = (exported / "mini_project.tex").read_text()
    nb = notebook()
    expected = sum(text.count(r"\begin{tabular}") for text in latex_outputs(nb))
    assert expected >= len(dataframe_outputs(nb)) >= 7
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
        # on one line: a list item after a page number on the line above is not a heading
        twice = re.findall(r"^[ \t]*\d+(?:\.\d+)*[ \t]+\d+\.[ \t]+[A-Z].*$", text, re.MULTILINE)
        assert not twice, twice
        assert "Conclusion" in text and "Going further" in text


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
