"""Colab from GitHub: the notebook's `colab` cell, run as Colab runs it (a fake `google.colab` module, a local git
repository as the remote), fetches the project when the notebook arrived alone, stops with one message naming
the line to edit when no repository is set, keeps results on Drive with DRIVE=True, and does nothing elsewhere."""
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import NOTEBOOK


def colab_cell() -> str:
    notebook = json.loads(NOTEBOOK.read_text())
    (cell,) = [c for c in notebook["cells"] if "colab" in c["metadata"].get("tags", [])]
    return "".join(cell["source"])


def run_cell(**parameters) -> dict:
    namespace = {"RESULTS_DIR": "results", "REPOSITORY": "", "DRIVE": False, **parameters}
    exec(compile(colab_cell(), "colab cell", "exec"), namespace)
    return namespace


@pytest.fixture
def remote(tmp_path):
    """A git repository holding helpers.py, standing for the project on GitHub."""
    repo = tmp_path / "remote" / "resnet-cifar10"
    repo.mkdir(parents=True)
    (repo / "helpers.py").write_text("# the project's helpers\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for command in (["init", "-q"], ["add", "helpers.py"], ["commit", "-q", "-m", "project"]):
        subprocess.run(git + command, check=True)
    return repo


@pytest.fixture
def colab(monkeypatch, tmp_path):
    """A fake Colab: `google.colab` imported, a `drive.mount` that records its mount point, and /content as cwd."""
    mounted = []
    google, module, drive = (types.ModuleType(n) for n in ("google", "google.colab", "google.colab.drive"))
    drive.mount = mounted.append
    module.drive, google.colab = drive, module
    for name, value in (("google", google), ("google.colab", module), ("google.colab.drive", drive)):
        monkeypatch.setitem(sys.modules, name, value)
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.chdir(content)
    return mounted


def test_in_colab_the_cell_clones_the_repository_and_works_inside_it(colab, remote, tmp_path):
    namespace = run_cell(REPOSITORY=str(remote))
    clone = tmp_path / "content" / "resnet-cifar10"
    assert (clone / "helpers.py").read_text() == "# the project's helpers\n"
    assert Path.cwd() == clone
    assert namespace["RESULTS_DIR"] == "results" and not colab  # Drive untouched without DRIVE=True
    run_cell(REPOSITORY=str(remote))  # Run all again: helpers.py is here now, nothing is cloned twice


def test_without_a_repository_it_stops_with_the_line_to_edit(colab):
    with pytest.raises(RuntimeError) as stop:
        run_cell()
    message = str(stop.value)
    assert "helpers.py is missing" in message and 'REPOSITORY = ""' in message and "parameters cell" in message


def test_drive_keeps_the_results(colab, remote):
    namespace = run_cell(REPOSITORY=str(remote), DRIVE=True)
    assert colab == ["/content/drive"]
    assert namespace["RESULTS_DIR"] == "/content/drive/MyDrive/resnet-cifar10/results"


def test_outside_colab_the_cell_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    namespace = run_cell(REPOSITORY="https://example.invalid/never-cloned.git", DRIVE=True)
    assert namespace["RESULTS_DIR"] == "results" and list(tmp_path.iterdir()) == []
