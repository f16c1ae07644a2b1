"""Training one model: `fit(model, train, val, recipe, engine)` is the loop, on one screen.

It builds the optimizer (`engine`), the schedule and its parameter groups (below), the weight averages
(`averages`) and the step (`step`: eager, or a checked CUDA graph, chosen once before the first epoch), resumes from
a checkpoint (`checkpoints`), and runs the epochs, scored on validation after each. Nothing runs at import.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn as nn

from .averages import Lookahead, ModelEMA
from .checkpoints import joined_kind, resume, write_checkpoint
from .choices import is_diverged
from .data import Batches
from .engine import Engine
from .evaluation import evaluate
from .networks import parameter_roles
from .recipe import Recipe
from .step import make_step
from .text import count_text, format_duration, format_epoch, log_line, wrapped


# ---------------------------------------------------------------------------------------------------
# 1. The schedule and the parameter groups it drives
# ---------------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, recipe: Recipe, steps_per_epoch: int) -> list[dict]:
    """The optimizer's parameter groups under `recipe`: one, unless it sets airbench's BatchNorm options or the
    network names parameters to treat apart (`networks.parameter_roles`: a whitening stem's filters, its bias)."""
    roles, scale = parameter_roles(model), recipe.bias_lr_scale
    if scale == 1 and not recipe.freeze_bn_scale and not roles:
        # every run before these options: one group, as it was
        return [{"params": list(model.parameters())}]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    scales, biases = [m.weight for m in norms], [m.bias for m in norms]
    frozen = roles.get("frozen", []) + (scales if recipe.freeze_bn_scale else [])
    stem_bias = roles.get("whitening bias", [])
    special = {id(p) for p in frozen + biases + stem_bias}
    bias_group = {"lr": recipe.lr * scale, "weight_decay": recipe.weight_decay / scale}
    groups = [  # the weights first: fit logs group 0's learning rate
        {"name": "weights", "params": [p for p in model.parameters() if id(p) not in special]},
        {"name": "BatchNorm biases", "params": biases, **bias_group},
        # lr 0, not requires_grad: a CUDA graph stays valid
        {"name": "frozen", "params": frozen, "lr": 0.0},
        # trained for its first epochs only: a learning rate of 0 afterwards (`make_scheduler`)
        {"name": "whitening bias", "params": stem_bias, "frozen_after": recipe.whiten_bias_epochs * steps_per_epoch},
    ]
    return [group for group in groups if group["params"]]


def make_scheduler(optimizer, kind: str, epochs: int, steps_per_epoch: int, warmup: float = 0.0,
                   start: float = 0.1, end: float = 0.0):
    """Per-step learning-rate multiplier: 'constant' 1; 'cosine' from 1 to 0 over all steps; 'onecycle' linear
    from `start` to 1 over the first `warmup` fraction of the steps, then to `end`. 0 after a group's "frozen_after"."""
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if kind == "onecycle":
            rise = max(1, int(warmup * total))
            if step < rise:
                return start + (1 - start) * step / rise
            return max(end, end + (1 - end) * (total - step) / max(1, total - rise))
        raise ValueError(f"unknown schedule {kind!r}")

    def until(last: float):
        return lambda step: factor(step) if step < last else 0.0

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [until(group.get("frozen_after", math.inf)) for group in optimizer.param_groups])


# ---------------------------------------------------------------------------------------------------
# 2. fit: the loop
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What a run prints and when it saves: `label` heads its log (None: silent), an epoch line every
    `log_every` epochs (`text.log_line`), a checkpoint at most every `checkpoint_seconds`, then `on_epoch_end`."""

    label: str | None = "training"
    log_every: int = 10
    # ~40 MB after each of a GPU run's 600 one-second epochs would cost ten epochs; after 20 s it is free
    checkpoint_seconds: float = 20.0
    on_epoch_end: Callable[[int], None] | None = None

    def start(self, epochs: int, images: int, engine: Engine, kind: str) -> None:
        """The run's first line: what this session trains (nothing when `epochs` is 0), how and where."""
        if self.label is not None and epochs:
            print(wrapped(f"{self.label}: {count_text(epochs, 'epoch')} x {images:,} images, {engine.precision}, "
                          f"{kind}"))

    def epoch(self, row: dict, left: range, seconds: float) -> None:
        """Log the epoch `row` (of `left`, this session's epochs, which took `seconds`) when its turn comes, and
        after the first of this session the time left (its pace includes the validation)."""
        if log_line(row["epoch"], left.stop - 1, self.log_every):
            print(format_epoch(row))
        if self.label is not None and row["epoch"] == left.start < left.stop - 1:
            more = left.stop - 1 - row["epoch"]
            print(f"about {format_duration(more * seconds)} left ({count_text(more, 'more epoch')})")


class FitResult(NamedTuple):
    """What `fit` returns: the model to evaluate (the weight average when there is one), the per-epoch history,
    the training seconds, and the step kind ("cuda-graph" or "eager (why)"; both, in order, after a resume)."""

    model: nn.Module
    history: list[dict]
    seconds: float
    step_kind: str


def fit(model: nn.Module, train: Batches, val: Batches | None, recipe: Recipe, engine: Engine,
        checkpoint: Path | None = None, progress: Progress = Progress()) -> FitResult:
    """Train `model` for `recipe.epochs` epochs on `train`, scored on `val` after each (when given), resuming from
    `checkpoint` and writing it as `progress` says; a non-finite loss ends the run at that epoch."""
    module = engine.prepare(model)  # called (compiled when asked); `model` holds the weights
    optimizer = engine.optimizer(parameter_groups(model, recipe, len(train)), recipe.lr, recipe.momentum,
                                 recipe.weight_decay, recipe.nesterov)
    schedule = make_scheduler(optimizer, recipe.schedule, recipe.epochs, len(train), recipe.warmup,
                              recipe.lr_start, recipe.lr_end)
    ema = ModelEMA(model, recipe.ema_decay, buffers=recipe.ema_buffers) if recipe.ema_decay else None
    lookahead = Lookahead(model, recipe.lookahead, recipe.epochs * len(train)) if recipe.lookahead else None
    parts = {"model": model, "optimizer": optimizer, "scheduler": schedule, "scaler": engine.scaler(),
             "batches": train, "ema": ema, "lookahead": lookahead}
    history, seconds, resumed_kind = resume(checkpoint, parts, engine)
    left = range(len(history) + 1, recipe.epochs + 1)  # this session's epochs
    step = make_step(module, optimizer, parts["scaler"], recipe, engine, train if left else None)
    progress.start(len(left), len(train.x), engine, step.kind)
    step_kind, saved_at = joined_kind(resumed_kind, step.kind, bool(left)), time.perf_counter()
    for epoch in left:
        start = time.perf_counter()
        module.train()
        step.sums.reset()
        for images, labels in train:
            step(images, labels)
            schedule.step()  # fills the lr tensors in place: a CUDA graph reads the new values
            for average in (lookahead, ema):  # outside the graph: copies in place
                if average is not None:
                    average.update(model)
        engine.synchronize()  # the epoch's time includes the kernels it queued
        seconds += time.perf_counter() - start
        row = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"]), **step.sums.read(), "seconds": seconds}
        if val is not None:
            scores = evaluate(ema.module if ema else module, val, engine)
            row.update(val_loss=scores["loss"], val_acc=scores["acc"])
        history.append(row)
        if is_diverged(row):
            print(f"{format_epoch(row)}\nDIVERGED: a loss is not finite; the run stops here")
            break
        progress.epoch(row, left, time.perf_counter() - start)
        if checkpoint is not None and time.perf_counter() - saved_at >= progress.checkpoint_seconds:
            write_checkpoint(checkpoint, parts, history, seconds, step_kind, engine.precision)
            saved_at = time.perf_counter()
        if progress.on_epoch_end is not None:
            progress.on_epoch_end(epoch)
    return FitResult(ema.module if ema else module, history, seconds, step_kind)
