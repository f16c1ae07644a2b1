"""Experiments: the names runs are stored under, and one run trained and tested once, or served from the store.

`run_experiment(name, config, build_model, data, engine, store)` is the runner the notebook calls for every run:
a complete stored result of exactly this configuration is served (its log replayed), an interrupted one resumed,
anything else trained by `training.fit` and scored as its `Protocol` says. The choices between runs, which read
only their validation scores, are in `choices.py`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .checks import writable_folder
from .choices import diverged_epoch
from .data import Batches, Data, Normalisation, eval_batches, training_batches
from .engine import Engine, device_name, set_seed
from .evaluation import evaluate_recipe
from .networks import count_parameters, fit_to_data, unwrap
from .recipe import Recipe
from .store import ResultsStore, config_hash, load_weights, save_weights
from .text import format_epoch, log_line, wrapped
from .training import FitResult, Progress, fit

# ---------------------------------------------------------------------------------------------------
# 1. The names of the runs in the store (read by the notebook, tools/update_readme.py, benchmarks/)
# ---------------------------------------------------------------------------------------------------

MODEL_PREFIX = "model "                 # the six experiments: "model 1" ... "model 6"
REFERENCE_RUN = "reference ResNet-18"   # ResNet-18 under Model 6's recipe, beside the six
# the final model's starting recipe, trained on the 45k split
TUNING = "final validation"
SWEEP_PREFIX = "final sweep - "         # a tuning run: SWEEP_PREFIX + the label of its change
BASE_LABEL = "starting recipe"          # how the sweep's table labels TUNING
ROUND3_PREFIX = "final round 3 - "      # round 3 of the sweep: ROUND3_PREFIX + label + " - seed k"
SEED_PREFIX = "final seed "             # the final model's seeds: "final seed 0", ...
# results/ subfolder: the first sweep, its chosen recipe and seeds, as run
FIRST_SWEEP = "first-sweep"


def seed_name(k: int) -> str:
    """The name of the final model's run with seed SEED + k."""
    return f"{SEED_PREFIX}{k}"


# ---------------------------------------------------------------------------------------------------
# 2. What a run prints
# ---------------------------------------------------------------------------------------------------


def result_line(name: str, summary: dict) -> str:
    """The line that closes an experiment's log: its test accuracy, or where it diverged."""
    if summary.get("diverged"):
        return f"{name}: DIVERGED at epoch {summary['diverged_epoch']} (a loss is not finite); not tested"
    if summary.get("test_acc") is None:
        return f"{name}: final validation accuracy {100 * summary['final_val_acc']:.2f}%"
    return (f"{name}: test accuracy {100 * summary['test_acc']:.2f}% after {summary['train_seconds']:.1f} s of "
            f"training ({summary['step_kind']})")


def replay_log(name: str, summary: dict, history, root: Path, log_every: int = 10) -> None:
    """Print a stored run's log lines as training printed them, marked '| ', under a line that says where they
    come from: a notebook executed across several sessions then reads like one run."""
    print(wrapped(f"{name}: read from {root}/ (trained on {summary['device']}, {summary['date'][:10]})"))
    rows = history.to_dict("records")
    for row in rows:
        if log_line(row["epoch"], len(rows), log_every) or row["epoch"] == summary.get("diverged_epoch"):
            print(f"| {format_epoch(row)}")
    print(wrapped(result_line(name, summary)))


# ---------------------------------------------------------------------------------------------------
# 3. One run
# ---------------------------------------------------------------------------------------------------

# training images whose 2x2 patches set a whitening stem's filters (`fit_to_data`)
WHITENING_IMAGES = 5000


@dataclass(frozen=True)
class Protocol:
    """How a run is trained and scored, the honest way: choices read validation, the test split is read once."""

    # "train": the 45k split, scored on validation after each epoch; "full": all 50k
    split: str = "train"
    # tested once at the end; False for a tuning run, scored on validation only
    test: bool = True
    # the final weights saved (fp16) and scored as saved, so a reload gives the number
    keep_weights: bool = False


def run_experiment(name: str, config: dict, build_model: Callable[[], nn.Module], data: Data, engine: Engine,
                   store: ResultsStore, protocol: Protocol = Protocol(), progress: Progress = Progress()) -> dict:
    """Train the configuration `config` as `protocol` says and return its summary (also stored under `name`);
    a complete stored result of exactly this configuration is served instead, an interrupted one resumed."""
    # a typo or a string where a number belongs stops here, before any epoch
    recipe = Recipe.of(config, name)
    stored = store.complete(name, config, build_model if protocol.keep_weights else None)
    if stored is not None:
        replay_log(name, *stored, store.root, progress.log_every)
        return stored[0]
    # a folder that cannot take the result stops it untrained
    writable_folder(store.root, "the results folder")
    checkpoint = store.checkpoint(f"{name}-{config_hash(config)}")
    model, train, val = set_up(recipe, build_model, data, engine, protocol.split)
    result = fit(model, train, val, recipe, engine, checkpoint, dataclasses.replace(progress, label=name))
    summary = summarise(name, recipe, model, result, engine, len(train.x))
    summary["normalisation"] = Normalisation(*data.stats).record()  # its weights then predict without CIFAR-10
    if not summary["diverged"]:  # a diverged run is not tested, and keeps no weights
        weights = store.path(name, ".pt") if protocol.keep_weights else None
        test = eval_batches(data.test, data, engine.device) if protocol.test else None
        summary |= scores(result, recipe, engine, val, test, weights)
    print(wrapped(result_line(name, summary)))
    store.save(name, summary, result.history)
    checkpoint.unlink(missing_ok=True)
    return summary


def set_up(recipe: Recipe, build_model: Callable[[], nn.Module], data: Data, engine: Engine,
           split: str) -> tuple[nn.Module, Batches, Batches | None]:
    """The seeded model, prepared for its data (`networks.fit_to_data`), its training batches of `split`, and
    the validation batches when it trains on the 45k split (None on all 50k)."""
    # the weights, then the data order and augmentation: a run can be repeated
    set_seed(recipe.seed)
    model = build_model()
    train = training_batches(getattr(data, split), recipe, data, engine.device)
    val = eval_batches(data.val, data, engine.device) if split == "train" else None
    fit_to_data(model, train.normalise(train.x[:WHITENING_IMAGES]))
    return model, train, val


def summarise(name: str, recipe: Recipe, model: nn.Module, result: FitResult, engine: Engine,
              train_images: int) -> dict:
    """What the store keeps of a trained run beside its history (`store.SUMMARY_FIELDS`), scores aside."""
    history, diverged = result.history, diverged_epoch(result.history)
    return {
        "name": name, "config": recipe.given, "config_hash": config_hash(recipe.given),
        "trainable_params": count_parameters(model), "epochs_completed": len(history),
        "train_images": train_images, "device": device_name(engine.device), "precision": engine.precision,
        "step_kind": result.step_kind, "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "train_seconds": round(result.seconds, 2),
        "final_train_acc": finite_or_none(history[-1]["train_acc"]), "diverged": diverged is not None,
        "diverged_epoch": diverged, **({"best_val_acc": None, "final_val_acc": None, "test_acc": None}
                                       if diverged is not None else {}),
    }


def scores(result: FitResult, recipe: Recipe, engine: Engine, val: Batches | None, test: Batches | None,
           weights: Path | None) -> dict:
    """A finished run's scores: on validation (the history's, and with test-time views when the recipe tests
    with them), on `test` once; with `weights`, of the weights as saved there (fp16)."""
    final, history, found = result.model, result.history, {}
    # evaluate the weights exactly as saved, so that a reload reproduces the number
    if weights is not None:
        save_weights(final, weights)
        load_weights(unwrap(final), weights)
    if val is not None:
        found |= {"best_val_acc": max(r["val_acc"] for r in history), "final_val_acc": history[-1]["val_acc"]}
        if recipe.tta:
            found["final_val_acc_tta"] = evaluate_recipe(final, val, engine, recipe)["acc"]
    if test is not None:
        tested = evaluate_recipe(final, test, engine, recipe)
        found |= {"test_acc": tested["acc"], "test_loss": tested["loss"], "tta": recipe.tta}
    return found


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a diverged run's non-finite numbers are stored as null."""
    return value if math.isfinite(value) else None
