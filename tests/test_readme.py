"""README.md stays true: its generated blocks match the files on disk, and CI runs its test command."""
import shutil

import helpers as H
from conftest import ROOT


def test_generated_blocks_match_results(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    copy = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", copy)
    H.update_readme(copy)
    assert copy.read_text() == (ROOT / "README.md").read_text(), "run: python3 helpers.py readme"


def test_ci_runs_the_readme_test_command():
    command = "python3 -m pytest -q tests"
    assert f"```bash\n{command}\n```" in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_marks_missing_full_scale_results_as_pending(tmp_path):
    text = H.readme_results(tmp_path)
    assert "Full scale: pending" in text and "Quick mode (CPU smoke test): pending" in text
