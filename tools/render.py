"""Refresh the committed report, mini_project.ipynb, with a full-scale Run all (QUICK=False).

Usage:   python3 tools/render.py --data-dir DIR [--allow-training]

The run executes into runs/render.ipynb (never over the report while it runs). The result replaces
mini_project.ipynb only when it is full scale (a quick-mode render is refused) and, unless --allow-training, when
it trained nothing (every run read from results/, as a render on a machine without the lease's GPU must); papermill's
injected-parameters cell is removed and each cell's prints are merged into one block (no gaps in the PDF).
Your own runs: papermill mini_project.ipynb runs/mini_project.ipynb (README), which leaves the report alone.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules sit at the repository root, one level above this file

from cifar10_resnet.report import authors  # noqa: E402
from cifar10_resnet.store import atomic_write  # noqa: E402

REPORT = ROOT / "mini_project.ipynb"
RUNS = ROOT / "runs"


def printed(notebook: dict) -> list[str]:
    """Every line the notebook's cells printed (stdout and stderr)."""
    return [line for cell in notebook["cells"] for out in cell.get("outputs", []) if out["output_type"] == "stream"
            for line in "".join(out["text"]).splitlines()]


def is_quick(notebook: dict) -> bool:
    """Whether an executed notebook is a quick-mode smoke test: its setup cell prints the QUICK MODE banner."""
    return any(line.startswith("QUICK MODE") for line in printed(notebook))


def trained(notebook: dict) -> int:
    """Epoch lines of runs trained in this execution (a stored run's log is marked '| ' instead)."""
    return sum(re.match(r"epoch +\d+ ", line) is not None for line in printed(notebook))


def cleaned(notebook: dict) -> dict:
    """The executed notebook without papermill's injected-parameters cell, with each cell's streams merged and
    the team's names (AUTHORS) in its metadata, which the PDF sets under the title."""
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor
    import nbformat

    notebook = {**notebook, "cells": [c for c in notebook["cells"]
                                      if "injected-parameters" not in c.get("metadata", {}).get("tags", [])],
                "metadata": {**notebook.get("metadata", {}), "authors": [{"name": n} for n in authors()]}}
    node = nbformat.from_dict(notebook)
    node, _ = CoalesceStreamsPreprocessor().preprocess(node, {})
    return json.loads(nbformat.writes(node))


def refresh(executed: dict, report: Path = REPORT, allow_training: bool = False) -> None:
    """Write `executed` (a full-scale Run all) over `report`, cleaned; refuse, writing nothing, when it is a
    quick-mode run or, unless `allow_training`, when it trained anything."""
    if is_quick(executed):
        raise SystemExit(f"refused: this render is a quick-mode smoke test; {report.name} keeps its full-scale "
                         "render (run with a GPU or QUICK=False)")
    epochs = trained(executed)
    if epochs and not allow_training:
        raise SystemExit(f"refused: this render trained ({epochs} epoch lines), so its runs are not the stored "
                         "ones; pass --allow-training when that is intended (a GPU render)")
    text = json.dumps(cleaned(executed), indent=1, ensure_ascii=False) + "\n"
    atomic_write(report, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {report} ({len(executed['cells'])} cells, {epochs} epoch lines trained)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="the folder that holds cifar-10-batches-py/")
    p.add_argument("--allow-training", action="store_true", help="accept a render that trained runs")
    args = p.parse_args()
    RUNS.mkdir(exist_ok=True)
    target = RUNS / "render.ipynb"
    subprocess.run([sys.executable, "-m", "papermill", str(REPORT), str(target), "--cwd", str(ROOT),
                    "-p", "DATA_DIR", args.data_dir, "-p", "QUICK", "False"], check=True)
    refresh(json.loads(target.read_text()), REPORT, args.allow_training)


if __name__ == "__main__":
    main()
