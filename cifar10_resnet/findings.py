"""The findings that the notebook prints and the paper (`tools/paper.py`) typesets, each computed once, here, from
the stored runs: a result against a bar, how a regulariser changes the train-validation gap, what a choice on
validation loses on test, and the longer exploration run against the chosen recipe.
"""
from __future__ import annotations

import json
from pathlib import Path

from .choices import SeedSpread, validation_score, verdict
from .report import difference_text

LONGER = ("exploration-2", "second choice, 100 epochs")  # the exploration run (folder, name) that trained longer


def bar_side(accuracy: float, bar: float, images: int) -> str:
    """'above', 'below' or 'within noise of' a `bar`: an accuracy on `images` images against a fixed level (both
    fractions), judged by `choices.verdict`."""
    return {"higher": "above", "lower": "below"}.get(verdict(accuracy, bar, images), "within noise of")


def gap_changes(dynamics) -> dict[str, float]:
    """How each regulariser that the six experiments isolate changes the final-epoch gap between training and
    validation accuracy (points; from `report.training_dynamics`): L2 is Model 5 minus 4, the schedule 6 minus 5."""
    gaps = dynamics["gap (points)"]
    return {"L2": gaps["model 5"] - gaps["model 4"], "schedule": gaps["model 6"] - gaps["model 5"]}


def winners_curse(chosen: dict, spread: SeedSpread) -> tuple[float, float]:
    """The chosen tuning run's validation score (%, `choices.validation_score`) and its seeds' mean test accuracy
    minus that score (points): the largest of several noisy scores overstates its run."""
    picked = 100 * validation_score(chosen).acc
    return picked, spread.mean - picked


def longer_run(results_dir: str | Path, chosen: dict, images: int) -> tuple[dict, float, str] | None:
    """The LONGER exploration run's summary, its validation score (%) and its difference from the `chosen` tuning
    run's (`report.difference_text` on `images` validation images), or None where it is not stored."""
    path = Path(results_dir) / LONGER[0] / "summary.json"
    run = json.loads(path.read_text()).get(LONGER[1]) if path.exists() else None
    if run is None:
        return None
    a, b = validation_score(run).acc, validation_score(chosen).acc
    return run, 100 * a, difference_text(a, b, images)
