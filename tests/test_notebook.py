"""The notebook: runs top to bottom in quick mode, writes its figures and tables, and exports cleanly."""
import json
import pickle
import re
import shutil
import subprocess
import sys

import pytest

import helpers as H
from cifar10_resnet import report
from conftest import NOTEBOOK, ROOT, require

FIGURES = [f"model {a} and {b} val acc and loss.jpg" for a, b in [(1, 2), (1, 3), (2, 4), (3, 4), (3, 5), (5, 6)]]
NEW_FIGURES = ["model 4 and 5 val acc and loss.jpg", "models 1-6 train and val acc.jpg",  # beside the original six
               "models 1-6 and final model accuracy.png", "final model sweep.png", "final model training.png",
               "learning rate val acc.png", "architecture val acc.png"]


def run_quick(source, target, out, data_dir, timeout, *parameters):
    """Execute a notebook with papermill in quick mode, results and figures under `out`."""
    subprocess.run([sys.executable, "-m", "papermill", str(source), str(target), "--cwd", str(ROOT),
                    "-p", "DATA_DIR", str(data_dir), "-p", "RESULTS_DIR", str(out / "results"),
                    "-p", "DOC_DIR", str(out / "documentation"), "-p", "QUICK", "True",
                    "-p", "REFERENCE", "True", *parameters],  # the reference on
                   check=True, timeout=timeout)


def printed(path) -> list[str]:
    """Every line the executed notebook's cells printed (stdout and stderr)."""
    notebook = json.loads(path.read_text())
    return [line for c in notebook["cells"] for o in c.get("outputs", []) if o.get("output_type") == "stream"
            for line in "".join(o["text"]).splitlines()]


HIDDEN = 40  # test images in the hidden set that the quick run classifies (PREDICT)


@pytest.fixture(scope="module")
def executed(tmp_path_factory, data_dir, raw):
    """The notebook run top to bottom in quick mode, in a temporary folder, with a hidden test set to classify
    (the 2025 layout: channel-last images and ids)."""
    out = tmp_path_factory.mktemp("run")
    images = raw["test_x"][:HIDDEN].permute(0, 2, 3, 1).numpy()
    hidden = out / "cifar_test_nolabel.pkl"
    hidden.write_bytes(pickle.dumps({b"data": images, b"ids": list(range(HIDDEN, 0, -1))}))
    run_quick(NOTEBOOK, out / "run.ipynb", out, data_dir, 1500, "-p", "PREDICT", str(hidden))
    return out


def test_notebook_runs_top_to_bottom_in_quick_mode(executed):
    notebook = json.loads((executed / "run.ipynb").read_text())
    errors = [o for c in notebook["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for c in notebook["cells"] for o in c.get("outputs", []))
    assert "QUICK MODE" in text and "7. ResNet-18 under Model 6's recipe" in text  # the conclusion's last answer
    said = " ".join(" ".join(printed(executed / "run.ipynb")).split())  # the banner, unwrapped
    assert "it overrides EPOCHS=100, FINAL_EPOCHS=40 with EPOCHS=2, FINAL_EPOCHS=1 and keeps its results in" in said
    # the machine that rendered (a line in Setup) and the ones that trained the stored runs (a table at the end)
    tables = ["".join(o["data"]["text/plain"]) for c in notebook["cells"] for o in c.get("outputs", [])
              if "text/plain" in o.get("data", {})]
    assert re.search(r"This render: device cpu; .*; precision float32 \(no CUDA device\)", said)  # as it ran
    runs = len(json.loads((executed / "results" / "quick" / "summary.json").read_text()))
    trained = [t for t in tables if t.lstrip().startswith("precision") and "training step" in t]
    assert len(trained) == 1 and "eager (no CUDA device)" in trained[0]
    assert re.search(rf"CPU \(x86_64, \d+ cores\)\s+float32\s+eager \(no CUDA device\)\s+\S+\s+{runs}\b",
                     trained[0].replace("\n", " ")), trained[0]
    # what Run all costs, before anything trains; a line as each training starts; its time left after epoch 1
    lines = printed(executed / "run.ipynb")
    assert any(line.startswith("The six experiments and the reference: 0 of 7 runs already in") for line in lines)
    # 1 + 3 + 3: the second round is decided by the first, and the line says so
    assert any(line.startswith("Going further: 0 of 7 runs already in") for line in lines)
    assert "the second round is decided by the first" in " ".join(lines)
    assert "model 1: 2 epochs x 256 images, float32, eager (no CUDA device)" in lines
    assert sum(re.fullmatch(r"about \d+ s left \(1 more epoch\)", line) is not None for line in lines) >= 6


def test_quick_run_writes_figures_tables_and_results(executed):
    docs = executed / "documentation" / "quick"
    for name in FIGURES + NEW_FIGURES + ["model_summary_tables.png", "model 6 confusion matrix.png"]:
        assert (docs / name).stat().st_size > 10_000, name
    results = executed / "results" / "quick"
    index = json.loads((results / "summary.json").read_text())
    expected = {f"model {i}" for i in range(1, 7)} | {"final validation", "final seed 0", "final seed 1",
                                                       "final seed 2", "reference ResNet-18"}
    sweep = {f"final sweep - {label}" for label in ("2 epochs", "residuals in all stages at widths 64-128-256-352",
                                                     "no weight averaging")}
    assert not report.trial_runs(index, "final round 3 - ")  # round 3 lives beside benchmarks/exploration.py
    combined = set(index) - expected - sweep  # round 2, when two changes or more helped
    assert expected | sweep <= set(index) and len(combined) <= 1
    assert all(name.startswith("final sweep - ") and " + " in name for name in combined)
    assert (results / "model 6.pt").exists() and (results / "final seed 0.pt").exists()
    # the recipe is chosen on validation only: no tuning run was tested; the seeds use the sweep's choice
    tuning = report.sweep_runs(index, "final validation", "final sweep - ", "starting recipe")
    assert len(tuning) == 1 + len(sweep | combined)
    assert all("test_acc" not in run and run["train_images"] == 256 for run in tuning.values())
    text = "\n".join(printed(executed / "run.ipynb"))  # the choice starts a line, and may wrap
    chosen = " ".join(re.search(r"^Chosen on validation: ([^(]+?) \(", text, re.M).group(1).split())
    best = max(tuning, key=lambda label: H.validation_score(tuning[label])[0])
    assert chosen == best
    for k in range(3):
        seed = index[f"final seed {k}"]
        assert {**seed["config"], "seed": 0, "tta": None} == {**tuning[chosen]["config"], "seed": 0, "tta": None}
        assert seed["tta"] == seed["config"]["tta"] == H.validation_score(tuning[chosen])[1]
    assert "against the 96.00% target: missed by" in text or "against the 96.00% target: met" in text
    assert all(s["config"]["quick"] for s in index.values())
    # model 5 used the learning rate of the better of models 3 and 4 on validation
    better = max(("model 3", "model 4"), key=lambda n: index[n]["final_val_acc"])
    assert index["model 5"]["config"]["lr"] == index[better]["config"]["lr"]
    # the reference: ResNet-18 under Model 6's recipe, tested, and compared in the conclusion
    reference = index["reference ResNet-18"]
    assert {**reference["config"], "arch": "option2"} == index["model 6"]["config"]
    assert reference["trainable_params"] == 11_173_962 and reference["test_acc"] is not None
    flat = " ".join(text.split())  # the answers wrap at 80 characters
    assert re.search(r"7\. ResNet-18 under Model 6's recipe: reference ResNet-18 [\d.]+ vs model 6 [\d.]+: ", flat)


def test_predict_writes_the_final_models_csv_as_the_command_does(executed, data_dir):
    """PREDICT: the last section classifies the hidden set with the reloaded final model, as tools/predict.py
    does with the same stored weights."""
    from tools import predict as cli

    written = (executed / "results" / "quick" / "predictions.csv").read_text()
    header, *rows = [line.split(",") for line in written.splitlines()]
    assert header == ["ID", "Labels"] and [int(i) for i, _ in rows] == list(range(HIDDEN, 0, -1))
    assert {int(label) for _, label in rows} <= set(range(10))
    command = executed / "command.csv"
    cli.main([str(executed / "cifar_test_nolabel.pkl"), "--out", str(command), "--data-dir", str(data_dir),
              "--results", str(executed / "results" / "quick"), "--model", "final seed 0"])
    assert command.read_text() == written
    assert any(line.startswith(f"{HIDDEN} images (N x 32 x 32 x 3, channel-last) from")
               for line in printed(executed / "run.ipynb"))


def test_rerun_with_complete_results_serves_them(executed, data_dir):
    """A second Run all finds every result complete, trains nothing, and prints the stored logs, marked."""
    run_quick(executed / "run.ipynb", executed / "again.ipynb", executed, data_dir, timeout=300)
    lines = printed(executed / "again.ipynb")
    runs = len(json.loads((executed / "results" / "quick" / "summary.json").read_text()))
    assert " ".join(lines).count(": read from ") == runs  # a long run name may wrap its header
    assert any(line.startswith("The six experiments and the reference: 7 of 7 runs already in") for line in lines)
    tuning = report.sweep_runs(json.loads((executed / "results" / "quick" / "summary.json").read_text()),
                               "final validation", "final sweep - ", "starting recipe")
    planned = len(tuning) + 3  # the second round too, once the stored first round decides it
    assert any(line.startswith(f"Going further: {planned} of {planned} runs already in") for line in lines)
    assert not [line for line in lines if " left (" in line]
    assert not [line for line in lines if line.startswith("epoch")]  # nothing trained
    first = printed(executed / "run.ipynb")
    assert [line[2:] for line in lines if line.startswith("| epoch")] == [
        line for line in first if line.startswith("epoch")]  # the same log, read back


def test_run_all_completes_through_faults(executed, data_dir, tmp_path):
    """Run all again over a store with faults injected: a summary and a history cut short, a checkpoint cut
    short, a temporary file left by an interrupted write, and a learning rate (1e6) that makes Models 2 and 4
    diverge. Nothing crashes; the damaged files are moved aside and their experiments retrained; the diverged
    runs are recorded, tabulated and plotted as such; Model 5 takes its learning rate from Model 3."""
    shutil.copytree(executed / "results", tmp_path / "results")
    results = tmp_path / "results" / "quick"
    for name in ("model 1.json", "model 3.csv"):
        (results / name).write_bytes((results / name).read_bytes()[:100])
    digest = json.loads((results / "final validation.json").read_text())["config_hash"]
    (results / "final validation.json").unlink()  # interrupted: to be resumed from its checkpoint...
    (results / "checkpoints").mkdir(exist_ok=True)  # ... which a disconnect cut short
    (results / "checkpoints" / f"final validation-{digest}.pt").write_bytes(b"PK\x03\x04 half a zip")
    (results / ".model 6.partial-999.json").write_text('{"name": "mod')
    run_quick(NOTEBOOK, tmp_path / "faults.ipynb", tmp_path, data_dir, 600,
              "-y", "LEARNING_RATES: [0.001, 1000000.0]")
    notebook = json.loads((tmp_path / "faults.ipynb").read_text())
    assert not [o for c in notebook["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    lines = printed(tmp_path / "faults.ipynb")
    for damaged in ("model 1.json", "model 3.csv", f"final validation-{digest}.pt"):
        assert any(damaged in line and "moved aside" in line for line in lines), damaged
    index = json.loads((results / "summary.json").read_text())
    assert {name for name, s in index.items() if s["diverged"]} == {"model 2", "model 4"}
    assert index["model 5"]["config"]["lr"] == 0.001 and not index["model 5"]["diverged"]
    assert all((results / name).exists() for name in ("model 1.json.corrupt", "model 3.csv.corrupt"))
    text = "\n".join(lines)
    assert "model 2: DIVERGED at epoch" in text and "no verdict" in text
    html = (tmp_path / "faults.ipynb").read_text()
    assert html.count("diverged at epoch") >= 4  # results table and glance-style cells show it
    figure = tmp_path / "documentation" / "quick" / "model 2 and 4 val acc and loss.jpg"
    assert figure.stat().st_size > 10_000


def test_committed_notebook_has_outputs_and_no_widget_state():
    notebook = json.loads(NOTEBOOK.read_text())
    assert "widgets" not in notebook["metadata"]
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "commit the notebook executed top to bottom"
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 9
    assert any("parameters" in c["metadata"].get("tags", []) for c in code)
    # papermill's injected cell would override the student's own parameters with the rendering machine's
    assert not [c for c in code if "injected-parameters" in c["metadata"].get("tags", [])]


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


def test_the_exploration_script_serves_round_three_on_a_second_call(data_dir, tmp_path):
    """benchmarks/exploration.py --round 3 (the default) trains round 3 into a store under the names a Run all
    would read, and a second call over the same store trains nothing and makes the same choice."""
    def explore():
        return subprocess.run([sys.executable, "benchmarks/exploration.py", "--quick", "--seeds", "2",
                               "--data-dir", str(data_dir), "--out", str(tmp_path / "quick")], cwd=ROOT,
                              capture_output=True, text=True, check=True, timeout=900).stdout

    first, second = explore(), explore()
    assert [line for line in first.splitlines() if line.startswith("epoch")]  # the first call trained
    assert not [line for line in second.splitlines() if line.startswith("epoch")]  # every run read back
    assert " ".join(second.splitlines()).count(": read from ") == 3 * 2  # three recipes, two seeds
    chosen = [re.search(r"round 3 chooses (.+?) \(", out).group(1) for out in (first, second)]
    assert chosen[0] == chosen[1]
