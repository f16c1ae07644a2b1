"""README.md stays true: its generated blocks match the files on disk, and CI runs its test command."""
import json
import re
import shutil

from tools import update_readme
from conftest import ROOT


def test_generated_blocks_match_results(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    copy = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", copy)
    update_readme.update_readme(copy)
    assert copy.read_text() == (ROOT / "README.md").read_text(), "run: python3 tools/update_readme.py"


def test_ci_runs_the_readme_test_command():
    command = "python3 -m pytest -q tests"
    assert f"```bash\n{command}\n```" in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_marks_missing_full_scale_results_as_pending(tmp_path):
    text = update_readme.readme_results(tmp_path)
    assert "Full scale: pending" in text and "Quick mode" not in text


def test_colab_badge_comes_from_the_repository_named_in_the_notebook(tmp_path):
    notebook = json.loads((ROOT / "mini_project.ipynb").read_text())
    (parameters,) = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(parameters["source"])
    copy = tmp_path / "mini_project.ipynb"
    for repository, expected in (
            ("https://github.com/someone/resnet-cifar10.git",
             "[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             "(https://colab.research.google.com/github/someone/resnet-cifar10/blob/main/mini_project.ipynb)"),
            ("", "no badge yet")):
        parameters["source"] = [re.sub(r"^REPOSITORY = .*$", f"REPOSITORY = {repository!r}", source, flags=re.M)]
        copy.write_text(json.dumps(notebook))
        assert expected in update_readme.colab_badge(copy)


def test_readme_opens_with_the_results_and_stays_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    head = "\n".join(lines[:40])
    figure = f"(documentation/{update_readme.HEADLINE_FIGURE.replace(' ', '%20')})"
    for needed in ("| Model 6 (", "| Final model (", "96%: ", "90%: ", figure, "pip install -r requirements.txt",
                   "python3 -m pytest -q tests"):
        assert needed in head, needed
    assert (ROOT / "documentation" / update_readme.HEADLINE_FIGURE).exists()


def test_the_run_command_never_writes_over_the_committed_report():
    text = (ROOT / "README.md").read_text()
    runs = [line.split("papermill ", 1)[1].split() for line in text.splitlines() if "papermill mini_project" in line]
    assert runs and all(run[1] != "mini_project.ipynb" for run in runs), runs  # (input, output, ...)
    assert "python3 tools/render.py" in text


def test_the_linked_pages_regenerate_from_the_files(monkeypatch):
    monkeypatch.chdir(ROOT)
    for page, text in update_readme.pages().items():
        assert (ROOT / page).read_text() == text, f"run: python3 tools/update_readme.py ({page})"
    results = (ROOT / "documentation" / "results.md").read_text()
    assert "first sweep" in results.lower() and "quick" not in results.lower()  # smoke tests are not results
    assert "#### Training speed on CPU" in (ROOT / "documentation" / "speed.md").read_text()


def test_the_headline_states_both_errors_of_the_final_model():
    """README's headline gives the final model's seed spread and its test-set SE apart, and the distance to the
    target in standard errors of the mean, from the stored seeds (report.final_spread, as the notebook)."""
    from cifar10_resnet import report
    from cifar10_resnet.store import ResultsStore

    summaries = ResultsStore(ROOT / "results").summaries()
    seeds = [s for name, s in summaries.items() if name.startswith("final seed ")]
    spread = report.final_spread(seeds, 10_000)
    head = (ROOT / "README.md").read_text().split("<!-- headline:end -->")[0]
    assert report.spread_text(spread) in head and "seed std ± 0.04, test-set SE ± 0.21" in head
    assert f"missed by {96 - spread.mean:.2f} points = {(96 - spread.mean) / spread.error:.1f} SE" in head
