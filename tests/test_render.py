"""tools/render.py: the committed report is refreshed only by a full-scale render that trained nothing, cleaned
of papermill's injected cell and with each cell's prints merged; anything else is refused and writes nothing."""
import json

import pytest

from tools import render


def executed(*streams: str, injected: bool = True) -> dict:
    """A small executed notebook: an injected-parameters cell, then one code cell per stream text (split in two
    outputs, as papermill leaves consecutive prints)."""
    def cell(text, tags=()):
        halves = [text[: len(text) // 2], text[len(text) // 2:]]
        return {"id": f"cell-{abs(hash(text))}", "cell_type": "code", "execution_count": 1,
                "metadata": {"tags": list(tags)}, "source": "print()",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": half} for half in halves]}
    cells = ([cell("QUICK = False\n", ["injected-parameters"])] if injected else []) + [cell(t) for t in streams]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def test_a_full_scale_render_that_trained_nothing_replaces_the_report(tmp_path):
    report = tmp_path / "mini_project.ipynb"
    report.write_text("old")
    render.refresh(executed("model 1: read from results/ (trained on NVIDIA H200)\n| epoch   1  lr 0.0010\n"),
                   report)
    written = json.loads(report.read_text())
    assert len(written["cells"]) == 1  # the injected-parameters cell is gone
    (out,) = written["cells"][0]["outputs"]  # the two prints merged into one block
    assert "".join(out["text"]).startswith("model 1: read from results/")


@pytest.mark.parametrize("text, why", [
    ("=" * 80 + "\nQUICK MODE: smoke test on 256 images\n", "quick-mode"),
    ("model 1: 2 epochs x 45,000 images\nepoch   1  lr 0.0010  loss 2.3\n", "trained"),
])
def test_a_quick_or_training_render_is_refused_and_writes_nothing(tmp_path, text, why):
    report = tmp_path / "mini_project.ipynb"
    report.write_text("the committed full-scale report")
    with pytest.raises(SystemExit, match=why):
        render.refresh(executed(text), report)
    assert report.read_text() == "the committed full-scale report"
    assert list(tmp_path.iterdir()) == [report]  # no temporary file left either


def test_a_training_render_is_taken_when_allowed(tmp_path):
    report = tmp_path / "mini_project.ipynb"
    render.refresh(executed("epoch   1  lr 0.0010  loss 2.3\n"), report, allow_training=True)
    assert "epoch   1" in report.read_text()
