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
    assert "Full scale: pending" in text and "Quick mode (CPU smoke test): pending" in text


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
